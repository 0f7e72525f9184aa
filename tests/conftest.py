"""Test setup: 8 host devices on CPU so sharding code runs as on a pod; the shared tiny Llama."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402  (after the XLA flags)

from jaxprune import converters  # noqa: E402
from tests.helpers import make_tiny_hf  # noqa: E402


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
