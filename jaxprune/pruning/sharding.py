"""Meshes and parameter shardings of the pruning driver.

A mesh has a ``data`` axis (calibration micro-batches are split over it) and
optionally a ``model`` axis that splits each block's weights the way tensor
parallelism does: the query/key/value projections by their heads (columns),
the output projection by its input heads (rows), gate/up by their MLP
neurons (columns) and down by its input neurons (rows). Penzai's weights are
named arrays, so a parameter's `PartitionSpec` comes from its axis names, not
its positions. The driver (`jaxprune.pruning`) places one block at a time with
`place` and frees it with `free`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from penzai import pz

from jaxprune import memory
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)

# Axes of a block's weights that `model` may split, in order of preference:
# whole (KV) heads first, so queries, keys, values and the output projection
# split alike and attention stays local to each shard.
HEAD_AXES = ("heads", "head_groups", "query_heads")
NEURON_AXES = ("neurons",)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """The ``--mesh data=D,model=M`` option.

  Attributes:
    data: devices the calibration batches are split over (None: all devices
      not used by ``model``).
    model: devices each block's weights are split over (1: replicated).
  """

  data: int | None = None
  model: int = 1

  @classmethod
  def parse(cls, text: str | None) -> MeshConfig:
    """``data=8``, ``data=4,model=2``, ``model=2`` (None or '': the default)."""
    if not text:
      return cls()
    sizes = {}
    for part in text.split(","):
      m = re.fullmatch(r"\s*(data|model)\s*=\s*(\d+)\s*", part)
      if not m or m.group(1) in sizes:
        raise JaxpruneError(f"--mesh {text!r} is not data=D,model=M: e.g. --mesh data=4,model=2")
      sizes[m.group(1)] = int(m.group(2))
    config = cls(**sizes)
    config.validate()
    return config

  def validate(self) -> None:
    for name in ("data", "model"):
      value = getattr(self, name)
      if value is not None and value < 1:
        raise JaxpruneError(f"--mesh {name}={value} must be at least 1")

  def build(self, devices=None) -> Mesh:
    """The 2-D mesh (``data``, ``model``) over the first data x model ``devices`` (default: all)."""
    self.validate()
    devices = list(devices if devices is not None else jax.devices())
    data = self.data if self.data is not None else len(devices) // self.model
    if data < 1 or data * self.model > len(devices):
      raise JaxpruneError(f"--mesh data={self.data or data},model={self.model} needs {max(data, 1) * self.model}"
                          f" devices but {len(devices)} are visible: make data x model at most {len(devices)}")
    if self.model == 1:
      return Mesh(np.asarray(devices[:data]), ("data",))
    return Mesh(np.asarray(devices[: data * self.model]).reshape(data, self.model), ("data", "model"))


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh named ``data`` over all (global) devices."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices.reshape(-1), ("data",))


def as_mesh(mesh: Mesh | MeshConfig | None) -> Mesh:
  """A mesh from a mesh, a `MeshConfig`, or None (every device on ``data``)."""
  if isinstance(mesh, Mesh):
    return mesh
  return (mesh or MeshConfig()).build()


def model_size(mesh: Mesh) -> int:
  return dict(mesh.shape).get("model", 1)


def check_model_axis(block, mesh: Mesh) -> None:
  """Refuse a ``model`` size that does not divide the attention heads or the MLP width."""
  m = model_size(mesh)
  if m == 1:
    return
  heads, neurons = 0, 0
  for value in _named_values(block):
    shape = value.named_shape
    heads = max(heads, math.prod(shape[a] for a in HEAD_AXES if a in shape) if set(HEAD_AXES) & set(shape) else 0)
    neurons = max(neurons, *(shape[a] for a in NEURON_AXES if a in shape), 0)
  for what, size in (("attention heads", heads), ("MLP width", neurons)):
    if size % m:
      raise JaxpruneError(f"--mesh model={m} does not divide the model's {size} {what}: choose a model size"
                          f" that divides both {heads} heads and {neurons} MLP neurons")


def partition_spec(value: pz.nx.NamedArray, model: int) -> PartitionSpec:
  """The spec of one parameter: the first head or neuron axis ``model`` divides, else replicated."""
  names = list(value.named_shape)
  axes = [None] * (len(value.positional_shape) + len(names))
  if model > 1:
    for axis in (*HEAD_AXES, *NEURON_AXES):
      if axis in value.named_shape and value.named_shape[axis] % model == 0:
        axes[len(value.positional_shape) + names.index(axis)] = "model"
        break
  return PartitionSpec(*axes)


def _named_values(block) -> list[pz.nx.NamedArrayBase]:
  values = pz.freeze_params(block).select().at_instances_of(pz.ParameterValue).get_sequence()
  return [v.value for v in values if isinstance(v.value, pz.nx.NamedArrayBase)]


def _as_named(value) -> pz.nx.NamedArray:
  if isinstance(value, pz.nx.NamedArrayView):
    names = tuple(value.named_shape)
    return pz.nx.wrap(value.unwrap(*names)).tag(*names)
  return value


def place_values(values, mesh: Mesh, put) -> list:
  """Frozen variable values on ``mesh``: parameters split over ``model`` by
  `partition_spec`, anything else (statistics) replicated.

  ``put(array, sharding)`` transfers (`jaxprune.pruning.activations.put`); arrays
  already placed so stay as they are (no copy).
  """
  model = model_size(mesh)
  out = []
  for v in values:
    if isinstance(v, pz.ParameterValue) and isinstance(v.value, pz.nx.NamedArrayBase):
      named = _as_named(v.value)
      data = put(named.data_array, NamedSharding(mesh, partition_spec(named, model)))
      out.append(dataclasses.replace(v, value=dataclasses.replace(named, data_array=data)))
    else:
      out.append(dataclasses.replace(v, value=put(v.value, NamedSharding(mesh, PartitionSpec()))))
  return out


def place(block, mesh: Mesh, put):
  """``block`` with its parameters placed by `place_values`, as mutable `pz.Parameter`s.

  The block's parameters may be `pz.Parameter`s or frozen values holding
  NumPy arrays (a model loaded with ``params="host"``).
  """
  frozen = pz.freeze_params(block)
  values = frozen.select().at_instances_of(pz.ParameterValue).get_sequence()
  unbound = frozen.select().at_instances_of(pz.ParameterValue).apply(lambda v: pz.ParameterSlot(v.label))
  return pz.bind_variables(unbound, place_values(values, mesh, put), unfreeze_as_copy=True)


def parameter_arrays(tree) -> list[jax.Array]:
  """The device arrays holding the parameters of ``tree`` (none when they live in host memory)."""
  values = pz.freeze_params(tree).select().at_instances_of(pz.ParameterValue).get_sequence()
  return [a for a in jax.tree.leaves(values) if isinstance(a, jax.Array)]


def free(block, keep=()) -> None:
  """Delete the parameter arrays of ``block`` that are not among ``keep`` (by identity).

  Only for arrays the driver made by `place` from host arrays: deleting frees
  their device memory at once, whoever still refers to them.
  """
  kept = {id(a) for a in keep}
  for a in parameter_arrays(block):
    if id(a) not in kept and not a.is_deleted():
      a.delete()


class Placement:
  """Where blocks go and what they leave behind: the driver's one piece of state.

  `put` places a block's parameters on the mesh (split over ``model``) and
  watches them; `release` deletes what `put` made (never the caller's own
  arrays); `observe` samples the device and parameter bytes.
  """

  def __init__(self, mesh: Mesh, model, put):
    self.mesh = mesh
    self._put = put
    self.devices = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    self.watched = memory.Watched()
    self.watched.add(parameter_arrays(model))  # --params device: the whole model counts
    self.peak = memory.Peak()

  def put(self, block):
    placed = place(block, self.mesh, self._put)
    self.watched.add(parameter_arrays(placed))
    self.observe()
    return placed

  def release(self, placed, block, *keep) -> None:
    """Delete ``placed``'s arrays but ``keep``'s, when ``block`` (the model's own) lives in host memory.

    Otherwise the placed arrays may share the model's device buffers (JAX
    aliases a transfer to the same device): dropping them is all that frees.
    """
    if not parameter_arrays(block):
      free(placed, keep=[a for k in keep for a in parameter_arrays(k)])

  def observe(self) -> None:
    self.peak = memory.merge(self.peak, memory.sample(self.devices, self.watched))


def one_at_a_time(fn):
  """``fn`` (a jitted program), waiting for its result when CPU processes share collectives.

  XLA:CPU's cross-process collectives (gloo, jax 0.10) can deadlock when
  several programs with collectives are in flight at once: one process's
  devices wait in an all-reduce of one program while a device of the other
  process waits on another (seen in about half the two-process runs of
  ``tests/test_distributed.py``). Dispatching a program only once the previous
  one finished rules that out. Single-process runs and accelerators, whose
  streams order the programs, keep asynchronous dispatch.
  """

  @functools.wraps(fn)
  def call(*args, **kwargs):
    out = fn(*args, **kwargs)
    if jax.process_count() > 1 and jax.default_backend() == "cpu":
      jax.block_until_ready(out)
    return out

  return call


@functools.lru_cache(maxsize=8)
def _replicator(mesh: Mesh):
  return one_at_a_time(jax.jit(lambda tree: tree, out_shardings=NamedSharding(mesh, PartitionSpec())))


def replicate(tree, mesh: Mesh):
  """``tree`` gathered to every device of ``mesh`` (masks and statistics chosen where the shards live)."""
  if model_size(mesh) == 1:
    return tree
  return _replicator(mesh)(tree)
