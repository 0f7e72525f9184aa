"""`jaxprune eval`: the task registry, masks from a prune run, the JSON report, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxprune import converters
from jaxprune.evals import perplexity, tasks
from jaxprune import cli, pruning, runs, store
from jaxprune.pruning import masks as masks_lib
from tests.evals.conftest import make_tiny_with_tokenizer

TEXT = "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n" * 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """A tiny model, a text file to evaluate and a magnitude prune run of the model."""
  root = tmp_path_factory.mktemp("eval")
  folder, loaded = make_tiny_with_tokenizer(root / "model", max_position_embeddings=1024)  # HumanEval prompts
  (root / "eval.txt").write_text(TEXT)
  runs.prune_run(loaded, None, pruning.PruneConfig(method="magnitude", sparsity=0.5), runs.RunConfig(out=root / "run"))
  return root, folder, loaded


def run_cli(*argv: str) -> int:
  return cli.main(["eval", *argv])


def test_cli_writes_metrics_config_versions_and_timings(setup, tmp_path, capsys):
  root, folder, loaded = setup
  out = tmp_path / "results.json"
  code = run_cli("--model", str(folder), "--tasks", f"ppl:{root / 'eval.txt'}", "--seqlen", "32",
                 "--max-windows", "5", "--batch-size", "2", "--out", str(out))
  assert code == 0
  report = json.loads(out.read_text())
  task = report["tasks"][f"ppl:{root / 'eval.txt'}"]
  windows, _ = perplexity.windows_for(str(root / "eval.txt"), loaded.tokenizer, 32, 5)
  assert task["metrics"]["ppl"] == pytest.approx(perplexity.perplexity(loaded.model, windows)["ppl"], rel=1e-6)
  assert task["windows"] == 5 and task["text"] == "all text"
  assert report["config"]["seqlen"] == 32 and report["config"]["tasks"] == [f"ppl:{root / 'eval.txt'}"]
  assert {"jax", "penzai", "transformers", "python"} <= set(report["versions"])
  assert {"load_s", "total_s"} <= set(report["timings"])
  assert report["model"]["hash"] == loaded.content_hash and report["masks"] is None
  assert "ppl" in capsys.readouterr().out
  assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left behind


def test_masks_of_a_run_are_applied(setup, tmp_path):
  root, folder, loaded = setup
  config = tasks.EvalConfig(model=str(folder), tasks=(f"ppl:{root / 'eval.txt'}",), masks=str(root / "run"),
                            seqlen=32, max_windows=5)
  report = tasks.evaluate(config)
  masks, _, _ = store.load_run(root / "run")
  windows, _ = perplexity.windows_for(str(root / "eval.txt"), loaded.tokenizer, 32, 5)
  expected = perplexity.perplexity(masks_lib.apply(loaded.model, masks), windows)["ppl"]
  dense = perplexity.perplexity(loaded.model, windows)["ppl"]
  got = report["tasks"][f"ppl:{root / 'eval.txt'}"]["metrics"]["ppl"]
  assert got == pytest.approx(expected, rel=1e-6) and got != pytest.approx(dense, rel=1e-3)
  assert report["masks"]["sparsity"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("flags", [[], ["--no-samples"]], ids=["samples", "no-samples"])
def test_humaneval_runs_end_to_end_on_a_tiny_model(setup, tmp_path, capsys, flags):
  _, folder, _ = setup
  out = tmp_path / "he.json"
  assert run_cli("--model", str(folder), "--tasks", "humaneval", "--limit", "2", "--greedy",
                 "--max-new-tokens", "8", "--gen-batch-size", "2", "--out", str(out), *flags) == 0
  report = json.loads(out.read_text())
  result = report["tasks"]["humaneval"]
  assert result["metrics"] == {"pass@1": 0.0}  # random weights write no working code
  assert list(result["per_problem"]) == ["HumanEval/0", "HumanEval/1"]
  assert report["config"]["samples"] == (not flags)
  *_, summary, where = capsys.readouterr().out.splitlines()
  assert summary.startswith("humaneval: 0/2 passed; ") and "HumanEval/0" in summary and "HumanEval/1" in summary
  if flags:
    assert where == "completions not kept (--no-samples)"
    assert all("samples" not in e for e in result["per_problem"].values())
    return
  assert where == f"completions, statuses and output tails: {out}, at tasks.<task>.per_problem.<task id>.samples"
  for entry in result["per_problem"].values():
    (sample,) = entry["samples"]
    assert set(sample) == {"completion", "status", "output"} and sample["status"] != "passed"
    assert isinstance(sample["completion"], str) and 0 < len(sample["output"]) <= 1000


def one_line_error(capsys) -> str:
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "Traceback" not in err
  return err


@pytest.mark.parametrize("extra, message", [
    (["--tasks", "nosuchtask"], "unknown task 'nosuchtask'"),
    (["--tasks", ""], "no tasks given"),
    (["--tasks", "ppl:python", "--data", "hellaswag=x.jsonl"], "not in --tasks"),
    (["--tasks", "ppl:python", "--data", "nonsense"], "write TASK=PATH"),
    (["--tasks", "ppl:python", "--seqlen", "1"], "seqlen=1"),
    (["--tasks", "ppl:python", "--out", "/no/such/dir/r.json"], "folder does not exist"),
    (["--tasks", "ppl:python", "--masks", "/no/such/run"], "not a finished jaxprune run"),
    (["--tasks", "ppl:/no/such/file.txt", "--seqlen", "16"], "no such file or folder"),
    (["--tasks", "humaneval", "--data", "humaneval=/no/such.jsonl"], "humaneval: no such file"),
], ids=["unknown-task", "no-tasks", "data-for-other-task", "bad-data-flag", "seqlen", "out-folder",
        "masks-missing", "ppl-missing-file", "humaneval-missing-file"])
def test_bad_input_gives_one_line(setup, capsys, extra, message):
  _, folder, _ = setup
  assert run_cli("--model", str(folder), *extra) == 2
  assert message in one_line_error(capsys)


def test_masks_of_another_model_are_refused(setup, tmp_path, capsys):
  root, _, _ = setup
  other, _ = make_tiny_with_tokenizer(tmp_path / "other", seed=1)
  capsys.readouterr()
  assert run_cli("--model", str(other), "--tasks", f"ppl:{root / 'eval.txt'}", "--seqlen", "32",
                 "--masks", str(root / "run")) == 2
  assert "were made for model" in one_line_error(capsys)


def test_seqlen_beyond_the_context_is_refused(setup, capsys):
  root, folder, _ = setup
  assert run_cli("--model", str(folder), "--tasks", f"ppl:{root / 'eval.txt'}", "--seqlen", "1025") == 2
  assert "exceeds the model's context of 1024" in one_line_error(capsys)


def test_registry_resolves_exact_names_and_prefixes():
  assert tasks.task_for("ppl:python") is tasks.task_for("ppl:/any/file.txt")
  assert tasks.task_for("humaneval-java") is tasks.task_for("humaneval")
  for bad in ("ppl:", "ppl", "HumanEval"):
    with pytest.raises(Exception, match="unknown task"):
      tasks.task_for(bad)


def test_table_lists_every_metric():
  report = {"tasks": {"ppl:python": {"metrics": {"ppl": 16.5}, "seconds": 3.0},
                      "humaneval": {"metrics": {"pass@1": 0.1, "pass@10": 0.2}, "seconds": 9.0}}}
  lines = tasks.table(report).splitlines()
  assert len(lines) == 4 and "16.5000" in lines[1] and "pass@10" in lines[3]


def failures(statuses: dict[str, list[str]], **config) -> dict:
  """A report of one code task whose problems' samples had ``statuses``."""
  per_problem = {t: {"num_samples": len(v), "correct": v.count("passed"), "statuses": {s: v.count(s) for s in v}}
                 for t, v in statuses.items()}
  return {"tasks": {"ppl:python": {"metrics": {"ppl": 3.0}}, "humaneval-cpp": {"per_problem": per_problem}},
          "config": {"samples": True, "out": None, **config}}


