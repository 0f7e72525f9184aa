"""scripts/reproduce_languages.py end to end on a tiny model: every table, the plot and the compare report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from jaxprune import corpora
from tests.evals.conftest import make_tiny_with_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import reproduce_languages  # noqa: E402


def _missing_corpora() -> list[str]:
  root = corpora.cache_root(None)
  missing = []
  for name in reproduce_languages.CALIB:
    try:
      corpora.build(name, root)
    except corpora.NotReady:
      missing.append(name)
  return missing


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
  missing = _missing_corpora()
  if missing:
    pytest.skip(f"corpora not fetched: `jaxprune corpora fetch {' '.join(missing)}`")
  root = tmp_path_factory.mktemp("languages")
  folder, _ = make_tiny_with_tokenizer(root / "model", "llama", max_position_embeddings=4096)
  out = root / "out"
  reproduce_languages.main(["--model", str(folder), "--out", str(out), "--seeds", "0", "1", "--nsamples", "2",
                            "--seqlen", "32", "--eval-windows", "2", "--limit", "1", "--max-new-tokens", "4"])
  return out


def test_every_table_is_filled(reproduction):
  report = json.loads((reproduction / "languages.json").read_text())
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


def test_markdown_marks_the_diagonal_and_relative_increase(reproduction):
  text = (reproduction / "languages.md").read_text()
  for calibration in ("python", "java", "cpp", "javascript", "english"):
    rows = [line for line in text.splitlines() if line.startswith(f"| {calibration} |")]
    assert len(rows) == 2, calibration  # perplexity and relative-increase tables
    column = reproduce_languages.EVAL.index(calibration)
    for row in rows:
      assert row.split("|")[2 + column].strip().startswith("**"), row
  assert "Relative perplexity increase over dense" in text and "%" in text
  assert "pruning 25 sub-models and reusing 0" in text
  assert (reproduction / "layers_within_vs_across.png").stat().st_size > 0
  assert (reproduction / "compare" / "index.html").exists()


def test_rerun_reuses_every_run(reproduction):
  before = {p: p.stat().st_mtime_ns for p in (reproduction / "runs").glob("*/run.json")}
  record = json.loads((reproduction / "languages.json").read_text())["experiment"]
  reproduce_languages.main(["--model", record["model"], "--out", str(reproduction), "--seeds", "0", "1",
                            "--nsamples", "2", "--seqlen", "32", "--eval-windows", "2", "--limit", "1",
                            "--max-new-tokens", "4"])
  assert {p: p.stat().st_mtime_ns for p in (reproduction / "runs").glob("*/run.json")} == before
  assert "pruning 0 sub-models and reusing 25" in (reproduction / "languages.md").read_text()
