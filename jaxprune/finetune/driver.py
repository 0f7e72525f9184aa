"""The fine-tuning driver: jit, the ``data`` mesh, the step loop and periodic checkpoints.

`train` takes a pruned penzai model (masks and any updated weights of its run
already applied), its masks and the training tokens ``[steps * batch, seqlen]``
and runs ``steps`` compiled `step.train_step` calls: step ``i`` trains on rows
``i * batch ... (i + 1) * batch``, sharded over the ``data`` axis of a mesh of
all devices (parameters and optimizer state replicated; XLA sums the gradients
across the axis). Each decoder block is rematerialised in the backward pass.
No randomness besides the LoRA initialisation (an explicit key from the seed),
so a run resumed from a checkpoint ends with the same weights as one that was
never interrupted.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxprune import pruning
from jaxprune.model import attention
from jaxprune.errors import JaxpruneError
from jaxprune.finetune import step as step_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that determines the trained weights (besides the model, masks and text).

  Attributes:
    steps: optimizer steps.
    lr: peak learning rate of AdamW.
    batch: sequences per step (a multiple of the device count).
    seqlen: tokens per sequence.
    warmup: fraction of the steps with a linear warmup from 0; cosine decay after.
    weight_decay: AdamW's decoupled weight decay.
    clip: global gradient-norm clip (0: none).
    lora: rank of a masked low-rank update instead of full fine-tuning (0: full).
    lora_alpha: LoRA scale numerator (the delta is ``alpha / rank * B @ A``).
    seed: seed of the training sample (and of the LoRA initialisation).
    attention_chunk: queries per chunk of causal attention (0: penzai's attention).
    loss_chunk: positions per chunk of the head and loss (0: all at once; see `step.next_token_loss`).
  """

  steps: int = 200
  lr: float = 5e-5
  batch: int = 8
  seqlen: int = 256
  warmup: float = 0.1
  weight_decay: float = 0.0
  clip: float = 1.0
  lora: int = 0
  lora_alpha: float = 16.0
  seed: int = 0
  attention_chunk: int = 128
  loss_chunk: int = 128

  def validate(self) -> None:
    if self.steps < 1:
      raise JaxpruneError(f"--steps {self.steps} must be at least 1")
    if not self.lr > 0:
      raise JaxpruneError(f"--lr {self.lr} must be above 0 (e.g. --lr 5e-5)")
    if self.batch < 1:
      raise JaxpruneError(f"--batch {self.batch} must be at least 1")
    if self.seqlen < 2:
      raise JaxpruneError(f"--seqlen {self.seqlen} must be at least 2")
    if not 0 <= self.warmup < 1:
      raise JaxpruneError(f"--warmup {self.warmup} is a fraction of the steps: give a value in [0, 1)")
    if self.weight_decay < 0 or self.clip < 0:
      raise JaxpruneError("--weight-decay and --clip must be 0 or more")
    if self.lora < 0:
      raise JaxpruneError(f"--lora {self.lora} is a rank: give 0 (full fine-tuning) or more")
    if self.attention_chunk < 0 or self.loss_chunk < 0:
      raise JaxpruneError("--attention-chunk and --loss-chunk must be 0 (unchunked) or more")


@dataclasses.dataclass(frozen=True)
class TrainResult:
  """Trained HF matrices of the prunable linears (merged for LoRA), the loss of every step, timings."""

  weights: dict[str, np.ndarray]
  losses: tuple[float, ...]
  seconds: float
  resumed_from: int = 0


def check_batch(batch: int, mesh) -> None:
  if batch % mesh.size:
    raise JaxpruneError(f"--batch {batch} is not a multiple of the {mesh.size} devices the batch is split over:"
                        f" use --batch {max(mesh.size, batch // mesh.size * mesh.size)}")


