"""A penzai language model adjusted for decoding, by selector surgery.

`decoding_model` keeps the model's values and parameters and changes only how
they are computed, for the shapes of KV-cache decoding on XLA's CPU backend:

- `LastPosition` before the output layer: prefill projects only the last
  position onto the vocabulary;
- `TakeEmbedding` instead of `pz.nn.EmbeddingLookup`: one gather of table rows;
- multi-axis linear weights stored input axes first (`_inputs_first`).

Without the last two, XLA copied the whole embedding table (545 MB for
Qwen2.5's 151,936 x 896) and every q/k/v/o weight at each decode step.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from penzai import pz
from penzai.models.transformer import model_parts


@pz.pytree_dataclass
class LastPosition(pz.nn.Layer):
  """Keeps only the last sequence position, so prefill projects one position onto the vocabulary."""

  def __call__(self, x: pz.nx.NamedArray, **_unused_side_inputs) -> pz.nx.NamedArray:
    return x[{"seq": pz.slice[-1:]}]


@pz.pytree_dataclass
class TakeEmbedding(pz.nn.Layer):
  """`pz.nn.EmbeddingLookup` as one gather of whole table rows.

  penzai's lookup indexes the named table, which XLA's CPU backend compiled,
  inside the decode loop, into a transposed copy of the whole table at every
  step (545 MB for Qwen2.5's 151,936 x 896 table); here the token ids index the
  table's vocabulary axis directly. Same values, same parameter (tied models
  keep sharing it with the output layer).
  """

  table: pz.nn.EmbeddingTable

  def __call__(self, token_index: pz.nx.NamedArray, **_unused_side_inputs) -> pz.nx.NamedArray:
    table = self.table.embeddings.value
    vocab = self.table.vocabulary_axis
    rest = [name for name in table.named_shape if name != vocab]
    rows = table.unwrap(vocab, *rest)
    return pz.nx.nmap(lambda i: jnp.take(rows, i, axis=0))(token_index).tag(*rest)


def _inputs_first(linear: pz.nn.Linear) -> pz.nn.Linear:
  """``linear`` with its weights stored input axes first (same values, label and names).

  XLA's CPU dot wants a multi-axis weight as [inputs, outputs]; stored the
  other way (Qwen2.5's q/k/v/o projections), it copied the weight into that
  layout at every decode step.
  """
  weights = linear.weights
  value = weights.value if hasattr(weights, "value") else weights
  if len(value.named_shape) <= 2:
    return linear
  ordered = value.order_as(*linear.in_axis_names, *linear.out_axis_names)
  if isinstance(weights, pz.Parameter):
    return dataclasses.replace(linear, weights=pz.Parameter(value=ordered, label=weights.label))
  return dataclasses.replace(linear, weights=dataclasses.replace(weights, value=ordered))


def decoding_model(model: model_parts.TransformerLM) -> model_parts.TransformerLM:
  """``model`` adjusted for decoding: logits of the last position only, row-gather embeddings,
  multi-axis weights stored inputs first (copies of those weights: make it once per call)."""
  body = list(model.body.sublayers)
  last = max(i for i, layer in enumerate(body) if isinstance(layer, model_parts.TransformerBlock))
  body.insert(last + 1, LastPosition())
  model = dataclasses.replace(model, body=pz.nn.Sequential(body))
  model = pz.select(model).at_instances_of(pz.nn.EmbeddingLookup).apply(lambda layer: TakeEmbedding(layer.table))
  return pz.select(model).at_instances_of(pz.nn.Linear).apply(_inputs_first)