def test_failure_lines_name_the_problems_of_each_status():
  statuses = {f"HumanEval/{i}": ["failed"] for i in range(7)}
  statuses |= {"HumanEval/7": ["passed"], "HumanEval/8": ["compile_error"], "HumanEval/9": ["timeout"],
               "HumanEval/10": ["error"], "HumanEval/11": ["passed"]}
  assert tasks.failure_lines(failures(statuses, out="r.json")) == [
      "humaneval-cpp: 2/12 passed; failed 7 (HumanEval/0, HumanEval/1, HumanEval/2, HumanEval/3, HumanEval/4, …),"
      " compile error 1 (HumanEval/8), timeout 1 (HumanEval/9), error 1 (HumanEval/10)",
      "completions, statuses and output tails: r.json, at tasks.<task>.per_problem.<task id>.samples",
  ]
  sampled = {"A/0": ["passed", "timeout", "passed"], "A/1": ["passed", "passed", "passed"]}
  assert tasks.failure_lines(failures(sampled)) == [
      "humaneval-cpp: 5/6 samples passed; timeout 1 (A/0)",
      "completions not written: pass --out FILE.json to keep them",
  ]
  assert tasks.failure_lines(failures({"A/0": ["passed"]}, samples=False)) == [
      "humaneval-cpp: 1/1 passed", "completions not kept (--no-samples)"]
  assert tasks.failure_lines({"tasks": {"ppl:python": {"metrics": {"ppl": 3.0}}}, "config": {}}) == []


@pytest.mark.parametrize("task", ["hellaswag", "gsm8k"], ids=["hellaswag", "gsm8k"])
def test_missing_data_fails_before_the_model_loads(tmp_path, monkeypatch, capsys, task):
  monkeypatch.setenv("JAXPRUNE_DATA", str(tmp_path))
  monkeypatch.setenv("JAXPRUNE_CACHE", str(tmp_path))
  monkeypatch.setattr("jaxprune.calibration.corpora.cache_root", lambda *_: tmp_path)
  assert run_cli("--model", "/no/such/model", "--tasks", f"ppl:python,{task}") == 2
  assert f"pass --data {task}=FILE" in one_line_error(capsys)


def test_generation_defaults_agree():
  from jaxprune.evals.codegen import SamplingConfig
  from jaxprune.evals.generate import GenerateConfig

  config = tasks.EvalConfig(model="m", tasks=("humaneval",))
  assert GenerateConfig().max_new_tokens == SamplingConfig().max_new_tokens == config.max_new_tokens
  assert config.generation().max_new_tokens == config.max_new_tokens
  assert (config.num_samples, config.temperature, config.top_p) == (20, 0.8, 0.95)  # the paper's sampling
