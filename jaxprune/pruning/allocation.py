"""Layer-wise sparsity allocation: OWL (Yin et al., ICML 2024).

Outlier Weighed Layerwise sparsity gives blocks with many activation outliers
a lower sparsity. Per block, the outlier ratio is the fraction of Wanda scores
|W_ij| * ||x_j|| above ``m`` times the block's mean score, the statistics taken
from the dense model in one pass. Ratios are scaled into a band of width
``2 * lam`` and re-centred so the blocks' sparsities average to the target.

Deviation from the OWL code: when the scaled ratios are skewed, re-centring
can push a block beyond ``s +- lam``; we then shrink all deviations by one
common factor, which keeps the mean (hence the overall sparsity) exact and
every block inside the band. For symmetric ratios both agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from jaxprune.pruning import scores
from jaxprune.errors import JaxpruneError
from jaxprune.model.spec import block_of


def outlier_ratio(block_scores: Sequence[jnp.ndarray], m: float) -> float:
  """Fraction of a block's scores above ``m`` times their mean."""
  flat = jnp.concatenate([jnp.ravel(s) for s in block_scores])
  return float(jnp.mean(flat > m * jnp.mean(flat)))


def block_ratios(matrices: Mapping[str, jnp.ndarray], sq_norms: Mapping[str, jnp.ndarray], m: float) -> list[float]:
  """Outlier ratio of every block, from HF weight matrices and Wanda statistics."""
  by_block: dict[int, list] = {}
  for name, w in matrices.items():
    by_block.setdefault(block_of(name), []).append(scores.wanda(w, sq_norms[name]))
  return [outlier_ratio(by_block[b], m) for b in sorted(by_block)]


def owl_sparsities(ratios: Sequence[float], sparsity: float, lam: float) -> tuple[float, ...]:
  """Per-block sparsities averaging exactly ``sparsity``, within ``sparsity +- lam``."""
  if not 0.0 <= lam < 1.0:
    raise JaxpruneError(f"--owl-lambda {lam} must be in [0, 1)")
  if sparsity - lam < 0.0 or sparsity + lam >= 1.0:
    raise JaxpruneError(
        f"OWL band [{sparsity - lam:.3f}, {sparsity + lam:.3f}] leaves [0, 1): lower --owl-lambda"
    )
  r = np.asarray(ratios, np.float64)
  spread = r.max() - r.min()
  if spread == 0.0:
    return tuple(float(sparsity) for _ in r)
  density = (r - r.min()) / spread * 2.0 * lam  # more outliers -> keep more
  deviation = density - density.mean()
  largest = np.abs(deviation).max()
  if largest > lam:
    deviation *= lam / largest
  return tuple(float(sparsity - d) for d in deviation)
