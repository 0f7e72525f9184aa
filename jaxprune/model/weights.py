"""Views of penzai linears as Hugging Face matrices, and model surgery on them.

A penzai `Linear` keeps its weights as a named array (e.g. axes ``embedding``,
``head_groups``, ``query_heads``, ``projection``). Its HF counterpart is a
matrix [out, in] whose rows and columns flatten those axes in the order of
``out_axis_names`` and ``in_axis_names``. The converters build every linear so
that this order is the HF order; these helpers are the one place that knows it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from penzai import pz


def axis_sizes(linear: pz.nn.Linear) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Sizes of the output axes and the input axes, in HF flattening order."""
  shape = linear.weights.value.named_shape
  return (
      tuple(shape[a] for a in linear.out_axis_names),
      tuple(shape[a] for a in linear.in_axis_names),
  )


def hf_matrix(linear: pz.nn.Linear) -> jax.Array:
  """The linear's weights as an HF matrix [out, in]."""
  outs, ins = axis_sizes(linear)
  data = linear.weights.value.unwrap(*linear.out_axis_names, *linear.in_axis_names)
  return data.reshape(math.prod(outs), math.prod(ins))


def named_from_hf(
    matrix: jax.Array,
    out_axes: Mapping[str, int],
    in_axes: Mapping[str, int],
) -> pz.nx.NamedArray:
  """An HF matrix [out, in] as a named array with the given axes (HF order)."""
  shape = (*out_axes.values(), *in_axes.values())
  return pz.nx.wrap(jnp.reshape(matrix, shape)).tag(*out_axes, *in_axes)


def prunable_linears(model: pz.nn.Layer, names=None) -> dict[str, pz.nn.Linear]:
  """Linears of ``model`` keyed by their HF parameter name.

  Args:
    model: a penzai model whose parameters carry HF names as labels.
    names: restrict to these names (default: every linear with a bound
      parameter whose label contains ``.layers.``, i.e. inside the blocks).
  """
  found = {}
  for linear in model.select().at_instances_of(pz.nn.Linear).get_sequence():
    label = getattr(linear.weights, "label", None)
    if label is None or not (linear.in_axis_names and linear.out_axis_names):
      continue  # norm scales are Linears with parallel axes only
    if (names is None and ".layers." in label) or (names is not None and label in names):
      found[label] = linear
  return found


def map_linear_weights(
    model: pz.nn.Layer,
    fn: Callable[[str, jax.Array], jax.Array | None],
) -> pz.nn.Layer:
  """A copy of ``model`` with ``fn(name, hf_matrix)`` applied to each linear.

  ``fn`` returns the new HF matrix, or None to keep the linear as it is. The
  model is not mutated: changed linears get fresh `pz.Parameter` objects.
  """

  def rewrite(linear: pz.nn.Linear) -> pz.nn.Linear:
    label = getattr(linear.weights, "label", None)
    if label is None or not (linear.in_axis_names and linear.out_axis_names):
      return linear
    new = fn(label, hf_matrix(linear))
    if new is None:
      return linear
    outs, ins = axis_sizes(linear)
    value = named_from_hf(
        new.astype(linear.weights.value.dtype),
        dict(zip(linear.out_axis_names, outs)),
        dict(zip(linear.in_axis_names, ins)),
    )
    return dataclasses.replace(linear, weights=_rebuilt(linear.weights, value))

  return model.select().at_instances_of(pz.nn.Linear).apply(rewrite)


def _rebuilt(weights, value):
  """A new parameter (or frozen value) like ``weights`` holding ``value``."""
  if isinstance(weights, pz.Parameter):
    return pz.Parameter(value=value, label=weights.label)
  return dataclasses.replace(weights, value=value)
