"""Periodic Orbax checkpoints of a fine-tuning run, for resuming after a kill.

Every ``every`` steps the train state (step, trained weights or LoRA factors,
AdamW's moments) and a JSON record (the run's fingerprint and the losses so
far) are saved as one step of an Orbax `CheckpointManager`; Orbax writes a
step under a temporary name and renames it once complete, so the latest step
on disk is always whole. A rerun of the same command restores it and carries
on; a checkpoint saved by other options is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax

from jaxprune import failures
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)


class StepCheckpointer:
  """Saves and restores the train state under ``directory`` every ``every`` steps.

  Args:
    directory: where the steps go (e.g. ``RUN_DIR/state``).
    fingerprint: JSON-able description of everything that determines the
      weights; a saved state with another fingerprint is refused.
    every: steps between checkpoints (the last step is never saved: the run
      itself is written then).
  """

  def __init__(self, directory: str | Path, fingerprint: dict[str, Any], every: int):
    import orbax.checkpoint as ocp

    if every < 1:
      raise JaxpruneError(f"--checkpoint-every {every} must be at least 1")
    self.directory = Path(directory).absolute()
    self.fingerprint = fingerprint
    self.every = every
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

  @property
  def latest(self) -> int | None:
    return self._manager.latest_step()

  def due(self, step: int, steps: int) -> bool:
    return step % self.every == 0 and step < steps

  def save(self, step: int, state, losses) -> None:
    import orbax.checkpoint as ocp

    meta = {"fingerprint": self.fingerprint, "step": step, "losses": list(losses)}
    with failures.quiet_writes():
      self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)))
      self._manager.wait_until_finished()
    log.info("checkpoint at step %d in %s", step, self.directory)

  def restore(self, like):
    """(state, losses) of the latest checkpoint, shaped and sharded like ``like``; None if there is none."""
    import orbax.checkpoint as ocp

    step = self._manager.latest_step()
    if step is None:
      return None
    with failures.damaged_as(f"the checkpoint in {self.directory} cannot be read ({{damage}}):"
                             " pass --overwrite to start the fine-tuning afresh"):
      meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
      if meta.get("fingerprint") != self.fingerprint:
        raise JaxpruneError(
            f"{self.directory} holds the checkpoint of a fine-tuning run with other options, model, run or text:"
            " rerun the same command to resume it, or pass --overwrite to start afresh")
      target = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
      state = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state
    state = jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(state))
    return state, [float(x) for x in meta["losses"]]

  def close(self) -> None:
    self._manager.close()
