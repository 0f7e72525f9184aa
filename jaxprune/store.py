"""The on-disk format of a run: the one module that reads and writes it.

RUN_DIR/
  masks/      Orbax checkpoint: packed masks (1 bit per weight) + JSON metadata
  weights/    Orbax checkpoint of updated weights (SparseGPT's, or a fine-tuned run's); absent for Wanda
  run.json    provenance, written last: its presence means "complete"
  state/      (only while unfinished) the per-block resume state, `BlockCheckpointer`

Orbax turns pytree keys into file names, so HF parameter names are stored with
``.`` written as ``__`` (`key` / `unkey`). Every save goes through Orbax's
temporary-directory-then-rename, and JSON through `write_json_atomic`: a crash
never leaves a half-written file. `jaxprune.runs` decides *when* to write
(claiming the folder, resuming, committing); this module decides *how*.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxprune import failures
from jaxprune.errors import JaxpruneError
from jaxprune.pruning.masks import pack, unpack

log = logging.getLogger(__name__)

RUN_FORMAT = "jaxprune-run/1"
MASKS_FORMAT = "jaxprune-masks/1"
RUN_JSON = "run.json"
MASKS = "masks"
WEIGHTS = "weights"
STATE = "state"


def key(name: str) -> str:
  """An HF parameter name as an Orbax pytree key (no dots: keys become file names)."""
  return name.replace(".", "__")


def unkey(stored: str) -> str:
  """Inverse of `key`."""
  return stored.replace("__", ".")


def write_json_atomic(path: Path, data: Any) -> None:
  """Write JSON under a temporary name, then rename: never a half-written file, no temp left on failure."""
  path = Path(path)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes it private; the user's umask decides
    with os.fdopen(fd, "w") as f:
      json.dump(data, f, indent=2, sort_keys=False, default=str)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


# --------------------------------------------------------------------------- #
# Masks
# --------------------------------------------------------------------------- #


def save_masks(path: str | os.PathLike, masks: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> Path:
  """Save masks (packed, 1 bit per weight) and JSON metadata with Orbax.

  Every process of a multi-host run must call this; Orbax writes to a
  temporary directory and renames it when complete.
  """
  import orbax.checkpoint as ocp

  path = Path(path).absolute()
  if path.exists():
    raise JaxpruneError(f"{path} already exists: choose another path or delete it")
  shapes = {name: list(np.shape(m)) for name, m in masks.items()}
  packed = {key(name): pack(np.asarray(m)) for name, m in masks.items()}
  meta = {"format": MASKS_FORMAT, "shapes": shapes, **dict(metadata or {})}
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(path, args=ocp.args.Composite(masks=ocp.args.StandardSave(packed),
                                             metadata=ocp.args.JsonSave(meta)))
  return path


def _masks_dir(path: str | os.PathLike) -> Path:
  path = Path(path).absolute()  # Orbax insists on absolute paths
  if not (path / "metadata").is_dir() and (path / MASKS / "metadata").is_dir():
    path = path / MASKS
  if not (path / "metadata").is_dir() or not (path / "masks").is_dir():
    raise JaxpruneError(
        f"no masks found at {path}: pass a run directory written by `jaxprune prune`"
        " (it holds masks/) or a path written by jaxprune.store.save_masks"
    )
  return path


def load_masks_metadata(path: str | os.PathLike) -> dict[str, Any]:
  """The JSON metadata saved with the masks of a run (or masks folder); reads no arrays."""
  import orbax.checkpoint as ocp

  path = _masks_dir(path)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    restored = ckptr.restore(path, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
  return dict(restored.metadata)


def load_packed_masks(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Packed masks (uint8 [out, ceil(in/8)]) and metadata, without unpacking."""
  import orbax.checkpoint as ocp

  path = _masks_dir(path)
  metadata = load_masks_metadata(path)
  target = {key(name): jax.ShapeDtypeStruct((shape[0], math.ceil(shape[1] / 8)), np.uint8)
            for name, shape in metadata["shapes"].items()}
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    restored = ckptr.restore(path, args=ocp.args.Composite(masks=ocp.args.StandardRestore(target)))
  return {unkey(k): np.asarray(v) for k, v in restored.masks.items()}, metadata


