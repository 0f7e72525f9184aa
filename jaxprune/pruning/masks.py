"""Masks: choosing which weights to keep, storing them, applying them.

A mask set is a mapping from HF parameter name to a bool array of that
parameter's HF shape [out, in]; True means the weight is kept.

The selection functions are pure and jit-able. Ties are broken stably by input
index (the lower index is pruned first), as ``torch.sort(..., stable=True)`` does
in the official Wanda code.

Example:
  >>> scores = jnp.array([[3., 1., 2., 0.]])
  >>> unstructured(scores, sparsity=0.5)
  Array([[ True, False,  True, False]], dtype=bool)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- #
# Patterns
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class Pattern:
  """A sparsity pattern: unstructured at a ratio, or N pruned in every M.

  ``n``/``m`` follow the Wanda code's ``prune_n``/``prune_m``: in every group of
  ``m`` consecutive input columns of a row, the ``n`` lowest scores are pruned
  (so 2:4 prunes 2 of 4, i.e. 50%).
  """

  sparsity: float
  n: int = 0
  m: int = 0

  @property
  def structured(self) -> bool:
    return self.m > 0

  def __str__(self) -> str:
    return f"{self.n}:{self.m}" if self.structured else "unstructured"


def parse_pattern(pattern: str, sparsity: float) -> Pattern:
  """Parse ``unstructured`` or ``N:M``; check the sparsity range."""
  if pattern == "unstructured":
    if not 0.0 <= sparsity < 1.0:
      raise JaxpruneError(
          f"sparsity {sparsity} is out of range: give a value in [0, 1), e.g. --sparsity 0.5"
      )
    return Pattern(sparsity=float(sparsity))
  parts = pattern.split(":")
  if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
    raise JaxpruneError(
        f"unknown pattern {pattern!r}: use 'unstructured' or N:M such as 2:4 or 4:8"
    )
  n, m = int(parts[0]), int(parts[1])
  if not 0 < n < m:
    raise JaxpruneError(f"pattern {pattern}: N must be in 1..M-1 (N < M), e.g. 2:4")
  return Pattern(sparsity=n / m, n=n, m=m)


def check_pattern_fits(pattern: Pattern, in_features: int, name: str) -> None:
  """N:M needs every row to split into whole groups of M."""
  if pattern.structured and in_features % pattern.m:
    raise JaxpruneError(
        f"{name} has {in_features} input features, not divisible by M={pattern.m}:"
        f" choose an M that divides {in_features}"
    )


# --------------------------------------------------------------------------- #
# Selection (pure, jit-able)
# --------------------------------------------------------------------------- #


def _sortable_keys(scores: jax.Array) -> jax.Array:
  """float32 -> uint32 keys with the same order (sign-magnitude flip)."""
  canonical = scores.astype(jnp.float32) + 0.0  # -0.0 -> +0.0: equal scores, equal keys
  bits = jax.lax.bitcast_convert_type(canonical, jnp.uint32)
  flip = jnp.where(bits >> 31 == 1, jnp.uint32(0xFFFFFFFF), jnp.uint32(0x80000000))
  return bits ^ flip


def _kth_smallest_key(keys: jax.Array, k: int) -> jax.Array:
  """Per row, the smallest key t with at least k keys <= t (32-step bisection)."""
  lo = jnp.zeros(keys.shape[:-1], jnp.uint32)
  hi = jnp.full(keys.shape[:-1], 0xFFFFFFFF, jnp.uint32)

  def step(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    enough = jnp.sum(keys <= mid[..., None], axis=-1, dtype=jnp.int32) >= k
    return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

  return jax.lax.fori_loop(0, 32, step, (lo, hi))[0]


def _lowest_k_pruned(scores: jax.Array, k: int) -> jax.Array:
  """Keep-mask pruning the ``k`` lowest scores along the last axis.

  Equal scores are pruned lowest index first, exactly as a stable sort would
  order them. Selection by bisection on the scores' bit patterns costs 32
  vectorised passes instead of a sort, which XLA runs slowly on CPU.
  """
  if k == 0:
    return jnp.ones(scores.shape, bool)
  keys = _sortable_keys(scores)
  threshold = _kth_smallest_key(keys, k)[..., None]
  below = keys < threshold
  ties_needed = k - jnp.sum(below, axis=-1, keepdims=True, dtype=jnp.int32)
  at = keys == threshold
  return ~(below | (at & (jnp.cumsum(at, axis=-1, dtype=jnp.int32) <= ties_needed)))


def unstructured(scores: jax.Array, sparsity: float) -> jax.Array:
  """Prune exactly floor(in * sparsity) lowest scores in every output row."""
  return _lowest_k_pruned(scores, int(scores.shape[-1] * sparsity))


def n_of_m(scores: jax.Array, n: int, m: int) -> jax.Array:
  """Prune the ``n`` lowest scores in every group of ``m`` consecutive inputs."""
  out, inp = scores.shape
  grouped = scores.reshape(out, inp // m, m)
  return _lowest_k_pruned(grouped, n).reshape(out, inp)


def per_matrix(scores: jax.Array, sparsity: float) -> jax.Array:
  """Prune the floor(numel * sparsity) lowest scores of the whole matrix."""
  flat = scores.reshape(-1)
  return _lowest_k_pruned(flat, int(flat.shape[0] * sparsity)).reshape(scores.shape)


def select(scores: jax.Array, pattern: Pattern, *, per_row: bool = True) -> jax.Array:
  """The keep-mask for ``scores`` under ``pattern``."""
  if pattern.structured:
    return n_of_m(scores, pattern.n, pattern.m)
  if per_row:
    return unstructured(scores, pattern.sparsity)
  return per_matrix(scores, pattern.sparsity)


# --------------------------------------------------------------------------- #
# Packing: 1 bit per weight
# --------------------------------------------------------------------------- #


def pack(mask: np.ndarray) -> np.ndarray:
  """Pack a bool [out, in] mask into uint8 [out, ceil(in/8)] (little bit order)."""
  return np.packbits(np.asarray(mask, bool), axis=-1, bitorder="little")


def unpack(packed: np.ndarray, in_features: int) -> np.ndarray:
  """Inverse of `pack`."""
  return np.unpackbits(np.asarray(packed, np.uint8), axis=-1, count=in_features, bitorder="little").astype(bool)


# --------------------------------------------------------------------------- #
# Applying
# --------------------------------------------------------------------------- #


def apply(model, masks: Mapping[str, Any]):
  """A copy of the penzai ``model`` with the pruned weights set to zero.

  Raises `JaxpruneError` when a mask names a linear the model lacks or has
  another shape (masks from another model).
  """
  from jaxprune.model import weights

  linears = weights.prunable_linears(model, names=set(masks))
  missing = sorted(set(masks) - set(linears))
  if missing:
    raise JaxpruneError(
        f"masks name {len(missing)} linears this model lacks (first: {missing[0]}):"
        " these masks come from another model; pass the model they were made for"
    )
  for name, linear in linears.items():
    outs, ins = weights.axis_sizes(linear)
    want = (math.prod(outs), math.prod(ins))
    if tuple(np.shape(masks[name])) != want:
      raise JaxpruneError(
          f"mask {name} has shape {tuple(np.shape(masks[name]))} but the model's"
          f" weight is {want}: these masks come from another model"
      )

  def zero_pruned(name, matrix):
    if name not in masks:
      return None
    return jnp.where(jnp.asarray(masks[name]), matrix, jnp.zeros((), matrix.dtype))

  return weights.map_linear_weights(model, zero_pruned)


def sparsity_report(masks: Mapping[str, Any]) -> dict[str, float]:
  """Fraction of pruned weights per matrix, and ``__total__`` overall."""
  report, pruned, total = {}, 0, 0
  for name, mask in masks.items():
    mask = np.asarray(mask)
    report[name] = float(1.0 - mask.mean()) if mask.size else 0.0
    pruned += int(mask.size - mask.sum())
    total += mask.size
  report["__total__"] = pruned / total if total else 0.0
  return report
