"""Resumable pruning: Orbax state after every block.

After block ``b`` the driver saves step ``b + 1``: the next block's input
activations (sharded as they live on the devices), the masks and statistics so
far, SparseGPT's updated weights, and a JSON fingerprint of the run's options.
A rerun of the same command restores the latest step and carries on; masks
come out identical to an uninterrupted run because the saved activations are
exactly the ones the next block would have seen.

Every process calls `save` (Orbax writes each host's shards and renames the
step directory atomically once complete).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxprune import failures
from jaxprune import masks as masks_lib
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)


def _key(name: str) -> str:
  return name.replace(".", "__")


def _unkey(key: str) -> str:
  return key.replace("__", ".")


class BlockCheckpointer:
  """Saves and restores the pruning loop's state under ``directory``.

  Args:
    directory: where Orbax keeps the steps (e.g. ``RUN_DIR/state``).
    fingerprint: JSON-able description of everything that determines the
      masks; a saved state with another fingerprint is refused.
    shapes: HF name -> [out, in] of every prunable linear (to restore masks).
    on_restore: called as ``on_restore(finished_blocks)`` once a saved state
      has been read back.
  """

  def __init__(self, directory: str | Path, fingerprint: dict[str, Any], shapes: dict[str, tuple[int, int]],
               on_restore=None):
    import orbax.checkpoint as ocp

    self.directory = Path(directory).absolute()
    self.fingerprint = fingerprint
    self.shapes = shapes
    self._manager = ocp.CheckpointManager(
        self.directory / "steps",
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
    )
    self.saved = self._manager.latest_step()  # the last step known complete on disk
    self._on_restore = on_restore

  def save(self, step: int, masks, statistics, new_weights, activations) -> None:
    """Save block ``step - 1``'s results (only its own) and the next inputs.

    Each block's masks, statistics and weights go to ``blocks/NNNNN`` once;
    the step itself holds the activations and the list of finished blocks,
    so the bytes written per block do not grow with the block index.
    """
    import orbax.checkpoint as ocp

    results = {
        "masks": {_key(k): masks_lib.pack(v) for k, v in masks.items()},
        "statistics": {_key(k): np.asarray(v) for k, v in statistics.items()},
        "weights": {_key(k): np.asarray(v) for k, v in new_weights.items()},
    }
    names = {kind: sorted(_unkey(k) for k in tree) for kind, tree in results.items()}
    with failures.quiet_writes():  # a failed write's late thread tracebacks stay hidden
      with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(self.directory / "blocks" / f"{step:05d}", force=True,
                   args=ocp.args.Composite(results=ocp.args.StandardSave(results),
                                           names=ocp.args.JsonSave(names)))
      meta = {
          "fingerprint": self.fingerprint,
          "step": step,
          "activations": [list(x.shape) for x in (activations or [])],
          "activation_dtype": str(activations[0].dtype) if activations else "float32",
      }
      arrays = {f"mb{i:05d}": x for i, x in enumerate(activations or [])} or {"none": np.zeros((1,), np.int8)}
      self._manager.save(
          step,
          args=ocp.args.Composite(state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)),
      )
      self._manager.wait_until_finished()
    self.saved = step

  def _restore_block(self, step: int):
    import orbax.checkpoint as ocp

    path = self.directory / "blocks" / f"{step:05d}"
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
      names = ckptr.restore(path, args=ocp.args.Composite(names=ocp.args.JsonRestore())).names
      target = {
          "masks": {_key(n): jax.ShapeDtypeStruct((self.shapes[n][0], math.ceil(self.shapes[n][1] / 8)), np.uint8)
                    for n in names["masks"]},
          "statistics": {_key(n): jax.ShapeDtypeStruct((self.shapes[n][1],), np.float32)
                         for n in names["statistics"]},
          "weights": {_key(n): jax.ShapeDtypeStruct(tuple(self.shapes[n]), np.float32) for n in names["weights"]},
      }
      return ckptr.restore(path, args=ocp.args.Composite(results=ocp.args.StandardRestore(target))).results

  def restore(self, mesh):
    """(next block, masks, statistics, weights, activations) or None.

    Raises `JaxpruneError` (one line) when the saved state belongs to other
    options or cannot be read (a corrupt or truncated file).
    """
    try:
      restored = self._restore(mesh)
    except JaxpruneError:
      raise
    except Exception as err:  # Orbax/TensorStore raise many types for damaged files
      first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
      raise JaxpruneError(
          f"the saved state of the unfinished run in {self.directory.parent} cannot be read"
          f" ({type(err).__name__}: {first}): pass --overwrite to start the run over"
      ) from None
    if restored is not None and self._on_restore is not None:
      self._on_restore(restored[0])
    return restored

  def _restore(self, mesh):
    import orbax.checkpoint as ocp

    step = self._manager.latest_step()
    if step is None:
      return None
    meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    if meta["fingerprint"] != self.fingerprint:
      raise JaxpruneError(
          f"{self.directory} holds the state of a run with other options: rerun with the same options"
          " to resume, or pass --overwrite to start over"
      )
    for shape in meta["activations"]:
      if shape[0] % mesh.shape["data"]:
        raise JaxpruneError(
            f"saved micro-batches of {shape[0]} sequences do not split over {mesh.shape['data']} devices:"
            " resume on a device count that divides it, or pass --overwrite"
        )
    masks, statistics, new_weights = {}, {}, {}
    for block_step in range(1, step + 1):
      results = self._restore_block(block_step)
      masks.update({_unkey(k): masks_lib.unpack(v, self.shapes[_unkey(k)][1]) for k, v in results["masks"].items()})
      statistics.update({_unkey(k): np.asarray(v) for k, v in results["statistics"].items()})
      new_weights.update({_unkey(k): np.asarray(v) for k, v in results["weights"].items()})
    activations = None
    if meta["activations"]:
      sharded = NamedSharding(mesh, PartitionSpec("data"))
      dtype = jax.numpy.dtype(meta["activation_dtype"])
      target = {f"mb{i:05d}": jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharded)
                for i, shape in enumerate(meta["activations"])}
      state = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state
      activations = [state[k] for k in sorted(state)]
    return meta["step"], masks, statistics, new_weights, activations

  def abandon(self) -> None:
    """After a failure: let Orbax's background writes end before the error is reported."""
    with failures.quiet_writes():
      try:
        self._manager.wait_until_finished()
      except Exception as err:  # the same fault, already being raised
        log.info("pending state writes failed too: %s", err)
      try:
        self._manager.close()
      except Exception as err:
        log.info("closing the state writer failed: %s", err)

  def finish(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
