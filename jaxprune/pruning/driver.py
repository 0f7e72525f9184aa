"""The pruning driver: block by block, jit-compiled, sharded over devices.

For every decoder block:
  1. insert `InputProbe`s in front of its prunable linears (model surgery),
  2. run the dense block over the calibration activations, micro-batch by
     micro-batch, with one jit-compiled function that returns the block's
     outputs and the statistics of all its linears,
  3. score every linear (the only method-specific step) and choose masks,
  4. (sequential) re-run the pruned block on the same inputs; its outputs are
     the next block's inputs.

Calibration activations are sharded over a ``data`` mesh axis spanning all
devices (across hosts too, under `jax.distributed`); statistics are summed
across it by XLA. Each block's weights are placed on the mesh only while it is
pruned (split over a ``model`` axis if the mesh has one, `jaxprune.pruning.sharding`),
from host memory when the model was loaded with ``params="host"``: the block
being pruned and the next one's transfer are all that is on the devices.
This module is the only place in the pruning engine that calls `jax.jit` or
builds a mesh; what differs between methods comes from `jaxprune.pruning.methods`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from penzai import pz

from jaxprune.model import attention
from jaxprune.pruning import activations, sharding
from jaxprune.pruning import masks as masks_lib
from jaxprune.pruning import blocks as block_ops
from jaxprune.model import weights
from jaxprune.pruning import methods, stats
from jaxprune.pruning.blocks import apply_result, split_blocks

from jaxprune.pruning.sharding import MeshConfig, data_mesh

__all__ = ["MeshConfig", "PruneConfig", "PruneResult", "apply_result", "data_mesh", "prune", "split_blocks"]
from jaxprune.errors import JaxpruneError
from jaxprune.model.spec import block_relative

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PruneConfig:
  """Options of one pruning run (everything that changes the masks).

  Attributes:
    sparsity: fraction pruned (unstructured); ignored for N:M.
    pattern: ``unstructured`` or ``N:M``.
    method: a `jaxprune.pruning.methods` name: ``wanda``, ``magnitude``, ``ria``, ``sparsegpt``.
    sequential: take each block's statistics from the outputs of the already
      pruned blocks (as the official Wanda) instead of the dense model.
    microbatch: calibration sequences per jit call (rounded up to a multiple of
      the device count); bounds activation memory. None: 8 on accelerators; on
      CPUs as many per device as keep a step's attention scores within
      `CPU_SCORE_BYTES` (see `auto_microbatch`).
    attention_chunk: queries per chunk of the calibration passes' causal
      attention (`jaxprune.model.attention`: each chunk meets only the keys it can
      see); 0 runs penzai's attention unchanged. Like ``microbatch`` it changes
      the order of float32 sums, not what is computed.
    per_row: magnitude only: one threshold per row instead of per matrix.
    ria_exponent: RIA's exponent on the activation norm.
    block_sparsity: optional per-block sparsities; overrides ``sparsity``
      for unstructured patterns.
    allocation: ``uniform``, or ``owl`` to choose per-block sparsities from
      the dense model's outlier ratios (Yin et al., 2024).
    owl_m: OWL's outlier threshold M (multiples of the block's mean score).
    owl_lambda: OWL's band: block sparsities stay within sparsity +- lambda.
  """

  sparsity: float = 0.5
  pattern: str = "unstructured"
  method: str = "wanda"
  sequential: bool = True
  microbatch: int | None = None
  attention_chunk: int = 128
  per_row: bool = False
  ria_exponent: float = 0.5
  sparsegpt_blocksize: int = 128
  sparsegpt_percdamp: float = 0.01
  block_sparsity: tuple[float, ...] | None = None
  allocation: str = "uniform"
  owl_m: float = 5.0
  owl_lambda: float = 0.08

  def validate(self) -> masks_lib.Pattern:
    methods.get(self.method)  # an unknown method: one line naming the choices
    if self.allocation not in ("uniform", "owl"):
      raise JaxpruneError(f"unknown allocation {self.allocation!r}: choose uniform or owl")
    if self.allocation == "owl" and self.pattern != "unstructured":
      raise JaxpruneError("OWL allocates unstructured sparsity per block: use --pattern unstructured with owl")
    if self.microbatch is not None and self.microbatch < 1:
      raise JaxpruneError(f"microbatch {self.microbatch} must be at least 1")
    if self.attention_chunk < 0:
      raise JaxpruneError(f"attention chunk {self.attention_chunk} must be at least 0 (0: unchunked)")
    return masks_lib.parse_pattern(self.pattern, self.sparsity)


@dataclasses.dataclass(frozen=True)
class PruneResult:
  """Masks (HF name -> bool [out, in], True = kept) and what produced them.

  Attributes:
    masks: the keep-masks.
    statistics: HF name -> Wanda's per-input-feature statistic [in].
    report: HF name -> achieved sparsity, plus ``__total__``.
    weights: HF name -> updated weights [out, in] (SparseGPT only, else empty).
    block_sparsity: the sparsity each block was pruned at.
    timings: seconds per phase, over every process of a resumed run, and
      ``earlier_processes``: the wall time of the processes before this one.
    microbatch: calibration sequences per compiled step (None without calibration).
    dtypes: the parameters' dtype, the compute (activation) dtype and the
      statistics' dtype, as they were in the run.
    params: where the model's parameters lived: ``host`` (streamed to the
      devices block by block) or ``device``.
    memory: the measured peaks (`jaxprune.memory.Peak.record`).
    mesh: the mesh's axis sizes.
  """

  masks: dict[str, np.ndarray]
  statistics: dict[str, np.ndarray]
  report: dict[str, float]
  weights: dict[str, np.ndarray]
  block_sparsity: tuple[float, ...]
  timings: dict[str, float]
  microbatch: int | None = None
  dtypes: dict[str, str] = dataclasses.field(default_factory=dict)
  params: str = "device"
  memory: dict[str, Any] = dataclasses.field(default_factory=dict)
  mesh: dict[str, int] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- #
# Model structure


# Every program of the driver goes through `sharding.one_at_a_time` (a no-op but on multi-process CPU).
_block_forward = sharding.one_at_a_time(jax.jit(block_ops.block_forward))
_block_statistics = sharding.one_at_a_time(jax.jit(block_ops.block_statistics))
_choose_masks = sharding.one_at_a_time(
    jax.jit(methods.choose_masks, static_argnames=("method", "pattern", "config")))
_update_matrix = sharding.one_at_a_time(
    jax.jit(methods.update_matrix, static_argnames=("method", "pattern", "config")))


# --------------------------------------------------------------------------- #
# Driver
# --------------------------------------------------------------------------- #


def _run(block, batches: activations.Batches, mesh: Mesh, *, probe_names: set[str] | None, with_gram: bool,
         attention_chunk: int, outputs: bool = True):
  """Forward ``block`` over all micro-batches; return (outputs or None, stats by name)."""
  if probe_names:
    block = stats.insert_probes(block, probe_names, with_gram)
  if attention_chunk:
    block = attention.chunk_attention(block, attention_chunk)
  block_def, values = block_ops.canonical(block)
  # Weights split over `model` (or replicated), statistics replicated: the same
  # shardings for every call, so the compiled function is reused across
  # micro-batches and blocks. The driver placed the block's weights already.
  values = sharding.place_values(values, mesh, activations.put)
  state_labels = [v.label for v in values if isinstance(v, pz.StateVariableValue)]
  fixed = [v for v in values if not isinstance(v, pz.StateVariableValue)]
  state = [v for v in values if isinstance(v, pz.StateVariableValue)]
  outs = []
  for x, w in zip(batches.x, batches.weight):
    if outputs:
      y, state = _block_forward(block_def, fixed + state, x, w)
      outs.append(y)
    else:
      state = _block_statistics(block_def, fixed + state, x, w)
  by_label = {s.label: s.value for s in state}
  return (outs if outputs else None), [(label, by_label[label]) for label in state_labels]


def prune(loaded, calib_tokens, config: PruneConfig = PruneConfig(), *, mesh: Mesh | None = None,
          resume: Any = None, on_block: Callable[[int, int, dict], None] | None = None) -> PruneResult:
  """Prune the decoder-block linears of a loaded model.

  Args:
    loaded: a `converters.LoadedModel` (its penzai model and spec).
    calib_tokens: int array [n, seqlen] of calibration sequences (None for
      methods that need no calibration).
    config: the options (`PruneConfig`).
    mesh: a device mesh with a ``data`` axis (and optionally ``model``), or a
      `MeshConfig` (default: every device on ``data``). The model's
      parameters may be NumPy arrays in host memory
      (``converters.load_model(..., params="host")``): each block then comes
      to the devices only while it is pruned.
    resume: a `jaxprune.store.BlockCheckpointer` that saves state after each
      block and restores it on a rerun.
    on_block: called as ``on_block(done_blocks, total_blocks, info)``.

  Returns:
    a `PruneResult`.

  Example:
    >>> result = prune(loaded, tokens, PruneConfig(sparsity=0.5))
    >>> pruned = masks.apply(loaded.model, result.masks)
  """
  base_pattern = config.validate()
  method = methods.get(config.method)
  mesh = sharding.as_mesh(mesh)
  prefix, blocks, _ = split_blocks(loaded.model)
  sharding.check_model_axis(blocks[0], mesh)
  tokens = None
  if method.needs_calibration:
    tokens = activations.check_tokens(calib_tokens, loaded.spec.vocab_size, loaded.spec.max_positions)
  microbatch = config.microbatch
  if microbatch is None and tokens is not None:
    microbatch = activations.auto_microbatch(blocks[0], tokens.shape, mesh, config.attention_chunk)
    log.info("%d calibration sequences per step", microbatch)
  per_block = config.block_sparsity
  if config.allocation == "owl" and per_block is None:
    per_block = owl_allocation(loaded.model, tokens, config, mesh, microbatch)
  patterns = block_patterns(base_pattern, per_block, len(blocks))
  return _prune_blocks(prefix, blocks, tokens, config, patterns, mesh, microbatch, resume, on_block, loaded.model)


def block_patterns(base: masks_lib.Pattern, per_block: tuple[float, ...] | None,
                   n_blocks: int) -> list[masks_lib.Pattern]:
  """The pattern of every block: ``base``, or its per-block sparsities (unstructured only)."""
  if per_block is not None and len(per_block) != n_blocks:
    raise JaxpruneError(f"block_sparsity has {len(per_block)} entries for {n_blocks} blocks")
  if per_block is None or base.structured:
    return [base] * n_blocks
  return [masks_lib.Pattern(sparsity=float(s)) for s in per_block]


def owl_allocation(lm, tokens, config: PruneConfig, mesh: Mesh, microbatch: int | None) -> tuple[float, ...]:
  """OWL's per-block sparsities from one dense pass of Wanda statistics."""
  from jaxprune.pruning import allocation

  dense_config = dataclasses.replace(config, allocation="uniform", sequential=False, method="wanda")
  prefix, blocks, _ = split_blocks(lm)
  dense = _prune_blocks(prefix, blocks, tokens, dense_config, [dense_config.validate()] * len(blocks), mesh,
                        microbatch, None, None, lm)
  matrices = {n: weights.hf_matrix(l) for n, l in weights.prunable_linears(lm).items()}
  ratios = allocation.block_ratios(matrices, {n: jnp.asarray(v) for n, v in dense.statistics.items()},
                                   config.owl_m)
  chosen = allocation.owl_sparsities(ratios, config.sparsity, config.owl_lambda)
  log.info("OWL block sparsities: %s", ", ".join(f"{s:.3f}" for s in chosen))
  return chosen


