"""Shared fixtures of the core tests: tiny random Llamas saved by transformers."""

from __future__ import annotations

import pytest

from jaxprune import converters
from tests.helpers import make_tiny_hf


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
  """Factory: (folder, LoadedModel) of a tiny Llama with ``layers`` blocks (cached)."""
  made = {}

  def make(layers: int = 3):
    if layers not in made:
      folder = make_tiny_hf(tmp_path_factory.mktemp(f"tiny{layers}") / "m", "llama", num_hidden_layers=layers)
      made[layers] = (folder, converters.load_model(str(folder)))
    return made[layers]

  return make
