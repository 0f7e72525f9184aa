"""A straightforward PyTorch port of the official Wanda (locuslab/wanda).

Kept deliberately close to upstream ``lib/prune.py`` (``prune_wanda``,
``prepare_calibration_input``) and ``lib/layerwrapper.py`` (``WrappedGPT``):
forward hooks on ``nn.Linear``, calibration samples one at a time, the first
layer's inputs caught by raising from a wrapper. It is the reference our JAX
pipeline is tested and benchmarked against; it is not used by jaxprune itself.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class WrappedGPT:
  """Upstream's running statistic: scaler_row = mean over samples of ||x_j||^2."""

  def __init__(self, layer: nn.Linear):
    self.layer = layer
    self.scaler_row = torch.zeros(layer.weight.shape[1], dtype=torch.float32, device=layer.weight.device)
    self.nsamples = 0

  def add_batch(self, inp, out):
    if len(inp.shape) == 2:
      inp = inp.unsqueeze(0)
    tmp = inp.shape[0]
    if len(inp.shape) == 3:
      inp = inp.reshape((-1, inp.shape[-1]))
    inp = inp.t()
    self.scaler_row *= self.nsamples / (self.nsamples + tmp)
    self.nsamples += tmp
    inp = inp.type(torch.float32)
    self.scaler_row += torch.norm(inp, p=2, dim=1) ** 2 / self.nsamples


def find_layers(module, name=""):
  if isinstance(module, nn.Linear):
    return {name: module}
  res = {}
  for child_name, child in module.named_children():
    res.update(find_layers(child, name=name + "." + child_name if name else child_name))
  return res


class _Caught(Exception):
  pass


def prepare_calibration_input(model, tokens: torch.Tensor):
  """Inputs and keyword arguments of the first decoder layer, per sample."""
  layers = model.model.layers
  inps, cache = [], {}

  def catcher(_module, args, kwargs):
    inps.append(args[0] if args else kwargs["hidden_states"])
    cache.update({k: v for k, v in kwargs.items() if k not in ("hidden_states", "past_key_values")})
    raise _Caught

  handle = layers[0].register_forward_pre_hook(catcher, with_kwargs=True)
  for j in range(tokens.shape[0]):
    try:
      model(tokens[j : j + 1], use_cache=False)  # upstream: model.config.use_cache = False
    except _Caught:
      pass
  handle.remove()
  return torch.cat(inps, 0), cache


def _layer_out(layer, x, kwargs):
  out = layer(x, **kwargs)
  return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def prune_wanda(model, tokens: np.ndarray, sparsity: float, prune_n: int = 0, prune_m: int = 0,
                score: str = "wanda", ria_a: float = 0.5):
  """Prune ``model`` in place; return (masks, scaler_rows) keyed by HF name (True = kept).

  ``score="ria"`` swaps in the metric of the RIA code (Zhang et al., 2024):
  (|W|/sum_col|W| + |W|/sum_row|W|) * sqrt(scaler_row)^a, the rest unchanged.
  """
  tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=next(model.parameters()).device)
  nsamples = tokens.shape[0]
  inps, kwargs = prepare_calibration_input(model, tokens)
  outs = torch.zeros_like(inps)
  masks, scaler_rows = {}, {}
  for i, layer in enumerate(model.model.layers):
    subset = find_layers(layer)
    wrapped = {name: WrappedGPT(subset[name]) for name in subset}

    def add_batch(name):
      def tmp(_, inp, out):
        wrapped[name].add_batch(inp[0].data, out.data)
      return tmp

    handles = [subset[name].register_forward_hook(add_batch(name)) for name in wrapped]
    for j in range(nsamples):
      outs[j] = _layer_out(layer, inps[j].unsqueeze(0), kwargs)
    for h in handles:
      h.remove()
    for name in subset:
      w = torch.abs(subset[name].weight.data)
      if score == "ria":
        w_metric = (w / torch.sum(w, dim=0) + w / torch.sum(w, dim=1).reshape(-1, 1)) * (
            torch.sqrt(wrapped[name].scaler_row.reshape((1, -1)))) ** ria_a
      else:
        w_metric = w * torch.sqrt(wrapped[name].scaler_row.reshape((1, -1)))
      w_mask = torch.zeros_like(w_metric) == 1
      if prune_n != 0:
        for ii in range(w_metric.shape[1]):
          if ii % prune_m == 0:
            tmp = w_metric[:, ii : (ii + prune_m)].float()
            w_mask.scatter_(1, ii + torch.topk(tmp, prune_n, dim=1, largest=False)[1], True)
      else:
        sort_res = torch.sort(w_metric, dim=-1, stable=True)
        indices = sort_res[1][:, : int(w_metric.shape[1] * sparsity)]
        w_mask.scatter_(1, indices, True)
      subset[name].weight.data[w_mask] = 0
      hf_name = f"model.layers.{i}.{name}.weight"
      masks[hf_name] = (~w_mask).cpu().numpy()
      scaler_rows[hf_name] = wrapped[name].scaler_row.cpu().numpy().copy()
    for j in range(nsamples):
      outs[j] = _layer_out(layer, inps[j].unsqueeze(0), kwargs)
    inps, outs = outs, inps
  return masks, scaler_rows
