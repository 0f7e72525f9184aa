"""Batched sampling from penzai models with a KV cache, compiled once per shape.

penzai's `KVCachingTransformerLM` swaps every attention layer for a caching
one and derives each token's position from the pad id; we give it ``PAD = -1``,
an id no tokenizer produces, so prompts are left-padded with it and padded
slots get position -1 (masked out), whatever the model's own pad token is.

Rows are sorted by prompt length and cut into batches of ``batch_size`` rows
(the last one padded with empty rows); a batch's prompts are left-padded to
its longest prompt rounded up to ``prompt_multiple``, and its cache holds that
width plus ``max_new_tokens`` rounded up to ``chunk``. Each distinct shape
compiles once. Jit-compiled pure functions do the work: the prefill
(`evals.prefill`: a few rows of similar length at a time, written into the
batch's cache), which fills the cache and gives the last position's logits,
and a decode of ``chunk`` steps (a `lax.scan`). Between chunks the host decodes the
new text to check stop strings, so generation ends within one chunk of the
last row's stop. Random keys are derived per (prompt, sample, step) from one
seed, so a completion does not depend on how rows were batched.

Example:
  >>> gen = make_generate(loaded)                       # the HumanEval API
  >>> gen(["def add(a, b):\\n"], num_samples=1, temperature=0.0, top_p=1.0,
  ...     max_new_tokens=64, stop=["\\ndef "])
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from penzai import pz
from penzai.models.transformer import model_parts

from jaxprune.evals import prefill
from jaxprune.evals.decoding_model import decoding_model
from jaxprune.evals.prefill import PAD
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_seconds = [0.0]  # seconds JAX has spent tracing, lowering and compiling in this process


def _count_compile(event: str, seconds: float, **_unused) -> None:
  if event in _COMPILE_EVENTS:
    _compile_seconds[0] += seconds


jax.monitoring.register_event_duration_secs_listener(_count_compile)


def compile_seconds() -> float:
  """Seconds JAX has spent tracing, lowering and compiling in this process so far."""
  return _compile_seconds[0]


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
  """How to sample.

  Attributes:
    max_new_tokens: tokens generated per row at most.
    temperature: 0 is greedy (argmax).
    top_p: nucleus sampling mass (1 keeps the whole vocabulary).
    stop: strings that end a completion (excluded from the returned text).
    batch_size: rows per compiled call (prompts x samples are spread over rows); a call with
      fewer rows uses the next power of two instead.
    chunk: decode steps per compiled call between host-side stop checks.
    prompt_multiple: prompt widths (a batch's, and those of its prefill groups)
      are rounded up to this, so calls with similar prompts reuse one compilation.
    prefill_rows: prompts run through the model this many rows at a time,
      each group padded only to its own longest prompt (`evals.prefill`).
    chat: wrap each prompt in the tokenizer's chat template (instruct models).
    seed: seed of the per-row random keys.
    shrink: once at most 1/shrink of a batch's rows are still generating, the
      live rows continue in a batch ``shrink`` times smaller (1: never shrink).
  """

  max_new_tokens: int = 512  # as codegen.SamplingConfig and tasks.EvalConfig (tested)
  temperature: float = 0.0
  top_p: float = 1.0
  stop: tuple[str, ...] = ()
  batch_size: int = 8
  chunk: int = 16
  prompt_multiple: int = 32
  prefill_rows: int = 8
  chat: bool = False
  seed: int = 0
  shrink: int = 4

  def __post_init__(self):
    if min(self.max_new_tokens, self.batch_size, self.chunk, self.prompt_multiple, self.prefill_rows,
           self.shrink) < 1:
      raise JaxpruneError(
          f"max_new_tokens={self.max_new_tokens}, batch_size={self.batch_size}, chunk={self.chunk},"
          f" prompt_multiple={self.prompt_multiple}, prefill_rows={self.prefill_rows}, shrink={self.shrink}:"
          " each must be at least 1")
    if self.temperature < 0 or not 0 < self.top_p <= 1:
      raise JaxpruneError(
          f"temperature={self.temperature}, top_p={self.top_p}: need temperature >= 0 and 0 < top_p <= 1")


# --------------------------------------------------------------------------- #
# Pure, jit-able pieces
# --------------------------------------------------------------------------- #


def top_p_filter(logits: jax.Array, top_p: jax.Array) -> jax.Array:
  """Logits outside the smallest set of tokens with probability mass >= ``top_p`` set to -inf.

  The most likely token always stays (as transformers' `TopPLogitsWarper`).
  """
  ordered = jnp.sort(logits, axis=-1)[..., ::-1]
  probs = jax.nn.softmax(ordered, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  kept = jnp.sum(mass_before < top_p, axis=-1, keepdims=True)
  threshold = jnp.take_along_axis(ordered, jnp.maximum(kept - 1, 0), axis=-1)
  return jnp.where(logits < threshold, -jnp.inf, logits)


def sample_next(logits: jax.Array, keys: jax.Array, temperature: jax.Array, top_p: jax.Array) -> jax.Array:
  """One token per row of ``logits`` [batch, vocab]: argmax at temperature 0, else top-p sampling."""
  logits = logits.astype(jnp.float32)

  def sampled(logits):
    scaled = logits / jnp.maximum(temperature, 1e-6)
    scaled = jax.lax.cond(top_p < 1.0, top_p_filter, lambda x, _: x, scaled, top_p)
    return jax.vmap(jax.random.categorical)(keys, scaled).astype(jnp.int32)

  # A branch, not a select: greedy decoding skips the Gumbel noise over the whole
  # vocabulary (for Qwen2.5's 151,936 ids at 64 rows, 0.4 s a step on 2 CPU cores).
  return jax.lax.cond(temperature > 0, sampled, lambda x: jnp.argmax(x, axis=-1).astype(jnp.int32), logits)


@functools.partial(jax.jit, static_argnames=("steps",), donate_argnames=("state",))
def decode(tree_def, params, state, logits: jax.Array, done: jax.Array, row_keys: jax.Array,
           start: jax.Array, temperature: jax.Array, top_p: jax.Array, eos: jax.Array, *, steps: int):
  """``steps`` cached decode steps: (tokens [batch, steps], last logits, done, state).

  Row ``r``'s key at step ``t`` is ``row_keys[r]`` folded with ``start + t`` (``start``: one step index, or one
  per row).

  Finished rows emit and consume ``PAD``; a row finishes when it samples an id in ``eos``.
  The cache (``state``) is donated: updated in place, not copied at every call.
  """

  def step(carry, t):
    state, logits, done = carry
    keys = jax.vmap(jax.random.fold_in)(row_keys, jnp.broadcast_to(start + t, row_keys.shape))
    token = jnp.where(done, PAD, sample_next(logits, keys, temperature, top_p))
    done = done | jnp.isin(token, eos)
    model = prefill.bind(tree_def, params, state)
    out = model(pz.nx.wrap(token[:, None]).tag("batch", "seq"))
    return (prefill.refreeze(model), out.unwrap("batch", "seq", "vocabulary")[:, -1], done), token

  (state, logits, done), tokens = jax.lax.scan(step, (state, logits, done), jnp.arange(steps))
  return tokens.T, logits, done, state


# --------------------------------------------------------------------------- #
# Driver (host side)
# --------------------------------------------------------------------------- #


def _round_up(n: int, multiple: int) -> int:
  return max(multiple, math.ceil(n / multiple) * multiple)


def row_key(seed: int, prompt: int, sample: int) -> jax.Array:
  """The random key of one (prompt, sample) row: independent of batching."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), prompt), sample)


def shrink_sizes(batch: int, factor: int) -> list[int]:
  """The batch sizes a call may shrink to as rows finish: ``batch``, ``batch // factor``, ... down to 1."""
  sizes = [batch]
  while factor > 1 and sizes[-1] > 1:
    sizes.append(max(1, sizes[-1] // factor))
  return sizes


@jax.jit
def take_rows(state, logits: jax.Array, keys: jax.Array, rows: jax.Array):
  """The cache ``state``, last ``logits`` and ``keys`` of the batch rows ``rows`` only (in that order)."""

  def take(leaf):
    if not prefill.is_batched(leaf):
      return leaf
    if not isinstance(leaf, pz.nx.NamedArray):
      raise TypeError(f"cache state of type {type(leaf).__name__}: expected NamedArray")
    axis = prefill.axis_of(leaf, "batch")
    named = collections.OrderedDict(leaf.named_axes, batch=int(rows.shape[0]))
    return dataclasses.replace(leaf, named_axes=named, data_array=jnp.take(leaf.data_array, rows, axis=axis))

  state = jax.tree_util.tree_map(take, state, is_leaf=lambda x: isinstance(x, pz.nx.NamedArrayBase))
  return state, logits[rows], keys[rows]


def generate_ids(
    model: model_parts.TransformerLM,
    prompts: Sequence[Sequence[int]],
    config: GenerateConfig = GenerateConfig(),
    *,
    num_samples: int = 1,
    eos_ids: Sequence[int] = (),
    stopped: Callable[[int, list[int]], bool] | None = None,
    max_positions: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    stats: dict[str, float] | None = None,
) -> list[list[list[int]]]:
  """``num_samples`` continuations (token ids, EOS excluded) of each prompt's ids.

  ``stopped(prompt_index, ids)`` is asked after every chunk whether a row's
  text has reached a stop string. ``on_batch`` gets the rows finished so far.
  ``stats``, if given, accumulates where the time went (`add_stats`).
  When at most ``1 / config.shrink`` of a batch's rows are still running, the
  live rows' caches are gathered into the next smaller compiled batch, so
  finished rows stop costing decode steps (tokens are unchanged: rows are
  independent and keep their random keys).
  """
  if not prompts or any(len(p) == 0 for p in prompts):
    raise JaxpruneError("every prompt needs at least one token: drop empty prompts or add a BOS token")
  steps = _round_up(config.max_new_tokens, config.chunk)
  if max_positions is not None and max(map(len, prompts)) + config.max_new_tokens > max_positions:
    raise JaxpruneError(
        f"prompt of {max(map(len, prompts))} tokens + max_new_tokens {config.max_new_tokens} exceeds the"
        f" model's context of {max_positions}: lower max_new_tokens or shorten the prompts")
  # Rows sorted by prompt length, so each batch is padded only to its own longest prompt.
  rows = sorted(((i, s) for i in range(len(prompts)) for s in range(num_samples)), key=lambda r: len(prompts[r[0]]))
  batch = min(config.batch_size, 1 << (len(rows) - 1).bit_length())  # few rows: a smaller power-of-two batch
  sizes = shrink_sizes(batch, config.shrink)
  model = decoding_model(model)
  eos = jnp.asarray(sorted(set(eos_ids)) or [PAD], jnp.int32)
  temperature, top_p = jnp.float32(config.temperature), jnp.float32(config.top_p)
  out: list[list[list[int]]] = [[[] for _ in range(num_samples)] for _ in prompts]
  # A partial batch goes first, with the shortest prompts: its empty rows then pad short prompts, not long ones.
  ends = list(range(len(rows), 0, -batch))[::-1]
  for first, end in zip([0, *ends[:-1]], ends):
    chunk_rows = rows[first:end]
    width = _round_up(max(len(prompts[i]) for i, _ in chunk_rows), config.prompt_multiple)
    keys = jnp.stack([row_key(config.seed, i, s) for i, s in chunk_rows]
                     + [jax.random.key(0)] * (batch - len(chunk_rows)))
    done = np.arange(batch) >= len(chunk_rows)
    clock = (time.perf_counter(), _compile_seconds[0])
    tree_def, params, state, logits, positions = prefill.fill(  # a new cache, filled a few alike rows at a time
        model, [prompts[i] for i, _ in chunk_rows], batch, width, width + steps,
        group_rows=config.prefill_rows, multiple=config.prompt_multiple)
    logits.block_until_ready()
    clock = _tally(stats, clock, prefill_s=None, prefill_rows=len(chunk_rows), prefill_tokens=positions,
                   prompt_tokens=sum(len(prompts[i]) for i, _ in chunk_rows))
    generated: list[list[int]] = [[] for _ in range(batch)]
    slots = np.arange(batch)  # slots[k]: the row of `chunk_rows` in compiled row k
    for start in range(0, config.max_new_tokens, config.chunk):
      live = np.flatnonzero(~done)
      smaller = [size for size in sizes if size >= len(live)][-1]
      if smaller < len(slots):  # gather the live rows into a smaller batch
        keep = np.concatenate([live, np.flatnonzero(done)[:smaller - len(live)]])
        tree_def, params, _ = prefill.caching_model(model, smaller, width + steps)  # its empty cache is dropped
        state, logits, keys = take_rows(state, logits, keys, jnp.asarray(keep, jnp.int32))
        slots, done = slots[keep], done[keep]
      new, logits, done_dev, state = decode(
          tree_def, params, state, logits, jnp.asarray(done), keys, jnp.int32(start), temperature, top_p, eos,
          steps=config.chunk)
      new, done = np.asarray(new), np.array(done_dev)
      clock = _tally(stats, clock, decode_s=None, decode_row_steps=len(slots) * config.chunk,
                     decode_steps=config.chunk)
      for k, r in enumerate(slots):
        if r >= len(chunk_rows):
          continue
        row = generated[r]
        if len(row) < config.max_new_tokens and (not row or row[-1] != PAD):
          row.extend(int(t) for t in new[k])
          if stopped is not None and not done[k] and stopped(chunk_rows[r][0], _strip(row, eos_ids)):
            done[k] = True
      if done.all():
        break
    for r, (i, s) in enumerate(chunk_rows):
      out[i][s] = _strip(generated[r][:config.max_new_tokens], eos_ids)
      _tally(stats, clock, tokens=len(out[i][s]))
    if on_batch is not None:
      on_batch(end)
  return out


def _tally(stats: dict[str, float] | None, clock: tuple[float, float], **counts: float | None) -> tuple[float, float]:
  """Add ``counts`` to ``stats`` (a None count: the seconds since ``clock``, less compilation); the new clock.

  ``clock`` is (wall time, compile seconds so far). Keys: ``prefill_s``/``decode_s``
  (seconds running, jit compilation excluded), ``compile_s`` (tracing and
  compiling new shapes), ``prefill_rows``, ``prompt_tokens``, ``prefill_tokens`` (positions run, padding included),
  ``decode_steps`` (compiled steps), ``decode_row_steps`` (steps x rows of the batch they ran in:
  the tokens paid for) and ``tokens`` (tokens kept): ``1 - tokens / decode_row_steps`` is the
  share of decode work spent on rows that had already finished, or on padding rows.
  """
  now = (time.perf_counter(), _compile_seconds[0])
  compiling = now[1] - clock[1]
  if stats is not None:
    for key, value in counts.items():
      stats[key] = stats.get(key, 0) + (now[0] - clock[0] - compiling if value is None else value)
    if None in counts.values():
      stats["compile_s"] = stats.get("compile_s", 0) + compiling
  return now


def _strip(ids: list[int], eos_ids: Sequence[int]) -> list[int]:
  """Ids up to the first EOS or PAD (exclusive)."""
  ends = set(eos_ids) | {PAD}
  return next((ids[:k] for k, t in enumerate(ids) if t in ends), ids)


# --------------------------------------------------------------------------- #
# Text in, text out
# --------------------------------------------------------------------------- #


def eos_ids_of(loaded) -> list[int]:
  """End-of-sequence ids: the tokenizer's and the config's (which may list several)."""
  ids = {getattr(loaded.tokenizer, "eos_token_id", None)}
  configured = getattr(loaded.config, "eos_token_id", None)
  ids |= set(configured) if isinstance(configured, (list, tuple)) else {configured}
  return sorted(int(i) for i in ids if i is not None)


@dataclasses.dataclass(frozen=True)
class ChatPrompt:
  """A prompt inside the chat template: the user's message and the start of the assistant's answer.

  The model continues ``answer_prefix`` (e.g. an opened code block holding a
  function's signature), so a chat model can complete code as a base model
  does, whatever `GenerateConfig.chat` says.
  """

  user: str
  answer_prefix: str = ""


def encode_prompts(tokenizer, prompts: Sequence[str | ChatPrompt], chat: bool = False) -> list[list[int]]:
  """Token ids of each prompt; a `ChatPrompt`, or any prompt when ``chat``, inside the chat template."""
  if tokenizer is None:
    raise JaxpruneError("the model has no tokenizer: generation from text needs the model's tokenizer files")
  chats = [p if isinstance(p, ChatPrompt) else ChatPrompt(p) if chat else None for p in prompts]
  if any(c is not None for c in chats) and not getattr(tokenizer, "chat_template", None):
    raise JaxpruneError("the tokenizer has no chat template: drop the chat option for a base model")
  ids = []
  for prompt, c in zip(prompts, chats):
    if c is None:
      ids.append(list(tokenizer(prompt)["input_ids"]))
      continue
    text = tokenizer.apply_chat_template([{"role": "user", "content": c.user}], add_generation_prompt=True,
                                         tokenize=False)
    ids.append(list(tokenizer(text + c.answer_prefix, add_special_tokens=False)["input_ids"]))
  return ids


def completion_text(tokenizer, prompt_ids: Sequence[int], ids: Sequence[int]) -> str:
  """The text ``ids`` add to the prompt (decoding them alone would lose a leading space in SentencePiece)."""
  head = tokenizer.decode(list(prompt_ids))
  whole = tokenizer.decode(list(prompt_ids) + list(ids))
  return whole[len(head):] if whole.startswith(head) else tokenizer.decode(list(ids))


def truncate(text: str, stop: Sequence[str]) -> str:
  """``text`` up to its earliest stop string (exclusive)."""
  return text[:min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))]


def generate_text(loaded, prompts: Sequence[str | ChatPrompt], config: GenerateConfig = GenerateConfig(), *,
                  num_samples: int = 1, on_batch: Callable[[int], None] | None = None,
                  stats: dict[str, float] | None = None) -> list[list[str]]:
  """``num_samples`` completions of each prompt (prompt excluded, cut at EOS and stop strings)."""
  tok = loaded.tokenizer
  ids = encode_prompts(tok, prompts, config.chat)
  stop = [s for s in config.stop if s]
  stopped = (lambda i, gen: any(s in completion_text(tok, ids[i], gen) for s in stop)) if stop else None
  out = generate_ids(loaded.model, ids, config, num_samples=num_samples, eos_ids=eos_ids_of(loaded),
                     stopped=stopped, max_positions=loaded.spec.max_positions, on_batch=on_batch, stats=stats)
  return [[truncate(completion_text(tok, ids[i], gen), stop) for gen in samples] for i, samples in enumerate(out)]


def make_generate(loaded, config: GenerateConfig = GenerateConfig(),
                  on_batch: Callable[[int], None] | None = None,
                  stats: dict[str, float] | None = None) -> Callable[..., list[list[str]]]:
  """A sampler with `evals.codegen.Generate`'s signature; ``config`` supplies batch size, seed, chat.

  ``stats`` accumulates the time and work of every call (see `_tally`).
  """

  def generate(prompts: list[str | ChatPrompt], *, num_samples: int, temperature: float, top_p: float,
               max_new_tokens: int, stop: list[str]) -> list[list[str]]:
    call = dataclasses.replace(config, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                               stop=tuple(stop))
    return generate_text(loaded, prompts, call, num_samples=num_samples, on_batch=on_batch, stats=stats)

  return generate
