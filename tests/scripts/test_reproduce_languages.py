"""scripts/reproduce_languages.py end to end on a tiny model: every table, the plot and the compare report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from jaxprune import calibration
from jaxprune.calibration import corpora
from tests.evals.conftest import make_tiny_with_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import reproduce_languages  # noqa: E402


def _missing_corpora() -> list[str]:
  missing = []
  for name in reproduce_languages.CALIB:
    try:
      calibration.resolve(name)
    except corpora.NotReady:
      missing.append(name)
  return missing


def _reproduce(model: Path, out: Path, *extra: str) -> None:
  reproduce_languages.main(["--model", str(model), "--out", str(out), "--seeds", "0", "1", "--nsamples", "2",
                            "--seqlen", "32", "--eval-windows", "2", "--limit", "1", "--max-new-tokens", "4", *extra])


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
  missing = _missing_corpora()
  if missing:
    pytest.skip(f"corpora not fetched: `jaxprune corpora fetch {' '.join(missing)}`")
  root = tmp_path_factory.mktemp("languages")
  folder, _ = make_tiny_with_tokenizer(root / "model", "llama", max_position_embeddings=4096)
  _reproduce(folder, root / "out")
  return folder, root / "out"


def test_every_table_is_filled(reproduction):
  _, out = reproduction
  report = json.loads((out / "languages.json").read_text())
  results = report["results"]
  domains = set(reproduce_languages.EVAL)
  assert set(results["dense"]["ppl"]) == domains
  assert set(results["wanda"]) == set(reproduce_languages.CALIB)
  for calibration, row in results["wanda"].items():
    assert set(row["ppl"]) == domains
    assert all(len(values) == 2 and all(v > 1 for v in values) for values in row["ppl"].values()), calibration
  assert len(results["baselines"]) == 2 * len(reproduce_languages.CALIB) + 1  # 2:4 and SparseGPT per domain, magnitude
  assert all(set(row["ppl"]) == domains for row in results["baselines"].values())
  for model, row in results["humaneval"].items():
    assert set(row) == set(reproduce_languages.HUMANEVAL), model
    assert all(cell["problems"] == 1 and 0 <= cell["pass@1"] <= 1 for cell in row.values())
  distances = report["distances"]
  assert distances["within_pairs"] == len(reproduce_languages.CALIB)  # one pair of seeds per domain
  assert distances["across_pairs"] == 2 * 15  # 6 domains choose 2, per seed
  assert 0 < distances["within_mean"] < 1 and 0 < distances["across_mean"] < 1
  complete = report["complete"]
  assert complete["all"] and complete["baseline_cells"] == complete["baseline_cells_wanted"] == 5 * (2 * 6 + 1)
  assert "**Partial**" not in (out / "languages.md").read_text()


def test_compute_time_sums_every_cached_unit(reproduction):
  _, out = reproduction
  compute = json.loads((out / "languages.json").read_text())["compute"]
  calib = len(reproduce_languages.CALIB)
  assert compute["prunes"] == 2 * calib + 2 * calib + 1  # Wanda x 2 seeds, 2:4 and SparseGPT, magnitude
  assert compute["code_cells"] == len(reproduce_languages.HUMANEVAL) * (1 + calib)
  assert compute["ppl_cells_timed"] == len(reproduce_languages.EVAL) * (1 + compute["prunes"])
  assert compute["untimed_cells"] == 0
  assert compute["total_s"] == pytest.approx(compute["prune_s"] + compute["code_s"] + compute["ppl_s"])
  assert all(compute[k] > 0 for k in ("prune_s", "code_s", "ppl_s"))
  assert f"{compute['total_s'] / 3600:.1f} h: {compute['prunes']} prunes" in (out / "languages.md").read_text()


def test_markdown_marks_the_diagonal_and_relative_increase(reproduction):
  _, out = reproduction
  text = (out / "languages.md").read_text()
  for column, domain in enumerate(reproduce_languages.EVAL):
    rows = [line for line in text.splitlines() if line.startswith(f"| {domain} |")]
    assert len(rows) == 2, domain  # perplexity and relative-increase tables
    for row in rows:
      assert row.split("|")[2 + column].strip().startswith("**"), row
  assert "Relative perplexity increase over dense" in text and "%" in text
  assert "pruning 25 sub-models and reusing 0" in text
  assert (out / "layers_within_vs_across.png").stat().st_size > 0
  assert (out / "compare" / "index.html").exists()


def test_rerun_reuses_every_run(reproduction):
  model, out = reproduction
  before = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/run.json")}
  _reproduce(model, out)
  assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/run.json")} == before
  # every cell and the distances are cached: nothing is pruned or even loaded again
  assert "pruning 0 sub-models and reusing 0 already in" in (out / "languages.md").read_text()
  assert "(25 more not needed: their results were cached)" in (out / "languages.md").read_text()


def _fresh_checkout(out: Path, clone: Path) -> Path:
  """A copy of ``out`` as git keeps it: each run's run.json without its masks."""
  import shutil

  shutil.copytree(out, clone)
  for run in (clone / "runs").iterdir():
    for item in run.iterdir():
      if item.name != "run.json":
        shutil.rmtree(item) if item.is_dir() else item.unlink()
  return clone


