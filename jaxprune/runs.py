"""Prune runs: making one (`prune_run`) and using one (`with_run`, `export_run`).

The run is built in .RUN_DIR.jaxprune-partial/ beside RUN_DIR (with state/,
the per-block resume state) and renamed to RUN_DIR once complete. What the
folder holds, and how each part is written and read, is `jaxprune.store`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxprune import distributed, failures, outputs, pruning, store
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)

_VERSIONED = ("jaxprune", "jax", "jaxlib", "penzai", "orbax-checkpoint", "transformers", "numpy")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Where to write, whether an earlier run there may be replaced, and what must not be written over."""

  out: Path
  overwrite: bool = False
  inputs: tuple[Any, ...] = ()  # what the run reads (model folder, token file): never to be the output


def token_hash(tokens: np.ndarray) -> str:
  tokens = np.ascontiguousarray(np.asarray(tokens, np.int32))
  return hashlib.sha256(tokens.tobytes() + str(tokens.shape).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
  out = {"python": platform.python_version()}
  for name in _VERSIONED:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def parameter_dtype(model) -> str:
  """The dtype the model's parameters are stored in (e.g. "float32", "bfloat16")."""
  from jaxprune.pruning import blocks

  return blocks.parameter_dtype(model)


def _prepare(claim: outputs.Claim, overwrite: bool) -> Path:
  """The folder to build the run in: the claim's partial folder, kept when resuming."""
  partial = claim.partial
  if jax.process_index() == 0:
    if claim.replace and not overwrite and not partial.exists():
      os.rename(claim.path, partial)  # an unfinished run written in place by an older jaxprune
    outputs.start(claim, resume=not overwrite)
    for stale in (store.MASKS, store.WEIGHTS):  # left by a crash between the final saves
      if (partial / stale).exists():
        shutil.rmtree(partial / stale)
  distributed.barrier("jaxprune:run-dir-ready")  # process 0 may have just emptied it
  return partial


def prune_run(loaded, calib_tokens: np.ndarray, config: pruning.PruneConfig, run: RunConfig,
              calibration: dict[str, Any] | None = None, mesh=None, on_block=None,
              on_resume=None) -> pruning.PruneResult:
  """Prune ``loaded`` (a `converters.LoadedModel`) into the run directory.

  The run is built in a hidden folder beside ``run.out`` and renamed into
  place when complete. Resumable: rerunning the same call after an
  interruption continues from the last finished block (``on_resume(done,
  total)`` is called first) and gives the same masks.
  """
  claim = outputs.claim_dir(run.out, "run", overwrite=run.overwrite, inputs=run.inputs)
  tokens = np.asarray(calib_tokens) if calib_tokens is not None else np.zeros((0, 0), np.int32)
  fingerprint = {
      "model": loaded.model_id,
      "calibration_tokens": token_hash(tokens) if tokens.size else None,
      "options": dataclasses.asdict(config),
  }
  fingerprint = json.loads(json.dumps(fingerprint, default=str))
  distributed.check_same(json.dumps([fingerprint, run.overwrite], sort_keys=True),
                         "model, calibration tokens or options")
  work = _prepare(claim, run.overwrite)
  shapes = {l.name: l.shape for l in loaded.spec.linears}
  announce = None if on_resume is None else (lambda done: on_resume(done, loaded.spec.num_layers))
  checkpointer = store.BlockCheckpointer(work / store.STATE, fingerprint, shapes, on_restore=announce)
  started = time.perf_counter()
  failures.keep(f"the finished blocks are kept in {work}: rerun the same command to resume")
  try:
    result = pruning.prune(loaded, calib_tokens, config=config, mesh=mesh, resume=checkpointer, on_block=on_block)
  except BaseException:
    checkpointer.abandon()
    if checkpointer.saved is None and jax.process_index() == 0:
      outputs.discard(claim)  # no finished block: nothing worth resuming from
      failures.reset()
    raise
  elapsed = time.perf_counter() - started
  metadata = {"model": loaded.model_id, "method": config.method, "pattern": config.pattern}
  store.save_results(work, result.masks, metadata, result.weights)
  record = {
      "format": store.RUN_FORMAT,
      "model": loaded.model_id,
      "calibration": {**(calibration or {}), "token_hash": fingerprint["calibration_tokens"],
                      "shape": list(tokens.shape)},
      "options": dataclasses.asdict(config),
      "dtype": result.dtypes.get("parameters") or parameter_dtype(loaded.model),
      # parameters as stored, activations as computed, statistics and scores as accumulated
      "dtypes": result.dtypes,
      "params": result.params,
      "memory": result.memory,
      "block_sparsity": list(result.block_sparsity),
      "sparsity": result.report,
      # a resumed run's total includes the processes before this one
      "timings": {**{k: round(v, 3) for k, v in result.timings.items()},
                  "total": round(elapsed + result.timings.get("earlier_processes", 0.0), 3)},
      "devices": {"count": jax.device_count(), "platform": jax.devices()[0].platform,
                  "processes": jax.process_count(), "microbatch": result.microbatch, "mesh": result.mesh},
      "versions": versions(),
  }
  distributed.barrier("jaxprune:run-saved")
  if jax.process_index() == 0:
    store.write_json_atomic(work / store.RUN_JSON, record)
    shutil.rmtree(work / store.STATE, ignore_errors=True)
    outputs.commit(claim)
  distributed.barrier("jaxprune:run-committed")
  return result


def load_run_for(loaded, run_dir: str | os.PathLike):
  """`store.load_run`, refusing a run that was pruned from another model than ``loaded``."""
  masks, record, new_weights = store.load_run(run_dir)
  made_for = record.get("model", {})
  if made_for.get("hash") != loaded.model_id["hash"]:
    raise JaxpruneError(
        f"the masks in {run_dir} were made for model {made_for.get('id')} (hash {made_for.get('hash')}),"
        f" not {loaded.model_id['id']} (hash {loaded.model_id['hash']}): pass the --model the run was pruned from"
    )
  return masks, record, new_weights


def with_run(loaded, run_dir: str | os.PathLike):
  """(``loaded`` with the run's SparseGPT weights and masks applied, masks, run record)."""
  masks, record, new_weights = load_run_for(loaded, run_dir)
  model = pruning.apply_result(loaded, pruning.PruneResult(masks, {}, {}, new_weights, (), {}))
  return dataclasses.replace(loaded, model=model), masks, record


def export_run(loaded, run_dir: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
               export_fn=None) -> Path:
  """Export ``loaded`` with the run's masks (and SparseGPT weights) applied."""
  outputs.claim_dir(out, "export", overwrite=overwrite, inputs=(loaded.source, run_dir))
  pruned, masks, _ = with_run(loaded, run_dir)
  return export_fn(pruned, out, masks=masks, overwrite=overwrite)
