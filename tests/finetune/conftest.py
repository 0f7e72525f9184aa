"""Fixtures of the fine-tuning tests: a tiny Llama with a character tokenizer, a text corpus, a prune run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jaxprune import cli
from tests.evals.conftest import make_tiny_with_tokenizer

TEXT = "def add(a, b):\n    return a + b\n\nclass Point:\n    x = 0\n    y = 1\n"


@pytest.fixture(scope="package")
def tiny(tmp_path_factory):
  """(folder, LoadedModel) of a tiny 2-block Llama with the character tokenizer."""
  return make_tiny_with_tokenizer(tmp_path_factory.mktemp("ft") / "model", "llama")


@pytest.fixture(scope="package")
def corpus(tmp_path_factory) -> Path:
  """A folder of small code files: a calibration domain given as a path."""
  root = tmp_path_factory.mktemp("corpus") / "code"
  root.mkdir()
  for i in range(40):
    (root / f"mod{i:02d}.py").write_text(TEXT.replace("add", f"add{i}") * 3)
  return root


@pytest.fixture(scope="package")
def base_run(tiny, tmp_path_factory) -> Path:
  """A Wanda 50% run of the tiny model."""
  folder, _ = tiny
  tokens = tmp_path_factory.mktemp("tok") / "calib.npy"
  np.save(tokens, np.random.default_rng(1).integers(2, 97, (8, 16)))
  out = tmp_path_factory.mktemp("runs") / "base"
  assert cli.main(["prune", "--model", str(folder), "--calib-tokens", str(tokens), "--out", str(out)]) == 0
  return out
