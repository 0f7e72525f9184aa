"""Models larger than one device: host-resident parameters streamed per block, the `model` mesh axis."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from penzai import pz

from jaxprune import converters
from jaxprune import cli, pruning, runs
from jaxprune.model import weights
from jaxprune.pruning import sharding
from jaxprune.errors import JaxpruneError
from tests.helpers import make_tiny_hf

pytest.importorskip("torch")

VOCAB = 97
# 8 query heads in 4 KV groups, 48 MLP neurons: model=2 and model=4 split heads and neurons alike.
HEADS = dict(num_attention_heads=8, num_key_value_heads=4, hidden_size=32)
FAMILIES = {"llama": ("llama", {}), "qwen2": ("qwen2", {}), "gemma": ("gemma", {"head_dim": 8})}


@pytest.fixture(scope="module")
def tokens():
  return np.random.default_rng(0).integers(0, VOCAB, (16, 16))


def _block_bytes(block) -> int:
  values = pz.freeze_params(block).select().at_instances_of(pz.ParameterValue).get_sequence()
  return sum(np.asarray(v.value.data_array).nbytes for v in values)


def test_host_params_keep_at_most_two_blocks_on_each_device(tiny_llama, tokens):
  folder, on_device = tiny_llama(12)
  on_host = converters.load_model(str(folder), params="host")
  assert not sharding.parameter_arrays(on_host.model)  # nothing on a device before the prune
  config = pruning.PruneConfig(microbatch=8)
  from_host = pruning.prune(on_host, tokens, config)
  from_device = pruning.prune(on_device, tokens, config)
  assert (from_host.params, from_device.params) == ("host", "device")
  assert from_host.masks.keys() == from_device.masks.keys()
  for name, mask in from_device.masks.items():
    np.testing.assert_array_equal(from_host.masks[name], mask, err_msg=name)
  block = _block_bytes(pruning.split_blocks(on_host.model)[1][0])
  peaks = from_host.memory["peak_parameter_bytes"]
  assert len(peaks) == jax.device_count() and max(peaks.values()) <= 2 * block, (peaks, block)
  assert min(peaks.values()) >= block  # replicated on every device of the `data` mesh
  # The measure sees the whole model where the whole model is on a device.
  whole = sum(a.nbytes for a in sharding.parameter_arrays(on_device.model))
  assert max(from_device.memory["peak_parameter_bytes"].values()) >= whole > 10 * block


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
  made = {}

  def make(name, **overrides):
    key = (name, tuple(sorted(overrides.items())))
    if key not in made:
      model_type, extra = FAMILIES[name]
      folder = make_tiny_hf(tmp_path_factory.mktemp(name) / "m", model_type, **{**HEADS, **extra, **overrides})
      made[key] = converters.load_model(str(folder))
    return made[key]

  return make


@pytest.mark.parametrize("family", list(FAMILIES))
def test_model_axis_gives_the_data_parallel_masks(family_models, tokens, family):
  loaded = family_models(family)
  config = pruning.PruneConfig(microbatch=8)
  results = {m: pruning.prune(loaded, tokens, config, mesh=sharding.MeshConfig.parse(m))
             for m in ("data=8", "data=4,model=2", "data=2,model=4")}
  base = results["data=8"]
  for mesh, result in results.items():
    assert result.mesh == dict(sharding.MeshConfig.parse(mesh).build().shape)
    # Row-split linears (o_proj, down_proj) sum partial products across `model`: float32 sums
    # reorder, so statistics agree to 1e-5 and masks to at least 99.99%.
    for name, stat in base.statistics.items():
      np.testing.assert_allclose(result.statistics[name], stat, rtol=1e-5, atol=1e-7, err_msg=f"{mesh} {name}")
    same = sum(int(np.sum(result.masks[n] == m)) for n, m in base.masks.items())
    total = sum(m.size for m in base.masks.values())
    assert same / total >= 0.9999, (mesh, same, total)


def test_model_axis_splits_each_blocks_weights(family_models):
  loaded = family_models("llama")
  mesh = sharding.MeshConfig(data=2, model=4).build()
  block = pruning.split_blocks(loaded.model)[1][0]
  placed = sharding.place(block, mesh, jax.device_put)
  linears = {n.rsplit(".", 2)[-2]: l for n, l in weights.prunable_linears(placed).items()}
  for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
    data = linears[name].weights.value.data_array
    assert "model" in data.sharding.spec, name
    assert data.addressable_shards[0].data.size * 4 == data.size, name  # a quarter on each device


BAD_MESHES = {
    "model-does-not-divide-heads": ("data=2,model=3", "does not divide the model's 8 attention heads"),
    "model-does-not-divide-mlp": ("data=1,model=8", "does not divide the model's 36 MLP width"),
    "mesh-larger-than-devices": ("data=8,model=2", "needs 16 devices but 8 are visible"),
    "not-a-mesh": ("data=4;model=2", "is not data=D,model=M"),
}


@pytest.mark.parametrize("case", list(BAD_MESHES), ids=list(BAD_MESHES))
def test_bad_mesh_one_line(family_models, tokens, case):
  text, message = BAD_MESHES[case]
  with pytest.raises(JaxpruneError, match=message) as err:
    loaded = family_models("llama", intermediate_size=36)  # 8 heads, 36 neurons
    pruning.prune(loaded, tokens, pruning.PruneConfig(), mesh=sharding.MeshConfig.parse(text))
  assert "\n" not in str(err.value)


def test_cli_bad_mesh_one_line(tiny_llama, tmp_path, capsys):
  folder, _ = tiny_llama(3)
  capsys.readouterr()  # the fixture's own output
  code = cli.main(["prune", "--model", str(folder), "--out", str(tmp_path / "r"), "--mesh", "data=16"])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and "needs 16 devices but 8 are visible" in err[0], err


@pytest.mark.parametrize("options", [dict(method="magnitude"), dict(method="sparsegpt"), dict(allocation="owl"),
                                     dict(sequential=False), dict(pattern="2:4")],
                         ids=["magnitude", "sparsegpt", "owl", "one-pass", "2:4"])
def test_every_method_gives_the_same_masks_from_host_memory(tiny_llama, tokens, options):
  folder, on_device = tiny_llama(3)
  on_host = converters.load_model(str(folder), params="host")
  config = pruning.PruneConfig(microbatch=8, **options)
  from_host, from_device = pruning.prune(on_host, tokens, config), pruning.prune(on_device, tokens, config)
  assert from_host.params == "host" and from_host.block_sparsity == from_device.block_sparsity
  for name, mask in from_device.masks.items():
    np.testing.assert_array_equal(from_host.masks[name], mask, err_msg=name)
  assert from_host.weights.keys() == from_device.weights.keys()
  for name, w in from_device.weights.items():  # SparseGPT's updated weights
    np.testing.assert_array_equal(from_host.weights[name], w, err_msg=name)


def test_a_host_run_killed_after_two_blocks_resumes_to_the_same_masks(tiny_llama, tokens, tmp_path):
  folder, on_device = tiny_llama(3)
  on_host = converters.load_model(str(folder), params="host")
  config = pruning.PruneConfig(microbatch=8)
  whole = pruning.prune(on_device, tokens, config)

  def die_after_two(done, total, info):
    if done == 2:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    runs.prune_run(on_host, tokens, config, runs.RunConfig(out=tmp_path / "r"), on_block=die_after_two)
  seen = []
  resumed = runs.prune_run(on_host, tokens, config, runs.RunConfig(out=tmp_path / "r"),
                           on_block=lambda done, total, info: seen.append(done))
  assert seen == [3] and resumed.params == "host"
  for name, mask in whole.masks.items():
    np.testing.assert_array_equal(resumed.masks[name], mask, err_msg=name)
