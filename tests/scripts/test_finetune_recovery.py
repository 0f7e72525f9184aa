"""scripts/finetune_recovery.py on a tiny model: before/after table, loss curve, every unit cached."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.evals.conftest import make_tiny_with_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import finetune_recovery  # noqa: E402

ARGS = ["--calib", "python", "--domains", "python", "--nsamples", "8", "--seqlen", "16", "--eval-windows", "2",
        "--steps", "3", "--batch", "8", "--train-seqlen", "16", "--lr", "1e-2", "--checkpoint-every", "2"]


def test_before_and_after_are_measured_and_a_rerun_reuses_every_unit(tmp_path, monkeypatch):
  folder, _ = make_tiny_with_tokenizer(tmp_path / "model", "llama")
  out = tmp_path / "out"
  report = finetune_recovery.main(["--model", str(folder), "--out", str(out), "--cpu-shared", *ARGS])
  name = "wanda50-python-s0-ft3-lr0.01"
  written = json.loads((out / "finetune" / f"{name}.json").read_text())
  assert written["perplexity"] == report["perplexity"]
  assert set(written["perplexity"]) == {"dense", "pruned", "fine-tuned"}
  assert written["cpu"]["shared"] and "not clean" in written["cpu"]["note"]
  assert len(written["losses"]) == 3 and written["train_tokens"] == 3 * 8 * 16
  assert (out / "finetune" / f"{name}_loss.png").stat().st_size > 0
  assert "| fine-tuned |" in (out / "finetune" / f"{name}.md").read_text()
  record = json.loads((out / "runs" / name / "run.json").read_text())
  assert record["finetune"]["base_run"].endswith("wanda50-python-s0")

  def untouched(*args, **kwargs):
    raise AssertionError("a cached unit was made again")

  monkeypatch.setattr("jaxprune.finetune.finetune_run", untouched)
  monkeypatch.setattr("jaxprune.runs.prune_run", untouched)
  again = finetune_recovery.main(["--model", str(folder), "--out", str(out), *ARGS])
  assert again["perplexity"] == report["perplexity"] and not again["cpu"]["shared"]


def test_code_cells_are_measured_before_and_after(tmp_path):
  folder, _ = make_tiny_with_tokenizer(tmp_path / "model", "llama", max_position_embeddings=4096)
  out = tmp_path / "out"
  report = finetune_recovery.main(["--model", str(folder), "--out", str(out), *ARGS, "--code", "--limit", "1",
                                   "--max-new-tokens", "2"])
  code = report["humaneval_greedy"]
  assert set(code) == {"dense", "pruned", "fine-tuned"}
  for cells in code.values():
    assert set(cells) == set(finetune_recovery.CODE)
    assert all(cell["problems"] == 1 and 0 <= cell["pass@1"] <= 1 for cell in cells.values())
  assert "| fine-tuned | 0.0 (0/1)" in (out / "finetune" / "wanda50-python-s0-ft3-lr0.01.md").read_text()
