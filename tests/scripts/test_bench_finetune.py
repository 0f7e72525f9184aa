"""scripts/bench_finetune.py on a tiny model: both sides train the same masked step from the same start."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.evals.conftest import make_tiny_with_tokenizer
from tests.finetune.conftest import TEXT

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_finetune  # noqa: E402

pytest.importorskip("torch")


def test_both_sides_start_from_the_same_loss_and_the_roofline_is_reported(tmp_path):
  folder, loaded = make_tiny_with_tokenizer(tmp_path / "model", "llama")
  corpus = tmp_path / "code"
  corpus.mkdir()
  for i in range(30):
    (corpus / f"m{i}.py").write_text(TEXT * 3)
  out = tmp_path / "bench.json"
  report = bench_finetune.main(["--model", str(folder), "--calib", str(corpus), "--batch", "8", "--seqlen", "16",
                                "--steps", "4", "--warmup-steps", "1", "--lr", "1e-2", "--quick-peak",
                                "--out", str(out)])
  assert json.loads(out.read_text())["speedup"] == pytest.approx(report["speedup"])
  ours, ref = report["jaxprune"], report["pytorch"]
  # same model, masks and batches, same AdamW (constant learning rate at step 1): the same first two losses
  np.testing.assert_allclose(ours["losses"][:2], ref["losses"][:2], rtol=2e-4)
  assert ours["timed_steps"] == ref["timed_steps"] == 3
  assert ours["tokens_per_s"] > 0 and ref["tokens_per_s"] > 0
  flops = bench_finetune.train_flops_per_token(loaded, 16)
  assert flops["trainable"] == 6 * loaded.spec.prunable_parameters
  assert ours["flops_per_token"] == flops
  assert 0 < report["roofline"]["jaxprune_of_roofline"] and report["roofline"]["max_tokens_per_s"] > 0