def load_masks(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Masks (bool [out, in] per HF parameter name) and their metadata."""
  packed, metadata = load_packed_masks(path)
  return {name: unpack(packed[name], shape[1]) for name, shape in metadata["shapes"].items()}, metadata


# --------------------------------------------------------------------------- #
# Updated weights and run.json
# --------------------------------------------------------------------------- #


def save_weights(path: str | os.PathLike, new_weights: Mapping[str, Any]) -> None:
  """Updated HF matrices of prunable linears (SparseGPT's, or fine-tuned)."""
  import orbax.checkpoint as ocp

  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(Path(path).absolute(), {key(k): v for k, v in new_weights.items()})


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
  import orbax.checkpoint as ocp

  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(Path(path).absolute())
  return {unkey(k): np.asarray(v) for k, v in restored.items()}


def save_results(work: Path, masks: Mapping[str, Any], metadata: Mapping[str, Any],
                 new_weights: Mapping[str, Any]) -> None:
  """A run's masks (and updated weights, if any) into the folder being built."""
  save_masks(Path(work) / MASKS, masks, metadata)
  if new_weights:
    save_weights(Path(work) / WEIGHTS, new_weights)


def load_record(run_dir: str | os.PathLike) -> dict[str, Any]:
  """The run.json of a finished run; one-line errors for a missing or damaged one."""
  path = Path(run_dir) / RUN_JSON
  if not path.is_file():
    raise JaxpruneError(
        f"{run_dir} is not a finished jaxprune run (no {RUN_JSON}): run `jaxprune prune --out {run_dir}` first"
    )
  try:
    record = json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as err:
    raise JaxpruneError(f"{path} is damaged (not valid JSON: {err}): rerun `jaxprune prune --out {run_dir}"
                        " --overwrite` to make the run again") from None
  if not isinstance(record, dict) or "model" not in record:
    raise JaxpruneError(f"{path} is not a jaxprune run record: pass a directory written by `jaxprune prune`")
  return record


def load_run(run_dir: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
  """(masks, run.json record, updated weights (SparseGPT's or fine-tuned) or {}) of a finished run."""
  run_dir = Path(run_dir)
  record = load_record(run_dir)
  with failures.damaged_as(f"the masks of the run in {run_dir} cannot be read ({{damage}}):"
                           f" rerun `jaxprune prune --out {run_dir} --overwrite` to make them again"):
    masks, _ = load_masks(run_dir / MASKS)
    new_weights = load_weights(run_dir / WEIGHTS) if (run_dir / WEIGHTS).exists() else {}
  return masks, record, new_weights


# --------------------------------------------------------------------------- #
# Resume state of an unfinished run
# --------------------------------------------------------------------------- #


class BlockCheckpointer:
  """Saves and restores the pruning loop's state under ``directory`` (``RUN_DIR/state``).

  After block ``b`` the driver saves step ``b + 1``: the next block's input
  activations (sharded as they live on the devices), the block's masks,
  statistics and SparseGPT weights, and a JSON fingerprint of the run's
  options. A rerun of the same command restores the latest step and carries
  on; masks come out identical to an uninterrupted run because the saved
  activations are exactly the ones the next block would have seen. Every
  process calls `save` (Orbax writes each host's shards).

  Args:
    directory: where Orbax keeps the steps.
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
        self.directory / "steps", options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
    self.saved = self._manager.latest_step()  # the last step known complete on disk
    self._on_restore = on_restore

  def save(self, step: int, masks, statistics, new_weights, activations,
           timings: dict[str, float] | None = None) -> None:
    """Save block ``step - 1``'s results (only its own), the next inputs and the seconds spent so far
    (``timings``, so that a resumed run reports the time of all its processes).

    Each block's masks, statistics and weights go to ``blocks/NNNNN`` once;
    the step itself holds the activations and the list of finished blocks,
    so the bytes written per block do not grow with the block index.
    """
    import orbax.checkpoint as ocp

    results = {
        "masks": {key(k): pack(v) for k, v in masks.items()},
        "statistics": {key(k): np.asarray(v) for k, v in statistics.items()},
        "weights": {key(k): np.asarray(v) for k, v in new_weights.items()},
    }
    names = {kind: sorted(unkey(k) for k in tree) for kind, tree in results.items()}
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
          "timings": {k: float(v) for k, v in (timings or {}).items()},
      }
      arrays = {f"mb{i:05d}": x for i, x in enumerate(activations or [])} or {"none": np.zeros((1,), np.int8)}
      self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(arrays),
                                                       meta=ocp.args.JsonSave(meta)))
      self._manager.wait_until_finished()
    self.saved = step

  def _restore_block(self, step: int):
    import orbax.checkpoint as ocp

    path = self.directory / "blocks" / f"{step:05d}"
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
      names = ckptr.restore(path, args=ocp.args.Composite(names=ocp.args.JsonRestore())).names
      target = {
          "masks": {key(n): jax.ShapeDtypeStruct((self.shapes[n][0], math.ceil(self.shapes[n][1] / 8)), np.uint8)
                    for n in names["masks"]},
          "statistics": {key(n): jax.ShapeDtypeStruct((self.shapes[n][1],), np.float32)
                         for n in names["statistics"]},
          "weights": {key(n): jax.ShapeDtypeStruct(tuple(self.shapes[n]), np.float32) for n in names["weights"]},
      }
      return ckptr.restore(path, args=ocp.args.Composite(results=ocp.args.StandardRestore(target))).results

  def restore(self, mesh):
    """(next block, masks, statistics, weights, activations, timings saved with them) or None.

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
      masks.update({unkey(k): unpack(v, self.shapes[unkey(k)][1]) for k, v in results["masks"].items()})
      statistics.update({unkey(k): np.asarray(v) for k, v in results["statistics"].items()})
      new_weights.update({unkey(k): np.asarray(v) for k, v in results["weights"].items()})
    activations = None
    if meta["activations"]:
      sharded = NamedSharding(mesh, PartitionSpec("data"))
      dtype = jax.numpy.dtype(meta["activation_dtype"])
      target = {f"mb{i:05d}": jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharded)
                for i, shape in enumerate(meta["activations"])}
      state = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state
      activations = [state[k] for k in sorted(state)]
    return meta["step"], masks, statistics, new_weights, activations, meta.get("timings", {})

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
