"""A straightforward PyTorch port of the official SparseGPT as the Wanda repository ships it.

Kept deliberately close to upstream ``lib/sparsegpt.py`` (``SparseGPT.add_batch``
and ``SparseGPT.fasterprune``, locuslab/wanda, itself from IST-DASLab/sparsegpt):
the running Hessian 2/n X X^T over calibration batches, dampening, the upper
Cholesky factor of its inverse, column blocks with the OBS update. It is the
reference ``jaxprune.pruning.sparsegpt`` is tested against; jaxprune does not use it.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SparseGPT:
  def __init__(self, layer: nn.Linear):
    self.layer = layer
    self.rows, self.columns = layer.weight.shape
    self.H = torch.zeros((self.columns, self.columns), dtype=torch.float32)
    self.nsamples = 0

  def add_batch(self, inp: torch.Tensor, out: torch.Tensor | None = None) -> None:
    if len(inp.shape) == 2:
      inp = inp.unsqueeze(0)
    tmp = inp.shape[0]
    if len(inp.shape) == 3:
      inp = inp.reshape((-1, inp.shape[-1]))
    inp = inp.t()
    self.H *= self.nsamples / (self.nsamples + tmp)
    self.nsamples += tmp
    inp = math.sqrt(2 / self.nsamples) * inp.float()
    self.H += inp.matmul(inp.t())

  def fasterprune(self, sparsity: float, prune_n: int = 0, prune_m: int = 0, blocksize: int = 128,
                  percdamp: float = 0.01) -> torch.Tensor:
    """Prunes ``layer.weight`` in place (as upstream) and returns the keep-mask."""
    W = self.layer.weight.data.clone().float()
    H = self.H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(self.columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H

    pruned = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, self.columns, blocksize):
      i2 = min(i1 + blocksize, self.columns)
      count = i2 - i1
      W1 = W[:, i1:i2].clone()
      Q1 = torch.zeros_like(W1)
      Err1 = torch.zeros_like(W1)
      Hinv1 = Hinv[i1:i2, i1:i2]
      if prune_n == 0:
        tmp = W1**2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
        thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
        mask1 = tmp <= thresh
      else:
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
      for i in range(count):
        w = W1[:, i]
        d = Hinv1[i, i]
        if prune_n != 0 and i % prune_m == 0:
          tmp = W1[:, i:(i + prune_m)] ** 2 / (torch.diag(Hinv1)[i:(i + prune_m)].reshape((1, -1))) ** 2
          mask1.scatter_(1, i + torch.topk(tmp, prune_n, dim=1, largest=False)[1], True)
        q = w.clone()
        q[mask1[:, i]] = 0
        Q1[:, i] = q
        err1 = (w - q) / d
        W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
        Err1[:, i] = err1
      W[:, i1:i2] = Q1
      W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
      pruned[:, i1:i2] = mask1
    self.layer.weight.data = W.to(self.layer.weight.data.dtype)
    return ~pruned
