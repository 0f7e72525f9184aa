"""Export back to HF: transformers loads it, tensors round-trip bit-exactly."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxprune import converters
from jaxprune.errors import JaxpruneError
from tests.helpers import FAMILY_CASES, make_tiny_hf

torch = pytest.importorskip("torch")

CASES = ["llama", "llama-tied", "qwen2-bias", "gemma3"]


@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_round_trip_is_bit_identical(tmp_path, case, caplog):
  from transformers import AutoModelForCausalLM

  model_type, extra = FAMILY_CASES[case]
  src = make_tiny_hf(tmp_path / "src", model_type, **extra)
  out = converters.export_hf(converters.load_model(str(src)), tmp_path / "out")
  original = load_file(str(src / "model.safetensors"))
  exported = load_file(str(out / "model.safetensors"))
  assert sorted(original) == sorted(exported)
  for name in original:
    np.testing.assert_array_equal(original[name], exported[name], err_msg=name)
  with caplog.at_level("WARNING"):
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info


def test_masks_are_applied_and_zeros_written(tmp_path):
  src = make_tiny_hf(tmp_path / "src", "llama")
  loaded = converters.load_model(str(src))
  name = "model.layers.1.mlp.down_proj.weight"
  rng = np.random.default_rng(0)
  mask = rng.random((32, 48)) > 0.5
  out = converters.export_hf(loaded, tmp_path / "out", masks={name: mask})
  exported = load_file(str(out / "model.safetensors"))
  original = load_file(str(src / "model.safetensors"))
  np.testing.assert_array_equal(exported[name], np.where(mask, original[name], 0.0))
  np.testing.assert_array_equal(exported["model.layers.0.mlp.down_proj.weight"],
                                original["model.layers.0.mlp.down_proj.weight"])


def test_existing_output_is_refused_and_nothing_half_written(tmp_path):
  src = make_tiny_hf(tmp_path / "src", "llama")
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep.txt").write_text("x")
  with pytest.raises(JaxpruneError, match="already exists"):
    converters.export_hf(converters.load_model(str(src)), tmp_path / "out")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_sharded_checkpoint_loads(tmp_path, monkeypatch):
  """A sharded folder (index + several files) loads like a single file."""
  from jaxprune.converters import export

  src = make_tiny_hf(tmp_path / "src", "llama")
  monkeypatch.setattr(export, "MAX_SHARD_SIZE", 20_000)
  out = converters.export_hf(converters.load_model(str(src)), tmp_path / "sharded")
  assert (out / "model.safetensors.index.json").exists()
  assert len(list(out.glob("*.safetensors"))) > 1
  a = converters.load_model(str(src)).model
  b = converters.load_model(str(out)).model
  import jax.numpy as jnp
  from penzai import pz

  tokens = pz.nx.wrap(jnp.arange(10)[None]).tag("batch", "seq")
  np.testing.assert_array_equal(np.asarray(a(tokens).unwrap("batch", "seq", "vocabulary")),
                                np.asarray(b(tokens).unwrap("batch", "seq", "vocabulary")))