def test_fresh_checkout_with_committed_results_prunes_nothing(reproduction, tmp_path):
  """What git keeps (run.json, evaluations, distances) is enough to remake the tables."""
  model, out = reproduction
  clone = _fresh_checkout(out, tmp_path / "clone")
  _reproduce(model, clone)
  assert "pruning 0 sub-models and reusing 0" in (clone / "languages.md").read_text()
  assert json.loads((clone / "languages.json").read_text())["results"] == json.loads(
      (out / "languages.json").read_text())["results"]


def test_distances_interrupted_on_another_machine_keep_their_finished_pairs(reproduction, tmp_path):
  """Pairs are cached one by one: a new checkout prunes only the runs of the missing pairs."""
  model, out = reproduction
  clone = _fresh_checkout(out, tmp_path / "clone")
  state = json.loads((clone / "distances.json").read_text())  # as if the session ended before these pairs
  dropped = [p for p in state["pairs"] if "wanda50-python-s1" in p.split(" | ")]
  assert len(dropped) == 1 + len(reproduce_languages.CALIB) - 1  # python across seeds; seed 1 across domains
  for p in dropped:
    del state["pairs"][p]
  (clone / "distances.json").write_text(json.dumps(state))
  _reproduce(model, clone, "--cached-only")  # the tables show the pairs made so far
  partial = json.loads((clone / "languages.json").read_text())["distances"]
  total = len(state["pairs"]) + len(dropped)
  assert partial["partial"] == f"{total - len(dropped)} of {total}"
  assert partial["across_pairs"] + partial["within_pairs"] == total - len(dropped)
  assert f"**Partial**: {total - len(dropped)} of {total} pairs" in (clone / "languages.md").read_text()
  _reproduce(model, clone)
  # python-s1, python-s0 (its seed partner) and the other domains' seed-1 runs; no seed-0 run of another domain
  assert f"pruning {len(reproduce_languages.CALIB) + 1} sub-models" in (clone / "languages.md").read_text()
  assert not (clone / "runs" / "wanda50-java-s0" / "masks").exists()
  again, first = (json.loads((d / "languages.json").read_text())["distances"] for d in (clone, out))
  assert again["within_pairs"] == first["within_pairs"] and again["across_pairs"] == first["across_pairs"]
  assert again["pairs"] == pytest.approx(first["pairs"], abs=1e-12)
  for group in ("within", "across"):
    assert again["per_layer"][group] == pytest.approx(first["per_layer"][group], abs=1e-12)


def test_needed_pairs_are_seeds_within_a_domain_and_domains_within_a_seed():
  from _distances import needed_pairs

  names = {d: [f"{d}-s{k}" for k in range(3)] for d in ("python", "java", "cpp", "javascript", "english")}
  pairs = needed_pairs(names)
  assert sum(g == "within" for *_, g in pairs) == 5 * 3  # 3 pairs of seeds per domain
  assert sum(g == "across" for *_, g in pairs) == 3 * 10  # 5 choose 2 domains per seed
  assert ("python-s0", "python-s2", "within") in pairs and ("java-s1", "cpp-s1", "across") in pairs
  assert not any(a.rsplit("-s")[1] != b.rsplit("-s")[1] for a, b, g in pairs if g == "across")


def test_code_cells_keep_their_reports_and_solved_problems(reproduction):
  _, out = reproduction
  summary = json.loads((out / "evals" / "wanda50-java-s0.json").read_text())
  for task in reproduce_languages.HUMANEVAL:
    report = json.loads((out / "evals" / "wanda50-java-s0" / f"{task}.json").read_text())
    assert len(report["per_problem"]) == summary[task]["problems"] == 1
    assert summary[task]["solved"] == sorted(k for k, v in report["per_problem"].items() if v["correct"])
  report = json.loads((out / "languages.json").read_text())
  assert set(report["results"]["paired"]) == set(reproduce_languages.HUMANEVAL)


