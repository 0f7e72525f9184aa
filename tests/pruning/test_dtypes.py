"""bfloat16 / float16 parameters: float32 statistics and scores; run.json's dtypes and measured memory."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
from penzai import pz

from jaxprune import converters
from jaxprune import pruning, runs
from jaxprune.pruning import sharding

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tiny_llama):
  return tiny_llama(3)


@pytest.fixture(scope="module")
def tokens():
  return np.random.default_rng(2).integers(0, 97, (12, 16))


def _rounded_to(model, dtype):
  """``model`` with every parameter rounded to ``dtype`` and stored back as float32."""
  def round_value(v):
    data = np.asarray(v.value.data_array)
    return dataclasses.replace(v, value=dataclasses.replace(
        v.value, data_array=jax.numpy.asarray(data.astype(dtype).astype(np.float32))))

  return pz.freeze_params(model).select().at_instances_of(pz.ParameterValue).apply(round_value)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_parameters_accumulate_and_score_in_float32(tiny, tokens, dtype):
  folder, loaded32 = tiny
  half = converters.load_model(str(folder), dtype=dtype)
  config = pruning.PruneConfig(microbatch=4)
  result = pruning.prune(half, tokens, config)
  assert result.dtypes == {"parameters": dtype, "compute": "float32", "statistics": "float32"}
  # The same weights held in float32: products and sums are float32 in both runs, so the statistics
  # agree to float32 rounding (the norms' epsilon is held in the parameter dtype: 1e-6 in bfloat16
  # is 9.98e-7, a relative 5e-6 on these tiny activations) and the masks nearly all.
  rounded = dataclasses.replace(loaded32, model=_rounded_to(loaded32.model, jax.numpy.dtype(dtype)))
  reference = pruning.prune(rounded, tokens, config)
  assert reference.dtypes["parameters"] == "float32"
  for name, stat in reference.statistics.items():
    assert result.statistics[name].dtype == np.float32
    np.testing.assert_allclose(result.statistics[name], stat, rtol=1e-4, err_msg=name)
  same = sum(int(np.sum(result.masks[n] == m)) for n, m in reference.masks.items())
  total = sum(m.size for m in reference.masks.values())
  assert same / total >= 0.999, (same, total)
  # ... and not the float32 model's masks: the rounding reaches the scores.
  full = pruning.prune(loaded32, tokens, config)
  assert any(not np.array_equal(full.masks[n], m) for n, m in result.masks.items())


def test_run_json_records_dtypes_placement_mesh_and_measured_memory(tiny, tokens, tmp_path):
  folder, _ = tiny
  loaded = converters.load_model(str(folder), dtype="bfloat16", params="host")
  runs.prune_run(loaded, tokens, pruning.PruneConfig(microbatch=8), runs.RunConfig(out=tmp_path / "r"),
                 mesh=pruning.MeshConfig(data=4, model=2))
  record = json.loads((tmp_path / "r" / "run.json").read_text())
  assert record["dtype"] == "bfloat16"
  assert record["dtypes"] == {"parameters": "bfloat16", "compute": "float32", "statistics": "float32"}
  assert record["params"] == "host" and record["devices"]["mesh"] == {"data": 4, "model": 2}
  memory = record["memory"]
  assert len(memory["peak_device_bytes"]) == 8 and min(memory["peak_device_bytes"].values()) > 0
  assert memory["device_bytes_source"] in ("memory_stats", "live_arrays") and memory["samples"] > 3
  # Parameters split over `model`: each device held at most two blocks' shares at once.
  mesh = pruning.MeshConfig(data=4, model=2).build()
  placed = sharding.place(pruning.split_blocks(loaded.model)[1][0], mesh, jax.device_put)
  share = sum(s.data.nbytes for a in sharding.parameter_arrays(placed) for s in a.addressable_shards
              if s.device == mesh.devices.flat[0])
  whole = sum(a.nbytes for a in sharding.parameter_arrays(placed))
  assert share < 0.6 * whole
  assert share <= max(memory["peak_parameter_bytes"].values()) <= 2 * share
  assert memory["peak_host_rss_bytes"] > 50 * 2**20  # at least the Python, JAX and penzai imports
