"""Mask selection (against a stable sort) and packing; storage is tests/test_store.py."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.pruning import masks
from jaxprune.errors import JaxpruneError


def _reference(scores: np.ndarray, k: int) -> np.ndarray:
  keep = np.ones(scores.shape, bool)
  np.put_along_axis(keep, np.argsort(scores, axis=-1, kind="stable")[..., :k], False, axis=-1)
  return keep


SCORE_CASES = {
    "normal": lambda rng, shape: rng.standard_normal(shape),
    "many-ties": lambda rng, shape: rng.integers(0, 4, shape).astype(float),
    "signed-zeros": lambda rng, shape: rng.integers(0, 3, shape) * rng.choice([1.0, -1.0], shape),
    "all-equal": lambda rng, shape: np.ones(shape),
    # (subnormal scores would compare as 0: XLA flushes denormals on CPU)
    "huge-and-tiny": lambda rng, shape: rng.choice([1e-30, 1e38, 0.0, 3.0], shape),
}


@pytest.mark.parametrize("case", list(SCORE_CASES), ids=list(SCORE_CASES))
def test_lowest_k_matches_a_stable_sort(case):
  rng = np.random.default_rng(0)
  for shape in [(1, 1), (3, 7), (8, 16), (5, 39)]:  # few shapes: each one compiles
    k = int(rng.integers(0, shape[1] + 1))
    scores = SCORE_CASES[case](rng, shape).astype(np.float32)
    got = np.asarray(masks._lowest_k_pruned(jnp.asarray(scores), k))
    np.testing.assert_array_equal(got, _reference(scores, k))


def test_n_of_m_and_per_matrix():
  scores = jnp.asarray(np.arange(16, dtype=np.float32)[::-1].reshape(2, 8))
  keep = np.asarray(masks.n_of_m(scores, 2, 4))
  assert keep.tolist() == [[True, True, False, False] * 2] * 2
  flat = np.asarray(masks.per_matrix(scores, 0.25))
  assert (~flat).sum() == 4 and not flat[1, 4:].any()


@pytest.mark.parametrize("in_features", [1, 7, 8, 9, 576], ids=lambda n: f"in{n}")
def test_pack_round_trip(in_features):
  mask = np.random.default_rng(in_features).random((3, in_features)) > 0.5
  packed = masks.pack(mask)
  assert packed.shape == (3, -(-in_features // 8)) and packed.dtype == np.uint8
  np.testing.assert_array_equal(masks.unpack(packed, in_features), mask)


@pytest.mark.parametrize("pattern,sparsity,message", [
    ("unstructured", 1.0, "out of range"), ("unstructured", -0.5, "out of range"),
    ("2:2", 0.5, "N < M"), ("0:4", 0.5, "N < M"), ("a:b", 0.5, "unknown pattern"), ("2-4", 0.5, "unknown pattern"),
], ids=["s1", "s-neg", "n-eq-m", "n-zero", "letters", "dash"])
def test_parse_pattern_errors(pattern, sparsity, message):
  with pytest.raises(JaxpruneError, match=message):
    masks.parse_pattern(pattern, sparsity)


def test_sparsity_report():
  report = masks.sparsity_report({"a": np.array([[True, False]]), "b": np.array([[False, False, False, True]])})
  assert report == {"a": 0.5, "b": 0.75, "__total__": 4 / 6}
