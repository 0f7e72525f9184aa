"""Importance scores: one pure function per pruning method.

Each method's entry in `jaxprune.pruning.methods` names its score here; the block loop,
sharding, masks and storage are shared. Each function takes the HF weight
matrix W [out, in] and the finalized input statistics of that linear.

Example:
  >>> s = wanda(w, sq_norm)        # |W_ij| * sqrt(mean_seq sum_tok x_j^2)
  >>> keep = masks.unstructured(s, 0.5)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def magnitude(w: jax.Array, sq_norm: jax.Array | None = None) -> jax.Array:
  """|W|: the calibration-free baseline."""
  del sq_norm
  return jnp.abs(w.astype(jnp.float32))


def wanda(w: jax.Array, sq_norm: jax.Array) -> jax.Array:
  """Wanda (Sun et al., 2024): |W_ij| * ||X_j||."""
  return jnp.abs(w.astype(jnp.float32)) * jnp.sqrt(sq_norm)[None, :]


def ria(w: jax.Array, sq_norm: jax.Array, exponent: float = 0.5) -> jax.Array:
  """RIA (Zhang et al., 2024): relative importance times activation norm^a.

  (|W_ij| / sum_row |W| + |W_ij| / sum_col |W|) * ||X_j||^a.
  """
  a = jnp.abs(w.astype(jnp.float32))
  tiny = jnp.finfo(jnp.float32).tiny  # an all-zero row or column scores 0, not NaN
  row = jnp.maximum(jnp.sum(a, axis=1, keepdims=True), tiny)
  col = jnp.maximum(jnp.sum(a, axis=0, keepdims=True), tiny)
  relative = a / row + a / col
  return relative * jnp.power(jnp.sqrt(sq_norm), exponent)[None, :]
