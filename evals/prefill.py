"""Prompts into a batch's KV cache, a few rows of similar length at a time.

A decode batch holds ``batch`` rows whose prompts are left-padded to one width
``W``, so that every row's next token goes to the same cache column. Running
the prompts through the model as that one [batch, W] array would spend most of
the prefill on padding (HumanEval prompts in a batch of 64 run from ~60 to
~400 tokens: about half the positions are padding), on empty rows of a partial
batch, and on attention over the whole cache (``W`` + every token still to be
generated) where only ``W`` columns hold anything.

`fill` instead runs the rows in groups of ``group_rows`` consecutive rows
(sorted by length, so alike), each group padded only to its own longest
prompt and given a cache of exactly that width, then writes each group's cache
into the batch's cache at the group's rows, right-aligned to column ``W``.
This is exact: penzai derives a token's rotary position from the count of
non-padding tokens before it, not from its column, and masks columns whose
token is padding, so a row's keys and values do not depend on how far it
was shifted; the batch cache's ``previous_tokens`` is then exactly the
left-padded [batch, W] prompts, as a one-array prefill would leave it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from penzai import pz
from penzai.models.transformer import model_parts, sampling_mode

PAD = -1
"""Padding id: never a real token, so padding never collides with the model's pad/EOS tokens."""


def bind(tree_def, params, state):
  """The model of ``tree_def`` with its parameters and cache state bound (mutable copies)."""
  return pz.bind_variables(tree_def, [v.unfreeze_as_copy() for v in (*params, *state)])


def refreeze(model) -> list:
  """The cache state of a bound model, frozen again (its new values)."""
  return pz.unbind_state_vars(model, freeze=True)[1]


def caching_model(model: model_parts.TransformerLM, batch: int, cache_len: int):
  """(tree_def, params, initial state) of ``model`` in KV-caching mode for fixed shapes.

  The parameters are the model's own arrays; the state is a new, empty cache.
  """
  cached = sampling_mode.KVCachingTransformerLM.from_uncached(model, cache_len, {"batch": batch}, pad_id=PAD)
  tree_def, params = pz.unbind_params(cached, freeze=True)
  tree_def, state = pz.unbind_state_vars(tree_def, freeze=True)
  # Python ints would be weakly typed on the first call only: a second compilation.
  state = [dataclasses.replace(v, value=jnp.int32(v.value)) if isinstance(v.value, int) else v for v in state]
  return tree_def, params, state


@jax.jit
def prefill(tree_def, params, state, tokens: jax.Array):
  """Run the left-padded prompts [batch, width] into the cache; (last logits [batch, vocab], state)."""
  model = bind(tree_def, params, state)
  logits = model(pz.nx.wrap(tokens).tag("batch", "seq"))
  return logits.unwrap("batch", "seq", "vocabulary")[:, -1], refreeze(model)


def is_batched(leaf) -> bool:
  """Whether a cache leaf has a batch axis (keys, values, written tokens; not the end index)."""
  return isinstance(leaf, pz.nx.NamedArrayBase) and "batch" in leaf.named_shape


def axis_of(leaf: pz.nx.NamedArray, name: str) -> int:
  """The position of named axis ``name`` in ``leaf.data_array``."""
  return len(leaf.positional_shape) + list(leaf.named_axes).index(name)


@functools.partial(jax.jit, donate_argnames=("state", "logits"))
def place(state, logits: jax.Array, group_state, group_logits: jax.Array, row: jax.Array, column: jax.Array):
  """``state`` and ``logits`` with a group's cache written at rows ``row``... and columns ``column``...

  Every batched cache leaf (keys, values, written tokens) of ``group_state`` is
  copied into the same leaf of ``state``; its rows and sequence columns start at
  ``row`` and ``column``. Scalars (the cache's end index) are left alone.
  """

  def put(big, small):
    if not is_batched(big):
      return big
    if not isinstance(big, pz.nx.NamedArray) or list(big.named_axes) != list(small.named_axes):
      raise TypeError(f"cache leaves {big.named_shape} and {small.named_shape}: expected NamedArrays alike")
    starts = [jnp.int32(0)] * big.data_array.ndim
    starts[axis_of(big, "batch")], starts[axis_of(big, "seq")] = row, column
    return dataclasses.replace(big, data_array=jax.lax.dynamic_update_slice(big.data_array, small.data_array, starts))

  is_named = lambda x: isinstance(x, pz.nx.NamedArrayBase)
  state = jax.tree_util.tree_map(put, list(state), list(group_state), is_leaf=is_named)
  return state, jax.lax.dynamic_update_slice(logits, group_logits.astype(logits.dtype), (row, jnp.int32(0)))