def test_table4_preset_sets_the_measurement_and_explicit_flags_win():
  from _reproduce import parse_args

  extra = ((("--calib",), dict(nargs="+", default=list(reproduce_languages.CALIB))),
           (("--table4",), dict(action="store_true")))
  args = parse_args("t", ["--table4", "--limit", "5"], *extra, defaults=reproduce_languages.TABLE4)
  assert args.calib == ["python", "java", "cpp", "javascript", "english"] and args.chat
  assert (args.nsamples, args.seqlen, args.max_new_tokens, args.limit) == (128, 512, 512, 5)


def test_humaneval_tables_mark_the_diagonal_and_the_best(reproduction):
  exp = type("E", (), {"chat": True, "limit": 3, "max_new_tokens": 8})()
  cell = lambda solved: {"pass@1": len(solved) / 3, "problems": 3, "solved": solved}
  he = {"dense": {t: cell(["a", "b"]) for t in reproduce_languages.HUMANEVAL},
        "wanda50-python": {t: cell(["a"]) for t in reproduce_languages.HUMANEVAL},
        "wanda50-java": {t: cell(["a", "c"]) for t in reproduce_languages.HUMANEVAL}}
  results = {"humaneval": he, "baselines": {}, "paired": {"humaneval-java": {
      "wanda50-python": reproduce_languages.paired_test(he["wanda50-java"]["humaneval-java"],
                                                        he["wanda50-python"]["humaneval-java"])}}}
  lines = reproduce_languages.humaneval_tables(exp, results)
  java_row = next(line for line in lines if line.startswith("| wanda50-java |"))
  assert java_row.split("|")[3].strip() == "**66.7 (2/3)** ▲"  # humaneval-java: diagonal, best
  assert any(line.startswith("| humaneval-java | wanda50-python | +33.3 | 1 | 0 | 1.000 |") for line in lines)
  assert any("-33.3" in line for line in lines if line.startswith("| wanda50-python |"))


def test_baselines_are_tested_against_the_wanda_sub_model_of_their_calibration():
  exp = type("E", (), {"chat": True, "limit": 3, "max_new_tokens": 8})()
  cell = lambda solved: {"pass@1": len(solved) / 3, "problems": 3, "solved": solved}
  he = {"dense": {"humaneval": cell(["a", "b", "c"])}, "wanda50-python": {"humaneval": cell(["a"])}}
  sparsegpt = {"humaneval": cell(["a", "b", "c"])}
  versus = {"humaneval": reproduce_languages.paired_test(sparsegpt["humaneval"], he["wanda50-python"]["humaneval"])}
  results = {"humaneval": he, "baselines": {"sparsegpt 50% · python": {
      "ppl": {}, "humaneval": sparsegpt, "vs_wanda": versus}}}
  lines = reproduce_languages.humaneval_tables(exp, results)
  assert "| sparsegpt 50% · python | humaneval | +66.7 | 2 | 0 | 0.500 |" in lines


def test_the_run_tests_each_baseline_against_its_wanda_sub_model(reproduction, tmp_path):
  import shutil

  folder, out = reproduction
  copy = tmp_path / "out"
  shutil.copytree(out, copy)  # every sub-model cached: only the baseline's HumanEval cell is new
  reproduce_languages.main(["--model", str(folder), "--out", str(copy), "--seeds", "0", "1", "--nsamples", "2",
                            "--seqlen", "32", "--eval-windows", "2", "--limit", "1", "--max-new-tokens", "4",
                            "--calib", "python", "java", "--baselines", "sparsegpt", "--baseline-humaneval", "own"])
  baselines = json.loads((copy / "languages.json").read_text())["results"]["baselines"]
  for calib, columns in (("python", {"humaneval"}), ("java", {"humaneval", "humaneval-java"})):
    row = baselines[f"sparsegpt 50% · {calib}"]
    assert set(row["humaneval"]) == set(row["vs_wanda"]) == columns
    assert all(0 <= r["p"] <= 1 for r in row["vs_wanda"].values())
  assert "Each baseline against the Wanda 50% sub-model of the same calibration" in (copy / "languages.md").read_text()