@dataclasses.dataclass(frozen=True)
class _BlockResult:
  masks: dict[str, np.ndarray]
  weights: dict[str, np.ndarray]
  statistics: dict[str, np.ndarray]
  batches: activations.Batches | None  # the next block's inputs


def _prune_block(block, placed, batches: activations.Batches | None, pattern: masks_lib.Pattern,
                 config: PruneConfig, where: sharding.Placement, prefetch: Callable[[], None],
                 last: bool, timings: dict[str, float]) -> _BlockResult:
  """Statistics, masks (and updated weights) of one block, and the next block's inputs.

  ``block`` is the model's own block, ``placed`` its copy on the mesh; the
  dense weights are freed once the masks are chosen, and ``prefetch`` then
  starts the next block's transfer, which overlaps this block's pruned pass.
  """
  mesh = where.mesh
  method = methods.get(config.method)
  linears = weights.prunable_linears(placed)
  for name, linear in linears.items():
    masks_lib.check_pattern_fits(pattern, math.prod(weights.axis_sizes(linear)[1]), name)
  collected: dict[str, stats.Finalized] = {}
  dense_out = None
  if batches is not None:
    t0 = time.perf_counter()
    # The sequential pass's next inputs come from the pruned block: the dense outputs are not needed.
    dense_out, states = _run(placed, batches, mesh, probe_names=set(linears), with_gram=method.gram,
                             attention_chunk=config.attention_chunk, outputs=not config.sequential)
    name_of = {f"stats:{block_relative(n)}": n for n in linears}
    for label, state in states:
      collected[name_of[label]] = stats.finalize(sharding.replicate(state, mesh))
    jax.block_until_ready((dense_out, collected))  # time the phase, not its dispatch
    timings["calibration_forward"] += time.perf_counter() - t0
    where.observe()

  t0 = time.perf_counter()
  block_masks, block_weights = {}, {}
  matrices = {name: weights.hf_matrix(linear) for name, linear in linears.items()}
  if method.updates_weights:
    for name, w in matrices.items():
      block_weights[name], block_masks[name] = _update_matrix(w, collected[name].hessian, method.name, pattern, config)
  else:
    ones = lambda w: activations.put(np.ones((w.shape[1],), np.float32), NamedSharding(mesh, PartitionSpec()))
    sq = {block_relative(n): collected[n].sq_norm if n in collected else ones(w) for n, w in matrices.items()}
    chosen = _choose_masks({block_relative(n): w for n, w in matrices.items()}, sq, method.name, pattern, config)
    block_masks = {n: chosen[block_relative(n)] for n in matrices}
  # Masks are chosen where the weights' rows live, then gathered matrix by matrix.
  block_stats = {n: np.asarray(activations.local(collected[n].sq_norm)) for n in matrices if n in collected}
  block_masks = {k: np.asarray(activations.local(sharding.replicate(v, mesh))) for k, v in block_masks.items()}
  block_weights = {k: np.asarray(activations.local(sharding.replicate(v, mesh))) for k, v in block_weights.items()}
  del matrices, linears
  timings["masks"] += time.perf_counter() - t0

  if batches is None or last:  # the last block's outputs feed nothing
    where.release(placed, block)
    prefetch()
    return _BlockResult(block_masks, block_weights, block_stats, None)
  if not config.sequential:
    where.release(placed, block)
    prefetch()
    return _BlockResult(block_masks, block_weights, block_stats, activations.Batches(dense_out, batches.weight))
  t0 = time.perf_counter()
  pruned = block_ops.apply_pruning(placed, block_masks, block_weights)
  where.watched.add(sharding.parameter_arrays(pruned))
  where.observe()
  where.release(placed, block, pruned)  # the dense weights; what the pruned block shares stays
  del placed
  prefetch()  # the next block's transfer overlaps the pruned pass
  pruned_out, _ = _run(pruned, batches, mesh, probe_names=None, with_gram=False,
                       attention_chunk=config.attention_chunk)
  jax.block_until_ready(pruned_out)
  where.observe()
  where.release(pruned, block)
  timings["pruned_forward"] += time.perf_counter() - t0
  return _BlockResult(block_masks, block_weights, block_stats, activations.Batches(pruned_out, batches.weight))


