"""SparseGPT (Frantar & Alistarh, 2023): prune and update the kept weights.

A JAX port of ``SparseGPT.fasterprune`` from the Wanda repository
(lib/sparsegpt.py): OBS with the inverse Hessian's Cholesky factor, column
blocks of 128, dampening 1% of the mean diagonal. Unlike the score-based
methods it returns new weights as well as a mask. Pure: the driver jit-compiles
it (``pattern``, ``blocksize`` and ``percdamp`` static).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune.pruning.masks import Pattern


def _block_size(columns: int, preferred: int) -> int:
  size = min(preferred, columns)
  while columns % size:
    size -= 1
  return size


def prune(w: jax.Array, hessian: jax.Array, pattern: Pattern, blocksize: int = 128,
          percdamp: float = 0.01) -> tuple[jax.Array, jax.Array]:
  """(new weights [out, in], keep-mask [out, in]) for one linear."""
  w = w.astype(jnp.float32)
  h = hessian.astype(jnp.float32)
  rows, columns = w.shape
  blocksize = _block_size(columns, blocksize)
  dead = jnp.diag(h) == 0
  h = h + jnp.diag(jnp.where(dead, 1.0, 0.0))
  w = jnp.where(dead[None, :], 0.0, w)
  damp = percdamp * jnp.mean(jnp.diag(h))
  h = h + damp * jnp.eye(columns, dtype=jnp.float32)
  chol = jnp.linalg.cholesky(h)
  hinv = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(columns, dtype=jnp.float32))
  hinv = jnp.linalg.cholesky(hinv).T  # upper factor, as torch.linalg.cholesky(upper=True)

  keep = jnp.ones_like(w, dtype=bool)
  for i1 in range(0, columns, blocksize):
    i2 = i1 + blocksize
    w1 = w[:, i1:i2]
    hinv1 = hinv[i1:i2, i1:i2]
    diag1 = jnp.diag(hinv1)
    if pattern.structured:
      pruned1 = jnp.zeros_like(w1, dtype=bool)
    else:
      tmp = w1**2 / diag1[None, :] ** 2
      thresh = jnp.sort(tmp.reshape(-1))[int(tmp.size * pattern.sparsity)]
      pruned1 = tmp <= thresh

    def column(i, carry):
      w1, q1, err1, pruned1 = carry
      if pattern.structured:
        def choose(p):
          window = jax.lax.dynamic_slice_in_dim(w1, i, pattern.m, axis=1)
          d = jax.lax.dynamic_slice_in_dim(diag1, i, pattern.m)
          tmp = window**2 / d[None, :] ** 2
          order = jnp.argsort(tmp, axis=1, stable=True)[:, : pattern.n]
          hit = jnp.zeros_like(tmp, dtype=bool).at[jnp.arange(rows)[:, None], order].set(True)
          current = jax.lax.dynamic_slice_in_dim(p, i, pattern.m, axis=1)
          return jax.lax.dynamic_update_slice_in_dim(p, current | hit, i, axis=1)

        pruned1 = jax.lax.cond(i % pattern.m == 0, choose, lambda p: p, pruned1)
      wcol = w1[:, i]
      d = hinv1[i, i]
      q = jnp.where(pruned1[:, i], 0.0, wcol)
      err = (wcol - q) / d
      w1 = w1 - err[:, None] * jnp.where(jnp.arange(blocksize) >= i, hinv1[i, :], 0.0)[None, :]
      q1 = q1.at[:, i].set(q)
      err1 = err1.at[:, i].set(err)
      return w1, q1, err1, pruned1

    carry = (w1, jnp.zeros_like(w1), jnp.zeros_like(w1), pruned1)
    if pattern.structured and blocksize % pattern.m:
      raise ValueError("SparseGPT N:M needs the column block size to be a multiple of M")
    _, q1, err1, pruned1 = jax.lax.fori_loop(0, blocksize, column, carry)
    w = w.at[:, i1:i2].set(q1)
    w = w.at[:, i2:].add(-err1 @ hinv[i1:i2, i2:])
    keep = keep.at[:, i1:i2].set(~pruned1)
  return w, keep
