"""jaxprune.pruning.sparsegpt against a port of the official SparseGPT (tests/reference_sparsegpt.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jaxprune.pruning import sparsegpt
from jaxprune.pruning.masks import Pattern
from tests.reference_sparsegpt import SparseGPT


def _layer_and_inputs(seed: int, rows: int = 48, columns: int = 256, outliers: bool = True):
  """A linear layer and four calibration batches, with a few massive input channels and one dead channel
  (as in the inputs of Qwen2.5's down_proj), so dampening and the dead-column path matter."""
  rng = np.random.default_rng(seed)
  layer = torch.nn.Linear(columns, rows, bias=False)
  layer.weight.data = torch.tensor(rng.standard_normal((rows, columns)), dtype=torch.float32)
  x = rng.standard_normal((4, 32, columns)).astype(np.float32)
  if outliers:
    x[..., [3, 100]] *= 300.0
  x[..., 7] = 0.0
  return layer, torch.tensor(x)


@pytest.mark.parametrize("pattern", [Pattern(0.5), Pattern(0.6), Pattern(0.5, 2, 4)], ids=["50%", "60%", "2:4"])
@pytest.mark.parametrize("outliers", [False, True], ids=["plain", "massive-channels"])
def test_prune_matches_the_official_fasterprune(pattern, outliers):
  layer, x = _layer_and_inputs(0, outliers=outliers)
  w = layer.weight.detach().numpy().copy()
  reference = SparseGPT(layer)
  for batch in x:
    reference.add_batch(batch[None])
  hessian = reference.H.numpy().copy()
  keep_ref = reference.fasterprune(pattern.sparsity, pattern.n, pattern.m, blocksize=64).numpy()
  w_ref = layer.weight.detach().numpy()

  w_new, keep = sparsegpt.prune(w, hessian, pattern, blocksize=64)
  w_new, keep = np.asarray(w_new), np.asarray(keep)
  assert (keep != keep_ref).mean() < 1e-3  # float32 order of operations may flip a weight at the threshold
  agree = keep == keep_ref
  np.testing.assert_allclose(np.where(agree, w_new, 0), np.where(agree, w_ref, 0), rtol=2e-3, atol=2e-3)
  assert np.all(w_new[~keep] == 0) and np.all(w_new[:, 7] == 0)  # pruned and dead columns are zero
  if pattern.structured:
    assert np.all((~keep).reshape(w.shape[0], -1, pattern.m).sum(-1) == pattern.n)


def test_the_hessian_scale_does_not_change_the_result():
  """Our statistics keep 2/tokens X^T X, upstream 2/batches: the update and mask are invariant to the scale."""
  layer, x = _layer_and_inputs(1)
  w = layer.weight.detach().numpy()
  flat = x.reshape(-1, x.shape[-1]).numpy().astype(np.float64)
  h = (flat.T @ flat).astype(np.float32)
  a = sparsegpt.prune(w, 2.0 / len(flat) * h, Pattern(0.5), blocksize=64)
  b = sparsegpt.prune(w, 2.0 / len(x) * h, Pattern(0.5), blocksize=64)
  assert (np.asarray(a[1]) == np.asarray(b[1])).mean() > 0.999
  np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[0]), rtol=1e-3, atol=1e-3)