def prepare(model, masks: Mapping[str, np.ndarray], config: TrainConfig):
  """(layout, frozen model tree, initial trainable params, frozen base matrices) of a pruned model."""
  layout = step_lib.layout_of(model, masks, config.lora, config.lora_alpha)
  missing = sorted(set(masks) - set(layout.names))
  if missing:
    raise JaxpruneError(f"masks name {len(missing)} linears this model lacks (first: {missing[0]}):"
                        " these masks come from another model; pass the model they were made for")
  if config.attention_chunk:
    model = attention.chunk_attention(model, config.attention_chunk)
  tree, matrices = step_lib.split_trainable(step_lib.rematerialize_blocks(model), layout)
  if config.lora:
    return layout, tree, step_lib.init_lora(jax.random.key(config.seed), matrices, config.lora), matrices
  return layout, tree, matrices, {}


def train(model, masks: Mapping[str, np.ndarray], tokens: np.ndarray, config: TrainConfig, *,
          checkpoints=None, mesh=None,
          on_step: Callable[[int, int, float], None] | None = None,
          on_resume: Callable[[int, int], None] | None = None) -> TrainResult:
  """Fine-tune the kept weights of ``model``'s prunable linears on ``tokens``.

  Args:
    model: the pruned penzai model (pruned weights already zero).
    masks: HF name -> bool keep-mask [out, in] of every prunable linear.
    tokens: int [steps * batch, seqlen] training sequences, in step order.
    config: the `TrainConfig`.
    checkpoints: a `checkpoints.StepCheckpointer` (or None): restored from
      first, saved to every ``checkpoints.every`` steps.
    mesh: a mesh with a ``data`` axis (default: all devices).
    on_step: ``on_step(steps done, steps, loss)`` after every step.
    on_resume: ``on_resume(steps done, steps)`` once a checkpoint was restored.
  """
  config.validate()
  mesh = mesh if mesh is not None else pruning.data_mesh()
  check_batch(config.batch, mesh)
  tokens = np.asarray(tokens, np.int32)
  want = (config.steps * config.batch, config.seqlen)
  if tokens.shape != want:
    raise JaxpruneError(f"training tokens of shape {tokens.shape}: need steps x batch by seqlen = {want}")
  replicated, rows = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
  layout, tree, params, base = prepare(model, masks, config)
  opt = step_lib.optimizer(config.lr, config.steps, warmup_fraction=config.warmup,
                           weight_decay=config.weight_decay, clip=config.clip)
  put = lambda tree_: jax.device_put(tree_, replicated)
  state = put(jax.tree.map(jnp.copy, step_lib.init_state(params, opt)))  # donated: never the model's own buffers
  tree, base = put(tree), put(base)
  masks_on = put({name: jnp.asarray(masks[name]) for name in layout.names})
  losses: list[float] = []
  if checkpoints is not None:
    restored = checkpoints.restore(state)
    if restored is not None:
      state, losses = restored
      if on_resume is not None:
        on_resume(int(state.step), config.steps)
  resumed_from = int(state.step)
  step_fn = jax.jit(functools.partial(step_lib.train_step, layout=layout, opt=opt, loss_chunk=config.loss_chunk),
                    donate_argnums=0)
  started = time.perf_counter()
  for i in range(resumed_from, config.steps):
    batch = jax.device_put(tokens[i * config.batch:(i + 1) * config.batch], rows)
    state, loss = step_fn(state, tree, base, masks_on, batch)
    losses.append(float(loss))
    if not np.isfinite(losses[-1]):
      raise JaxpruneError(f"the loss became {losses[-1]} at step {i + 1}: lower --lr (now {config.lr})")
    if checkpoints is not None and checkpoints.due(i + 1, config.steps):
      checkpoints.save(i + 1, state, losses)
    if on_step is not None:
      on_step(i + 1, config.steps, losses[-1])
  seconds = time.perf_counter() - started
  merged = step_lib.merged_weights(state.params, base, masks_on, layout)
  return TrainResult({k: np.asarray(v) for k, v in merged.items()}, tuple(losses), seconds, resumed_from)