def _prune_blocks(prefix, blocks, tokens, config: PruneConfig, patterns: list[masks_lib.Pattern], mesh: Mesh,
                  microbatch: int | None, resume: Any, on_block, model=None) -> PruneResult:
  """The block loop: embed the calibration set once, then `_prune_block` each block in turn.

  Only the block being pruned and the next one's transfer are on the devices
  (when the model's parameters live in host memory).
  """
  started = time.perf_counter()
  # Phases summed over every process of a resumed run; "earlier_processes": the wall time of those
  # before this one (0 unless resumed), so that a run's total is its whole time.
  timings = {"calibration_forward": 0.0, "masks": 0.0, "pruned_forward": 0.0, "checkpoint": 0.0,
             "earlier_processes": 0.0}
  where = sharding.Placement(mesh, model if model is not None else pz.nn.Sequential(list(blocks)), activations.put)
  result_masks: dict[str, np.ndarray] = {}
  result_stats: dict[str, np.ndarray] = {}
  new_weights: dict[str, np.ndarray] = {}
  start_block, batches = 0, None
  if resume is not None:
    restored = resume.restore(mesh)
    if restored is not None:
      start_block, result_masks, result_stats, new_weights, xs, earlier = restored
      timings = {k: v + earlier.get(k, 0.0) for k, v in timings.items()}
      if xs is not None:
        batches = activations.Batches(xs, activations.sample_weights(tokens.shape[0], microbatch, mesh))
      log.info("resuming after block %d", start_block)
  if tokens is not None and batches is None:
    t0 = time.perf_counter()
    batches = activations.microbatches(tokens, microbatch, mesh, prefix)
    timings["calibration_forward"] += time.perf_counter() - t0
  compute = str(batches.x[0].dtype) if batches is not None else None

  upcoming = {}
  for b in range(start_block, len(blocks)):
    last = b == len(blocks) - 1
    placed = upcoming.pop(b) if b in upcoming else where.put(blocks[b])

    def prefetch(b=b, last=last):
      if not last:
        upcoming[b + 1] = where.put(blocks[b + 1])

    done = _prune_block(blocks[b], placed, batches, patterns[b], config, where, prefetch, last, timings)
    del placed
    batches = done.batches
    result_masks.update(done.masks)
    result_stats.update(done.statistics)
    new_weights.update(done.weights)
    if resume is not None:
      t0 = time.perf_counter()
      so_far = {**timings, "earlier_processes": timings["earlier_processes"] + time.perf_counter() - started}
      resume.save(b + 1, done.masks, done.statistics, done.weights, batches.x if batches else None, so_far)
      timings["checkpoint"] += time.perf_counter() - t0
    if on_block is not None:
      on_block(b + 1, len(blocks), {"sparsity": patterns[b].sparsity})

  if resume is not None:
    resume.finish()
  dtypes = {"parameters": block_ops.parameter_dtype(blocks[0]), "compute": compute,
            "statistics": str(next(iter(result_stats.values())).dtype) if result_stats else None}
  return PruneResult(
      masks=result_masks,
      statistics=result_stats,
      report=masks_lib.sparsity_report(result_masks),
      weights=new_weights,
      block_sparsity=tuple(p.sparsity for p in patterns),
      timings=timings,
      microbatch=microbatch,
      dtypes=dtypes,
      params="device" if sharding.parameter_arrays(blocks[0]) else "host",
      memory=where.peak.record(),
      mesh=dict(mesh.shape),
  )

