"""Continuous batching: one running decode batch whose free rows take new prompts between chunks.

`Running` starts a batch of ``rows`` rows from the first prompts
(`evals.prefill.fill`: left-padded to width ``W``, written into a cache of
``cache_len`` columns) and decodes it ``chunk`` steps at a time
(`evals.generate.decode`). After any chunk a free row (never used, finished,
or cancelled) can take a new prompt (`Running.join`): the prompt is prefilled
alone, its keys and values are written into that row right-aligned to the
cache's end index ``E``, and the row's earlier columns are marked padding.
This is exact for the same reason `evals.prefill` is: penzai derives a token's
rotary position from the count of non-padding tokens before it and masks
padding columns, so the joined row decodes as it would alone (tested against
`evals.generate.generate_ids`). A prompt can join while it fits: at most ``E``
tokens, and ``E`` plus its generation budget within ``cache_len``.

Each row samples with its own key (`evals.generate.row_key` of its request's
seed) folded with its own step count, so a row's tokens, sampled or greedy,
are those it would get alone.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from penzai import pz

from jaxprune.evals import generate as gen
from jaxprune.evals import prefill
from jaxprune.evals.decoding_model import decoding_model
from jaxprune.evals.prefill import PAD


@functools.partial(jax.jit, donate_argnames=("state",))
def clear_columns(state, row: jax.Array, upto: jax.Array):
  """``state`` with columns ``[0, upto)`` of batch row ``row`` marked padding (their keys and values masked)."""

  def fix(var):
    if var.label.rsplit("/", 1)[-1] != "previous_tokens":
      return var
    data = var.value.unwrap("batch", "seq")
    columns = jnp.arange(data.shape[1])
    data = data.at[row].set(jnp.where(columns < upto, PAD, data[row]))
    return dataclasses.replace(var, value=pz.nx.wrap(data).tag("batch", "seq"))

  return tuple(fix(v) for v in state)


@dataclasses.dataclass(frozen=True)
class BatchConfig:
  """Shapes and sampling of a running batch.

  Attributes:
    rows: rows of the compiled batch.
    chunk: decode steps per call.
    prompt_multiple: prompt widths are rounded up to this (fewer compilations).
    temperature, top_p: sampling of every row (0: greedy).
    room: the cache holds the first prompts' width plus ``room`` times their longest generation budget
      (rounded up to ``chunk``), so later prompts can join while earlier rows still generate.
  """

  rows: int
  chunk: int = 16
  prompt_multiple: int = 32
  temperature: float = 0.0
  top_p: float = 1.0
  room: int = 2


def _round_up(n: int, multiple: int) -> int:
  return max(multiple, math.ceil(n / multiple) * multiple)


class Running:
  """A decode batch in progress (host side; the arrays live on the device).

  ``rows[k]`` is the caller's tag of the prompt in row k (None: free);
  `step` returns the new tokens of each busy row.
  """

  def __init__(self, model, prompts: Sequence[Sequence[int]], tags: Sequence[object], budgets: Sequence[int],
               seeds: Sequence[int], eos_ids: Sequence[int], config: BatchConfig, max_positions: int | None = None):
    if not prompts or len(prompts) > config.rows:
      raise ValueError(f"{len(prompts)} prompts for a batch of {config.rows} rows")
    self.config = config
    self.model = decoding_model(model)
    steps = _round_up(max(budgets), config.chunk)
    self.width = _round_up(max(map(len, prompts)), config.prompt_multiple)
    self.cache_len = self.width + steps * config.room
    if max_positions is not None:  # no further than the context, unless the first prompts need it
      self.cache_len = max(self.width + steps, min(self.cache_len, _round_up(max_positions, config.chunk)))
    filled = prefill.fill(self.model, [list(p) for p in prompts], config.rows, self.width, self.cache_len,
                          group_rows=config.rows, multiple=config.prompt_multiple)
    self.tree_def, self.params, self.state, self.logits = filled.tree_def, filled.params, filled.state, filled.logits
    self.positions = filled.positions
    self.end = self.width  # the cache's end index: the column the next token goes to
    self.started = np.zeros(config.rows, np.int32)  # each row's own step count at the next decode
    self.tags: list[object | None] = [*tags, *[None] * (config.rows - len(prompts))]
    self.done = np.array([tag is None for tag in self.tags])
    self.keys = jnp.stack([gen.row_key(int(s), 0, 0) for s in seeds]
                          + [jax.random.key(0)] * (config.rows - len(prompts)))
    self.eos = jnp.asarray(sorted(set(eos_ids)) or [PAD], jnp.int32)
    self._temperature, self._top_p = jnp.float32(config.temperature), jnp.float32(config.top_p)

  @property
  def busy(self) -> list[int]:
    return [k for k, tag in enumerate(self.tags) if tag is not None]

  def free_row(self) -> int | None:
    return next((k for k, tag in enumerate(self.tags) if tag is None), None)

  def fits(self, prompt_len: int, budget: int) -> bool:
    """Whether a prompt of ``prompt_len`` tokens with ``budget`` new tokens can join now."""
    return (self.free_row() is not None and prompt_len <= self.end
            and self.end + _round_up(budget, self.config.chunk) <= self.cache_len)

  def join(self, prompt: Sequence[int], tag: object, seed: int) -> int:
    """Put ``prompt`` into a free row (`fits` must hold); the row."""
    if not self.fits(len(prompt), 1):
      raise ValueError(f"a prompt of {len(prompt)} tokens does not fit: {len(self.busy)} of {self.config.rows}"
                       f" rows busy, {self.end} columns written")
    row = self.free_row()
    width = min(self.end, _round_up(len(prompt), self.config.prompt_multiple))
    tokens = np.full((1, width), PAD, np.int32)
    tokens[0, width - len(prompt):] = prompt
    g_tree, g_params, g_state = prefill.caching_model(self.model, 1, width)
    logits, g_state = prefill.prefill(g_tree, g_params, g_state, jnp.asarray(tokens))
    self.positions += width
    self.state, self.logits = prefill.place(self.state, self.logits, g_state, logits, jnp.int32(row),
                                            jnp.int32(self.end - width))
    self.state = clear_columns(self.state, jnp.int32(row), jnp.int32(self.end - width))
    self.keys = self.keys.at[row].set(gen.row_key(int(seed), 0, 0))
    self.tags[row], self.done[row], self.started[row] = tag, False, 0
    return row

  def release(self, row: int) -> None:
    """Row ``row`` is finished or cancelled: it emits padding from now on and may take a new prompt."""
    self.tags[row], self.done[row] = None, True

  def can_step(self) -> bool:
    return bool(self.busy) and self.end + self.config.chunk <= self.cache_len

  def step(self) -> dict[int, list[int]]:
    """``chunk`` decode steps; {busy row: its new tokens, up to and including an end-of-sequence id}."""
    new, self.logits, done, self.state = gen.decode(
        self.tree_def, self.params, self.state, self.logits, jnp.asarray(self.done), self.keys,
        jnp.asarray(self.started), self._temperature, self._top_p, self.eos, steps=self.config.chunk)
    new, done = np.asarray(new), np.asarray(done)
    self.end += self.config.chunk
    self.started += self.config.chunk
    out = {}
    for k in self.busy:
      tokens = [int(t) for t in new[k] if t != PAD]
      out[k] = tokens
      self.done[k] = bool(done[k])
    return out