def test_a_full_report_with_the_same_settings_is_reused():
  from _reproduce import _report_fits

  exp = type("E", (), {"chat": True, "limit": 164, "max_new_tokens": 512})()
  report = {"sampling": {"num_samples": 1, "temperature": 0.0, "max_new_tokens": 512},
            "config": {"limit": None, "chat": True}, "num_problems": 156, "excluded": {str(i): "" for i in range(8)}}
  assert _report_fits(exp, report, "humaneval-java")  # every problem of the task, as limit 164 asks
  assert not _report_fits(exp, {**report, "config": {"limit": None, "chat": False}}, "humaneval-java")
  assert not _report_fits(exp, {**report, "sampling": {**report["sampling"], "max_new_tokens": 256}}, "humaneval-java")
  assert not _report_fits(type("E", (), {"chat": True, "limit": 20, "max_new_tokens": 512})(), report, "humaneval-java")
  # a greedy report is not a sampled cell, nor the reverse
  assert not _report_fits(exp, report, "humaneval-java@10")
  sampled = {**report, "sampling": {"num_samples": 10, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 512}}
  assert _report_fits(exp, sampled, "humaneval-java@10")
  assert not _report_fits(exp, sampled, "humaneval-java@20") and not _report_fits(exp, sampled, "humaneval-java")


def test_sampled_task_names():
  from _reproduce import sampled

  assert sampled("humaneval-java@10") == ("humaneval-java", 10)
  assert sampled("humaneval") == ("humaneval", 0)


def test_sampled_cells_and_cached_only_tables(reproduction, tmp_path):
  """--sampled N adds pass@1/pass@10 cells of dense and the diagonal; --cached-only writes the tables of
  what is cached (a partial run marks the missing cells) without pruning or evaluating."""
  import shutil

  folder, out = reproduction
  copy = tmp_path / "out"
  shutil.copytree(out, copy)
  args = ["--model", str(folder), "--out", str(copy), "--seeds", "0", "1", "--nsamples", "2", "--seqlen", "32",
          "--eval-windows", "2", "--limit", "1", "--max-new-tokens", "4"]
  reproduce_languages.main([*args, "--calib", "python", "java", "--baselines", "--sampled", "2"])
  report = json.loads((copy / "languages.json").read_text())
  assert set(report["results"]["sampled"]) == {"dense", "wanda50-python", "wanda50-java"}
  cell = report["results"]["sampled"]["wanda50-java"]["humaneval-java@2"]
  assert set(cell) >= {"pass@1", "problems", "solved"} and "humaneval@2" not in report["results"]["sampled"]["wanda50-java"]
  report_file = json.loads((copy / "evals" / "wanda50-java-s0" / "humaneval-java@2.json").read_text())
  assert report_file["sampling"]["num_samples"] == 2 and report_file["sampling"]["temperature"] == 0.8
  # a run naming fewer domains keeps the other domains' cached mask distances
  assert json.loads((copy / "distances.json").read_text())["pairs"] == json.loads(
      (out / "distances.json").read_text())["pairs"]
  # cached only, with a seed nothing was made for: its cells are missing, nothing is pruned or evaluated
  before = sorted(p.name for p in (copy / "runs").iterdir())
  partial = [*args[:7], "2", *args[7:]]  # --seeds 0 1 2
  reproduce_languages.main([*partial, "--calib", "python", "java", "--baselines", "sparsegpt", "--baseline-humaneval",
                            "own", "--cached-only"])
  assert sorted(p.name for p in (copy / "runs").iterdir()) == before
  markdown = (copy / "languages.md").read_text()
  # the SparseGPT sub-models' perplexities are cached, their HumanEval cells (python; java and python) are not
  assert ("**Partial**: 12 of 12 HumanEval cells and 25 of 35 perplexity cells (dense and Wanda), 10 of 13 baseline"
          " cells are in") in markdown, markdown
  # the distances of the seeds made so far: python and java, each within (seeds 0-1) and across (seeds 0, 1)
  assert "**Partial**: 4 of 9 pairs are made" in markdown
  assert json.loads((copy / "languages.json").read_text())["complete"]["all"] is False


def test_prune_first_prunes_every_first_seed_sub_model_before_any_cell(reproduction, tmp_path, monkeypatch):
  import shutil

  folder, out = reproduction
  copy = tmp_path / "out"
  shutil.copytree(out, copy)
  pruned_when_evaluated = []
  original = reproduce_languages.evaluate_cached

  def spy(exp, run, name, tasks, **kwargs):
    if name.startswith("wanda50-"):
      pruned_when_evaluated.append(sorted(p.name for p in (copy / "runs").iterdir() if p.name.endswith("-s7")))
    return original(exp, run, name, tasks, **kwargs)

  monkeypatch.setattr(reproduce_languages, "evaluate_cached", spy)
  reproduce_languages.main(["--model", str(folder), "--out", str(copy), "--seeds", "7", "--nsamples", "2",
                            "--seqlen", "32", "--eval-windows", "2", "--limit", "1", "--max-new-tokens", "4",
                            "--calib", "python", "java", "--baselines", "--prune-first"])
  assert pruned_when_evaluated[0] == ["wanda50-java-s7", "wanda50-python-s7"]
