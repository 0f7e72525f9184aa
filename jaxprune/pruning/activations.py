"""Calibration activations of the pruning driver: tokens in, sharded micro-batches out.

The calibration sequences are checked, padded to whole micro-batches (padding
sequences weighted 0, so one compiled step serves every micro-batch), embedded
once and kept as a list of arrays sharded over the ``data`` mesh axis. Part of
the driver (`jaxprune.pruning`): it places arrays on devices.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from penzai import pz

from jaxprune.pruning import blocks as block_ops
from jaxprune.pruning import sharding
from jaxprune.model import weights
from jaxprune.errors import JaxpruneError

_embed = sharding.one_at_a_time(jax.jit(block_ops.embed))


def check_tokens(tokens, vocab_size: int | None, max_positions: int | None) -> np.ndarray:
  tokens = np.asarray(tokens)
  if tokens.ndim != 2 or tokens.size == 0:
    raise JaxpruneError(
        f"calibration tokens must be a non-empty int array [n, seqlen], got shape {tokens.shape}"
    )
  if not np.issubdtype(tokens.dtype, np.integer):
    raise JaxpruneError(f"calibration tokens must be integers, got {tokens.dtype}")
  if tokens.shape[1] < 2:
    raise JaxpruneError(f"calibration seqlen {tokens.shape[1]} is too short: use at least 2 tokens")
  if max_positions and tokens.shape[1] > max_positions:
    raise JaxpruneError(
        f"calibration seqlen {tokens.shape[1]} exceeds the model's context of {max_positions}:"
        f" use --seqlen {max_positions} or less"
    )
  if vocab_size and (tokens.min() < 0 or tokens.max() >= vocab_size):
    raise JaxpruneError(f"calibration tokens fall outside the vocabulary [0, {vocab_size}): wrong tokenizer?")
  return tokens.astype(np.int32)


def put(tree, sharding: NamedSharding):
  """Host or local arrays (the same on every process) as global arrays.

  Each process builds only its own devices' shards: under `jax.distributed` a
  process puts just its rows of every calibration micro-batch on its devices.
  (`jax.device_put` would all-gather each array to check it is the same on
  every process: a whole block's weights per call.)
  """
  if sharding.is_fully_addressable:
    return jax.device_put(tree, sharding)

  def one(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      return a if a.sharding == sharding else jax.device_put(a, sharding)  # global already: reshard
    return jax.make_array_from_callback(np.shape(a), sharding, lambda i: a[i])

  return jax.tree.map(one, tree)


def local(x: jax.Array) -> jax.Array:
  """This process's copy of a replicated statistic: masks are chosen locally
  (the same on every process), without cross-host traffic."""
  if x.is_fully_addressable:
    return x
  assert x.is_fully_replicated, "block statistics must come out replicated"
  return x.addressable_data(0)


@dataclasses.dataclass
class Batches:
  """Calibration activations as a list of sharded micro-batches."""

  x: list[jax.Array]
  weight: list[jax.Array]


CPU_SCORE_BYTES = 5 * 2**20


def auto_microbatch(block, tokens_shape: tuple[int, int], mesh: Mesh, attention_chunk: int = 0) -> int:
  """Sequences per step when `PruneConfig.microbatch` is None.

  Accelerators take 8 (large matmuls keep them busy). On CPUs a step is bound
  by memory traffic over the attention scores a chunk materializes (heads x
  chunk x seqlen float32 per sequence; chunk = seqlen unchunked), so each
  device gets as many sequences as keep them within `CPU_SCORE_BYTES`, and
  never more than the calibration set needs (no padding sequences). Measured
  on SmolLM2 with 128-query chunks: 2 sequences of 512 tokens or 4 of 256 per
  step are the fastest per sequence.
  """
  n, seqlen = tokens_shape
  devices = mesh.shape["data"]
  needed = math.ceil(n / devices)
  if mesh.devices.flat[0].platform != "cpu":
    return devices * min(needed, math.ceil(8 / devices))
  heads = 0
  for linear in block.select().at_instances_of(pz.nn.Linear).get_sequence():
    names = tuple(linear.out_axis_names)
    if "query_heads" in names:
      sizes = dict(zip(names, weights.axis_sizes(linear)[0]))
      heads = math.prod(v for k, v in sizes.items() if k != "projection")
      break
  chunk = min(attention_chunk, seqlen) if attention_chunk else seqlen
  per_sequence = max(heads, 1) * chunk * seqlen * 4
  return devices * min(needed, max(1, CPU_SCORE_BYTES // per_sequence))


def sample_weights(n: int, microbatch: int, mesh: Mesh) -> list[jax.Array]:
  """Per-sequence weights of each micro-batch: 1 for real, 0 for padding.

  Micro-batches have a fixed size (a multiple of the device count), so one
  compiled function serves them all; padding sequences contribute nothing.
  """
  devices = mesh.shape["data"]
  mb = math.ceil(microbatch / devices) * devices
  padded = math.ceil(n / mb) * mb
  w = np.zeros((padded,), np.float32)
  w[:n] = 1.0
  sharding = NamedSharding(mesh, PartitionSpec("data"))
  return [put(w[i : i + mb], sharding) for i in range(0, padded, mb)]


def microbatches(tokens: np.ndarray, microbatch: int, mesh: Mesh, prefix) -> Batches:
  ws = sample_weights(tokens.shape[0], microbatch, mesh)
  mb = ws[0].shape[0]
  tok = np.zeros((mb * len(ws), tokens.shape[1]), np.int32)
  tok[: tokens.shape[0]] = tokens
  sharding = NamedSharding(mesh, PartitionSpec("data"))
  prefix = put(pz.freeze_params(prefix), NamedSharding(mesh, PartitionSpec()))
  xs = [_embed(prefix, put(tok[i : i + mb], sharding)) for i in range(0, tok.shape[0], mb)]
  return Batches(xs, ws)
