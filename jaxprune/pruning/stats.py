"""Running statistics of the inputs of each linear, and the probe that records them.

The state is a small NamedTuple with a pure ``init``/``update`` pair, as in
optax. `InputProbe` is a penzai layer inserted in front of a linear by model
surgery (``.at_instances_of(pz.nn.Linear)``); it returns its input unchanged
and accumulates into a `pz.StateVariable`. No hooks, no exceptions.

Example:
  >>> state = init(in_features=4)
  >>> state = update(state, x_tokens_by_features, weight=1.0)
  >>> wanda_norms = finalize(state).sq_norm   # mean over sequences of sum x_j^2
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from penzai import pz

SAMPLE_WEIGHT = "sample_weight"  # side input: 1 for real sequences, 0 for padding


class InputStats(NamedTuple):
  """Sums over calibration tokens of one linear's input features (float32).

  Attributes:
    sum_sq: [in] sum over tokens of x_j^2 (Wanda's statistic before dividing).
    gram: [in, in] sum over tokens of x x^T (SparseGPT's Hessian), or a [0, 0]
      placeholder when not collected.
    sequences: number of (weighted) calibration sequences seen.
  """

  sum_sq: jax.Array
  gram: jax.Array
  sequences: jax.Array


def init(in_features: int, with_gram: bool = False) -> InputStats:
  gram_shape = (in_features, in_features) if with_gram else (0, 0)
  return InputStats(
      sum_sq=jnp.zeros((in_features,), jnp.float32),
      gram=jnp.zeros(gram_shape, jnp.float32),
      sequences=jnp.zeros((), jnp.float32),
  )


def update(state: InputStats, rows: jax.Array, row_weight: jax.Array, sequences: jax.Array) -> InputStats:
  """Add ``rows`` [tokens, in] (each weighted by ``row_weight`` [tokens])."""
  x = rows.astype(jnp.float32)
  wx = x * row_weight[:, None]
  gram = state.gram
  if gram.shape[0]:
    gram = gram + jnp.matmul(wx.T, x, precision=jax.lax.Precision.HIGHEST)
  return InputStats(
      sum_sq=state.sum_sq + jnp.sum(wx * x, axis=0),
      gram=gram,
      sequences=state.sequences + sequences,
  )


class Finalized(NamedTuple):
  """The statistics as the pruning methods use them (divided once)."""

  sq_norm: jax.Array  # Wanda's scaler_row: mean over sequences of sum_tokens x_j^2
  hessian: jax.Array  # SparseGPT's H = 2/n sum x x^T


def finalize(state: InputStats) -> Finalized:
  n = jnp.maximum(state.sequences, 1.0)
  return Finalized(sq_norm=state.sum_sq / n, hessian=state.gram * (2.0 / n))


@pz.pytree_dataclass
class InputProbe(pz.nn.Layer):
  """Identity layer that accumulates `InputStats` of its input.

  Attributes:
    stats: the running statistics.
    in_axis_names: the input axes of the linear it stands in front of, in HF
      flattening order.
  """

  stats: pz.StateVariable[InputStats]
  in_axis_names: tuple[str, ...] = dataclasses.field(metadata={"pytree_node": False})

  def __call__(self, x: pz.nx.NamedArray, **side_inputs) -> pz.nx.NamedArray:
    lead = ("batch",) if "batch" in x.named_shape else ()
    others = lead + tuple(a for a in x.named_shape if a not in self.in_axis_names and a != "batch")
    data = x.unwrap(*others, *self.in_axis_names)
    in_features = math.prod(x.named_shape[a] for a in self.in_axis_names)
    rows = data.reshape(-1, in_features)
    weight = side_inputs.get(SAMPLE_WEIGHT)
    if weight is None or not lead:
      row_weight = jnp.ones(rows.shape[:1], jnp.float32)
      sequences = jnp.asarray(x.named_shape.get("batch", 1), jnp.float32)
    else:
      per_seq = weight.unwrap("batch").astype(jnp.float32)
      tokens_per_seq = rows.shape[0] // per_seq.shape[0]
      row_weight = jnp.repeat(per_seq, tokens_per_seq)
      sequences = jnp.sum(per_seq)
    self.stats.value = update(self.stats.value, rows, row_weight, sequences)
    return x


def insert_probes(block: pz.nn.Layer, names: set[str], with_gram: bool) -> pz.nn.Layer:
  """Put an `InputProbe` in front of every linear whose weight label is in ``names``."""
  from jaxprune.model import weights

  def add_probe(linear: pz.nn.Linear) -> pz.nn.Layer:
    label = getattr(linear.weights, "label", None)
    if label not in names:
      return linear
    _, ins = weights.axis_sizes(linear)
    probe = InputProbe(
        stats=pz.StateVariable(init(math.prod(ins), with_gram), label=f"stats:{label}"),
        in_axis_names=tuple(linear.in_axis_names),
    )
    return pz.nn.Sequential([probe, linear])

  return block.select().at_instances_of(pz.nn.Linear).apply(add_probe)