@jax.jit
def _fresh(state):
  """An empty cache like ``state`` in buffers of its own (penzai's initial state may share one zeros buffer)."""
  return jax.tree_util.tree_map(jnp.zeros_like, state)


@jax.jit
def finish(state, logits: jax.Array, tokens: jax.Array):
  """``state`` as a one-array prefill of the left-padded ``tokens`` [batch, W] leaves it, and the logits.

  Written tokens: ``tokens`` then zeros (never written); cache end index: W;
  the logits of rows without a prompt: zeros.
  """
  width = tokens.shape[1]

  def fix(var):
    name = var.label.rsplit("/", 1)[-1]
    if name == "previous_tokens":
      data = var.value.unwrap("batch", "seq")
      data = jnp.zeros_like(data).at[:, :width].set(tokens)
      return dataclasses.replace(var, value=pz.nx.wrap(data).tag("batch", "seq"))
    if name == "cache_end_index":
      return dataclasses.replace(var, value=jnp.int32(width))
    return var

  empty = jnp.all(tokens == PAD, axis=1, keepdims=True)
  return tuple(fix(v) for v in state), jnp.where(empty, 0, logits)  # a tuple, as `refreeze` gives it


def _round_up(n: int, multiple: int) -> int:
  return max(multiple, math.ceil(n / multiple) * multiple)


class Filled(NamedTuple):
  """A batch's cache after its prompts: the caching model's parts and the last logits [batch, vocab]."""

  tree_def: Any
  params: list
  state: list
  logits: jax.Array
  positions: int  # prompt positions the model ran (padding in groups included)


def fill(model: model_parts.TransformerLM, prompts: Sequence[Sequence[int]], batch: int, width: int,
         cache_len: int, *, group_rows: int, multiple: int) -> Filled:
  """A batch's cache after its prompts (`Filled`).

  ``prompts`` (at least one) fill rows 0.. of the batch (the rest stay empty,
  with zero logits); each needs at most ``width`` tokens. Rows go in groups of
  ``group_rows`` (the last one fewer), each padded to its longest prompt rounded up to
  ``multiple`` (at most ``width``); groups of similar widths share compilations.
  """
  if len(prompts) > batch or max(map(len, prompts)) > width:
    raise ValueError(f"{len(prompts)} prompts of up to {max(map(len, prompts))} tokens in a batch of"
                     f" {batch} x {width}")
  tree_def, params, state = caching_model(model, batch, cache_len)
  state = _fresh(state)  # donated to `place` group after group
  logits, positions = None, 0
  tokens = np.full((batch, width), PAD, np.int32)
  for first in range(0, len(prompts), group_rows):
    rows = min(group_rows, batch - first)  # the last group of a batch not divisible by group_rows is smaller
    group = prompts[first:first + rows]
    group_width = min(width, _round_up(max(map(len, group)), multiple))
    group_tokens = np.full((rows, group_width), PAD, np.int32)
    for r, prompt in enumerate(group):
      group_tokens[r, group_width - len(prompt):] = prompt
      tokens[first + r, width - len(prompt):] = prompt
    g_tree, g_params, g_state = caching_model(model, rows, group_width)
    group_logits, g_state = prefill(g_tree, g_params, g_state, jnp.asarray(group_tokens))
    positions += group_tokens.size
    if logits is None:
      logits = jnp.zeros((batch, group_logits.shape[-1]), group_logits.dtype)
    state, logits = place(state, logits, g_state, group_logits, jnp.int32(first), jnp.int32(width - group_width))
  state, logits = finish(state, logits, jnp.asarray(tokens))
  return Filled(tree_def, params, state, logits, positions)
