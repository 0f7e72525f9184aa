"""The pure pieces of masked fine-tuning: model surgery, the loss and one optax train step.

Trained are only the prunable linears' weights (the matrices ``masks.apply``
zeroes, found by their HF labels as `weights.prunable_linears` finds them),
held as HF matrices ``[out, in]`` in a dict keyed by HF name, so the masks,
the checkpoints and the saved run all speak one layout. Everything else
(embeddings, norms, biases, the head) is frozen into the model tree.

Two modes:

* full: the kept weights themselves are trained. The gradient is multiplied by
  the mask before AdamW sees it (so the moments of pruned weights stay zero)
  and the new weights are projected onto the mask after every step: pruned
  weights stay exactly zero.
* LoRA (``rank > 0``): the base weights stay frozen and each linear learns
  ``scale * B @ A`` (``A: [rank, in]``, ``B: [out, rank]``, B starting at 0);
  the delta is multiplied by the mask before it is merged, so the merged
  weights have the same zeros.

Nothing here jits, shards or does I/O: the driver (`jaxprune.finetune.driver`)
compiles `train_step` and places the data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from penzai import pz
from penzai.models.transformer import model_parts

from jaxprune.model import weights


@dataclasses.dataclass(frozen=True)
class Layout:
  """Static facts of the trained linears: HF name -> (output axes, input axes) of its penzai weight."""

  linears: tuple[tuple[str, tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]], ...]
  lora_rank: int = 0
  lora_scale: float = 1.0

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(name for name, _, _ in self.linears)


class TrainState(NamedTuple):
  """What changes from step to step (and what a checkpoint holds)."""

  step: jax.Array  # int32 scalar: steps taken
  params: dict[str, Any]  # full: {name: W [out, in]}; LoRA: {name: {"a": [r, in], "b": [out, r]}}
  opt_state: optax.OptState


# --------------------------------------------------------------------------- #
# Surgery
# --------------------------------------------------------------------------- #


@pz.pytree_dataclass
class Rematerialized(pz.nn.Layer):
  """A decoder block whose activations are recomputed in the backward pass (`jax.checkpoint`).

  Only the block's input is kept for the backward pass, so training memory
  grows with one block's activations, not with the depth.
  """

  body: pz.nn.Layer

  def __call__(self, x, **side_inputs):
    tree, values = pz.unbind_variables(self.body, freeze=True)

    def run(tree, values, x, side_inputs):
      return pz.bind_variables(tree, [v.unfreeze_as_copy() for v in values])(x, **side_inputs)

    return jax.checkpoint(run)(tree, values, x, side_inputs)


def rematerialize_blocks(model: pz.nn.Layer) -> pz.nn.Layer:
  """``model`` with every `TransformerBlock` wrapped in `Rematerialized`."""
  return model.select().at_instances_of(model_parts.TransformerBlock).apply(Rematerialized)


def layout_of(model: pz.nn.Layer, names, lora_rank: int = 0, lora_alpha: float = 16.0) -> Layout:
  """The `Layout` of the linears ``names`` of ``model`` (all of them must exist)."""
  linears = weights.prunable_linears(model, names=set(names))
  entries = []
  for name in sorted(linears):
    linear = linears[name]
    outs, ins = weights.axis_sizes(linear)
    entries.append((name, tuple(zip(linear.out_axis_names, outs)), tuple(zip(linear.in_axis_names, ins))))
  return Layout(tuple(entries), lora_rank, lora_alpha / lora_rank if lora_rank else 1.0)


def split_trainable(model: pz.nn.Layer, layout: Layout) -> tuple[Any, dict[str, jax.Array]]:
  """(the model tree with the trained linears' weights unbound and every other parameter frozen,
  the trained weights as HF matrices)."""
  found = weights.prunable_linears(model, names=set(layout.names))
  matrices = {name: weights.hf_matrix(found[name]) for name in layout.names}
  tree, _ = pz.unbind_params(model, predicate=lambda p: p.label in matrices)
  return pz.freeze_params(tree), matrices


# --------------------------------------------------------------------------- #
# Pure functions
# --------------------------------------------------------------------------- #


def init_lora(key: jax.Array, base: Mapping[str, jax.Array], rank: int) -> dict[str, dict[str, jax.Array]]:
  """LoRA factors for every matrix of ``base``: A ~ N(0, 1/in), B = 0 (the model starts unchanged)."""
  keys = jax.random.split(key, len(base))
  params = {}
  for k, (name, w) in zip(keys, sorted(base.items())):
    out_features, in_features = w.shape
    a = jax.random.normal(k, (rank, in_features), jnp.float32) / jnp.sqrt(in_features)
    params[name] = {"a": a.astype(w.dtype), "b": jnp.zeros((out_features, rank), w.dtype)}
  return params


def merged_weights(params, base, masks, layout: Layout) -> dict[str, jax.Array]:
  """The trained linears' HF matrices: the weights themselves, or base + mask * scale * B @ A."""
  if not layout.lora_rank:
    return dict(params)
  out = {}
  for name in layout.names:
    delta = layout.lora_scale * (params[name]["b"] @ params[name]["a"])
    out[name] = base[name] + jnp.where(masks[name], delta, jnp.zeros((), delta.dtype)).astype(base[name].dtype)
  return out


