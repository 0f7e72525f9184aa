"""jaxprune.store: a run's on-disk format round-trips, and damaged or missing parts are one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxprune import store
from jaxprune.errors import JaxpruneError

NAMES = ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight")


def _masks(rng):
  return {NAMES[0]: rng.random((6, 13)) > 0.3, NAMES[1]: rng.random((4, 24)) > 0.5}


def test_key_rule_round_trips_and_has_no_dots():
  for name in NAMES:
    assert "." not in store.key(name) and store.unkey(store.key(name)) == name


def test_masks_round_trip(tmp_path):
  saved = _masks(np.random.default_rng(0))
  store.save_masks(tmp_path / "m", saved, {"note": "x"})
  loaded, meta = store.load_masks(tmp_path / "m")
  assert meta["note"] == "x" and meta["format"] == store.MASKS_FORMAT and sorted(loaded) == sorted(saved)
  for name in saved:
    np.testing.assert_array_equal(loaded[name], saved[name])
  packed, _ = store.load_packed_masks(tmp_path / "m")
  assert packed[NAMES[0]].shape == (6, 2) and packed[NAMES[0]].dtype == np.uint8
  with pytest.raises(JaxpruneError, match="already exists"):
    store.save_masks(tmp_path / "m", saved)
  with pytest.raises(JaxpruneError, match="no masks found"):
    store.load_masks(tmp_path)


def test_a_run_folder_round_trips(tmp_path):
  rng = np.random.default_rng(1)
  masks = _masks(rng)
  weights = {NAMES[0]: rng.standard_normal((6, 13)).astype(np.float32)}
  store.save_results(tmp_path, masks, {"model": {"id": "m"}}, weights)
  store.write_json_atomic(tmp_path / store.RUN_JSON, {"format": store.RUN_FORMAT, "model": {"id": "m"}})
  got_masks, record, got_weights = store.load_run(tmp_path)
  assert record["model"] == {"id": "m"} and sorted(got_weights) == [NAMES[0]]
  np.testing.assert_array_equal(got_weights[NAMES[0]], weights[NAMES[0]])
  np.testing.assert_array_equal(got_masks[NAMES[1]], masks[NAMES[1]])
  assert not (tmp_path / "x").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_run_without_updated_weights_has_none(tmp_path):
  store.save_results(tmp_path, _masks(np.random.default_rng(2)), {}, {})
  store.write_json_atomic(tmp_path / store.RUN_JSON, {"model": {}})
  assert not (tmp_path / store.WEIGHTS).exists() and store.load_run(tmp_path)[2] == {}


@pytest.mark.parametrize("content,message", [(None, "not a finished jaxprune run"),
                                             ("{not json", "is damaged"),
                                             (json.dumps([1, 2]), "not a jaxprune run record")])
def test_bad_run_json_is_one_line(tmp_path, content, message):
  if content is not None:
    (tmp_path / store.RUN_JSON).write_text(content)
  with pytest.raises(JaxpruneError, match=message) as err:
    store.load_record(tmp_path)
  assert "\n" not in str(err.value)


def test_damaged_masks_are_one_line(tmp_path):
  store.save_results(tmp_path, _masks(np.random.default_rng(3)), {}, {})
  store.write_json_atomic(tmp_path / store.RUN_JSON, {"model": {}})
  for data in (tmp_path / store.MASKS).rglob("*"):
    if data.is_file() and "masks" in data.parts[-3:] and data.stat().st_size > 0 and "metadata" not in data.name:
      data.write_bytes(b"\0" * 7)
  with pytest.raises(JaxpruneError, match="cannot be read") as err:
    store.load_run(tmp_path)
  assert "\n" not in str(err.value)


def test_write_json_atomic_leaves_no_temporary_on_failure(tmp_path):
  with pytest.raises(TypeError):
    store.write_json_atomic(tmp_path / "x.json", {1j: 1})  # JSON keys must be strings
  assert list(tmp_path.iterdir()) == []
