"""scripts/reproduce_domains.py end to end on a tiny model: present cells filled, absent ones marked, caches checked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.evals.conftest import make_tiny_with_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import reproduce_domains  # noqa: E402

QUESTIONS = [{"question": f"Tom has {i} apples and buys {i} more. How many?",
              "answer": f"He has {i} + {i} = {2 * i}.\n#### {2 * i}"} for i in range(60)]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
  root = tmp_path_factory.mktemp("domains")
  folder, _ = make_tiny_with_tokenizer(root / "model", "llama", max_position_embeddings=4096)
  gsm8k = root / "cache" / "local" / "gsm8k"
  gsm8k.mkdir(parents=True)
  for split, rows in (("train", QUESTIONS[:50]), ("test", QUESTIONS[50:])):
    (gsm8k / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (root / "data").mkdir()
  return root, folder


def _run(root: Path, folder: Path, monkeypatch, *extra: str) -> None:
  monkeypatch.setenv("JAXPRUNE_CACHE", str(root / "cache"))  # math from local GSM8K; no C4, english not fetched
  monkeypatch.setenv("JAXPRUNE_DATA", str(root / "data"))  # no multiple-choice data: CSR is absent
  reproduce_domains.main(["--model", str(folder), "--out", str(root / "out"), "--seeds", "0", "--nsamples", "2",
                          "--seqlen", "32", "--eval-windows", "2", "--limit", "2", "--max-new-tokens", "4", *extra])


def test_present_cells_are_measured_and_absent_ones_say_why(experiment, monkeypatch):
  root, folder = experiment
  _run(root, folder, monkeypatch)
  report = json.loads((root / "out" / "domains.json").read_text())
  plan, results = report["plan"], report["results"]
  assert set(plan["calibration_absent"]) >= {"csr", "generic"}
  assert "math" not in plan["calibration_absent"] and plan["tasks_present"]["math"] == ["gsm8k"]
  assert plan["tasks_present"]["csr"] == []
  math = results["math"]["math"]
  assert len(math["ppl"]) == 1 and math["ppl"][0] > 1 and 0 <= math["task"][0] <= 1
  assert results["python"]["code"]["ppl"][0] > 1 and "csr" not in results
  assert results["math"]["csr"] == {"task": None, "ppl": None}
  text = (root / "out" / "domains.md").read_text()
  csr_row = next(line for line in text.splitlines() if line.startswith("| csr"))
  assert "absent (" in csr_row and "no local OpenBookQA or HellaSwag data" in text
  assert "none of hellaswag" in text and (root / "out" / "domains.png").stat().st_size > 0
  math_row = next(line for line in text.splitlines() if line.startswith("| math"))
  assert "**" in math_row and "absent" in math_row  # its own domain in bold; CSR cells absent


def test_rerun_reuses_runs_and_refuses_other_settings(experiment, monkeypatch):
  root, folder = experiment
  runs = root / "out" / "runs"
  if not runs.exists():
    _run(root, folder, monkeypatch)
  stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/run.json")}
  _run(root, folder, monkeypatch)
  assert {p: p.stat().st_mtime_ns for p in runs.glob("*/run.json")} == stamps
  with pytest.raises(SystemExit, match="nsamples=2, this run asks nsamples=3"):
    _run(root, folder, monkeypatch, "--nsamples", "3")


def test_fresh_checkout_without_masks_prunes_again(experiment, monkeypatch):
  """git keeps only run.json of each run: a rerun from a clone makes the masks again instead of failing."""
  import shutil

  root, folder = experiment
  runs = root / "out" / "runs"
  if not runs.exists():
    _run(root, folder, monkeypatch)
  victim = sorted(runs.glob("*/run.json"))[0].parent
  for child in victim.iterdir():
    if child.name != "run.json":
      shutil.rmtree(child) if child.is_dir() else child.unlink()
  _run(root, folder, monkeypatch)
  assert (victim / "masks").is_dir() and (victim / "run.json").exists()
  assert "pruning 1 sub-models and reusing" in (root / "out" / "domains.md").read_text()