def bind(tree, matrices: Mapping[str, jax.Array], layout: Layout):
  """The penzai model with ``matrices`` as the trained linears' weights."""
  params = [pz.Parameter(value=weights.named_from_hf(matrices[name], dict(outs), dict(ins)), label=name)
            for name, outs, ins in layout.linears]
  return pz.bind_variables(tree, params)


def _nll_sum(logits: jax.Array, targets: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  chosen = jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
  return -(chosen if valid is None else jnp.where(valid, chosen, 0.0)).sum()


def _trunk_and_head(model):
  """(embedding and decoder blocks, what follows them: final norm and unembedding) of a TransformerLM."""
  body = model.body.sublayers
  last = max(i for i, layer in enumerate(body) if isinstance(layer, (Rematerialized, model_parts.TransformerBlock)))
  return pz.nn.Sequential(list(body[:last + 1])), pz.nn.Sequential(list(body[last + 1:]))


def next_token_loss(model, tokens: jax.Array, chunk: int = 0) -> jax.Array:
  """Mean next-token cross entropy of ``model`` on int tokens [batch, seq] (float32).

  With ``chunk``, the head and the loss run ``chunk`` positions at a time in a
  rematerialised scan: only one chunk's logits [batch, chunk, vocabulary] are
  ever live (a 152k vocabulary at 8 x 512 tokens is 2.5 GB of float32 logits
  per copy otherwise). The same number to float32 rounding.
  """
  batch, seq = tokens.shape
  if not chunk or chunk >= seq - 1:
    logits = model(pz.nx.wrap(tokens).tag("batch", "seq")).unwrap("batch", "seq", "vocabulary")
    return _nll_sum(logits[:, :-1], tokens[:, 1:]) / (batch * (seq - 1))
  trunk, head = _trunk_and_head(model)
  hidden = trunk(pz.nx.wrap(tokens).tag("batch", "seq"), token_positions=pz.nx.arange("seq", seq))
  hidden = hidden.unwrap("batch", "seq", "embedding")[:, :-1]
  count = -(-(seq - 1) // chunk)
  pad = count * chunk - (seq - 1)
  split = lambda x: jnp.moveaxis(x.reshape(batch, count, chunk, *x.shape[2:]), 1, 0)
  hidden = split(jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))))
  targets = split(jnp.pad(tokens[:, 1:], ((0, 0), (0, pad))))
  valid = split(jnp.broadcast_to(jnp.arange(count * chunk) < seq - 1, (batch, count * chunk)))

  def one_chunk(total, xs):
    h, t, v = xs
    logits = head(pz.nx.wrap(h).tag("batch", "seq", "embedding")).unwrap("batch", "seq", "vocabulary")
    return total + _nll_sum(logits, t, v), None

  total, _ = jax.lax.scan(jax.checkpoint(one_chunk), jnp.zeros((), jnp.float32), (hidden, targets, valid))
  return total / (batch * (seq - 1))


def loss_fn(params, tree, base, masks, tokens: jax.Array, layout: Layout, loss_chunk: int = 0) -> jax.Array:
  return next_token_loss(bind(tree, merged_weights(params, base, masks, layout), layout), tokens, loss_chunk)


def keep_masked(tree: Mapping[str, jax.Array], masks: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """Each matrix with its pruned entries set to exactly zero."""
  return {k: jnp.where(masks[k], v, jnp.zeros((), v.dtype)) for k, v in tree.items()}


def optimizer(lr: float, steps: int, *, warmup_fraction: float = 0.1, weight_decay: float = 0.0,
              clip: float = 1.0, end_fraction: float = 0.1) -> optax.GradientTransformation:
  """AdamW with linear warmup and cosine decay to ``end_fraction * lr``, after global-norm clipping."""
  warmup = int(steps * warmup_fraction)
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=lr, warmup_steps=warmup, decay_steps=max(steps, warmup + 1),
      end_value=lr * end_fraction)
  parts = [optax.clip_by_global_norm(clip)] if clip > 0 else []
  return optax.chain(*parts, optax.adamw(schedule, weight_decay=weight_decay))


def init_state(params, opt: optax.GradientTransformation) -> TrainState:
  return TrainState(jnp.zeros((), jnp.int32), params, opt.init(params))


def train_step(state: TrainState, tree, base, masks, tokens: jax.Array, *, layout: Layout,
               opt: optax.GradientTransformation, loss_chunk: int = 0) -> tuple[TrainState, jax.Array]:
  """One AdamW step on a batch of tokens [batch, seq]; returns the new state and the batch's loss."""
  loss, grads = jax.value_and_grad(loss_fn)(state.params, tree, base, masks, tokens, layout, loss_chunk)
  if not layout.lora_rank:
    grads = keep_masked(grads, masks)
  updates, opt_state = opt.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if not layout.lora_rank:
    params = keep_masked(params, masks)  # exact zeros, whatever the optimizer's arithmetic
  return TrainState(state.step + 1, params, opt_state), loss
