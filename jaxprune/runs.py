"""Run directories: what ``jaxprune prune`` writes and ``export``/``compare`` read.

RUN_DIR/
  masks/      Orbax checkpoint: packed masks + JSON metadata (atomic)
  weights/    Orbax checkpoint of SparseGPT's updated weights (SparseGPT only)
  state/      per-block resume state while the run is in progress
  run.json    written last (temp name + rename): its presence means "complete"
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
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxprune import distributed, pruning
from jaxprune import masks as masks_lib
from jaxprune.errors import JaxpruneError
from jaxprune.resume import BlockCheckpointer

log = logging.getLogger(__name__)

RUN_JSON = "run.json"
_VERSIONED = ("jaxprune", "jax", "jaxlib", "penzai", "orbax-checkpoint", "transformers", "numpy")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Where to write and whether an existing directory may be replaced."""

  out: Path
  overwrite: bool = False


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


def write_json_atomic(path: Path, data: Any) -> None:
  """Write JSON under a temporary name, then rename: never a half-written file."""
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
  with os.fdopen(fd, "w") as f:
    json.dump(data, f, indent=2, sort_keys=False, default=str)
  os.replace(tmp, path)


def _prepare(run_dir: Path, fingerprint: dict[str, Any], overwrite: bool) -> None:
  """Refuse a used directory unless resuming the same run or overwriting."""
  if not run_dir.exists():
    run_dir.mkdir(parents=True, exist_ok=True)  # exist_ok: other processes of a multi-host run
    return
  if overwrite:
    if jax.process_index() == 0:
      shutil.rmtree(run_dir)
      run_dir.mkdir(parents=True)
    return
  if (run_dir / RUN_JSON).exists():
    raise JaxpruneError(f"{run_dir} already holds a finished run: choose another --out or pass --overwrite")
  state = run_dir / "state"
  if state.exists():
    return  # BlockCheckpointer checks the fingerprint and resumes
  if any(run_dir.iterdir()):
    raise JaxpruneError(f"{run_dir} exists and is not a jaxprune run: choose another --out or pass --overwrite")


def prune_run(loaded, calib_tokens: np.ndarray, config: pruning.PruneConfig, run: RunConfig,
              calibration: dict[str, Any] | None = None, mesh=None, on_block=None) -> pruning.PruneResult:
  """Prune ``loaded`` (a `converters.LoadedModel`) into the run directory.

  Resumable: rerunning the same call after an interruption continues from the
  last finished block and gives the same masks.
  """
  run_dir = Path(run.out).absolute()
  tokens = np.asarray(calib_tokens) if calib_tokens is not None else np.zeros((0, 0), np.int32)
  fingerprint = {
      "model": loaded.model_id,
      "calibration_tokens": token_hash(tokens) if tokens.size else None,
      "options": dataclasses.asdict(config),
  }
  fingerprint = json.loads(json.dumps(fingerprint, default=str))
  distributed.check_same(json.dumps([fingerprint, run.overwrite], sort_keys=True),
                         "model, calibration tokens or options")
  _prepare(run_dir, fingerprint, run.overwrite)
  for partial in ("masks", "weights"):  # left by a crash between the final saves
    if (run_dir / partial).exists() and not (run_dir / RUN_JSON).exists() and jax.process_index() == 0:
      shutil.rmtree(run_dir / partial)
  distributed.barrier("jaxprune:run-dir-ready")  # process 0 may have just emptied it
  shapes = {l.name: l.shape for l in loaded.spec.linears}
  checkpointer = BlockCheckpointer(run_dir / "state", fingerprint, shapes)
  started = time.perf_counter()
  result = pruning.prune(loaded, calib_tokens, config=config, mesh=mesh, resume=checkpointer, on_block=on_block)
  elapsed = time.perf_counter() - started
  metadata = {"model": loaded.model_id, "method": config.method, "pattern": config.pattern}
  masks_lib.save(run_dir / "masks", result.masks, metadata)
  if result.weights:
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(run_dir / "weights", {k.replace(".", "__"): v for k, v in result.weights.items()})
  record = {
      "model": loaded.model_id,
      "calibration": {**(calibration or {}), "token_hash": fingerprint["calibration_tokens"],
                      "shape": list(tokens.shape)},
      "options": dataclasses.asdict(config),
      "block_sparsity": list(result.block_sparsity),
      "sparsity": result.report,
      "timings": {**{k: round(v, 3) for k, v in result.timings.items()}, "total": round(elapsed, 3)},
      "devices": {"count": jax.device_count(), "platform": jax.devices()[0].platform,
                  "processes": jax.process_count(), "microbatch": result.microbatch},
      "versions": versions(),
  }
  if jax.process_index() == 0:
    write_json_atomic(run_dir / RUN_JSON, record)
    shutil.rmtree(run_dir / "state", ignore_errors=True)
  return result


def load_run(run_dir: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
  """(masks, run.json record, SparseGPT weights or {}) of a finished run."""
  run_dir = Path(run_dir)
  if not (run_dir / RUN_JSON).exists():
    raise JaxpruneError(
        f"{run_dir} is not a finished jaxprune run (no {RUN_JSON}): run `jaxprune prune --out {run_dir}` first"
    )
  record = json.loads((run_dir / RUN_JSON).read_text())
  masks, _ = masks_lib.load(run_dir / "masks")
  new_weights: dict[str, np.ndarray] = {}
  if (run_dir / "weights").exists():
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
      restored = ckptr.restore((run_dir / "weights").absolute())
    new_weights = {k.replace("__", "."): np.asarray(v) for k, v in restored.items()}
  return masks, record, new_weights


def load_run_for(loaded, run_dir: str | os.PathLike):
  """`load_run`, refusing a run that was pruned from another model than ``loaded``."""
  masks, record, new_weights = load_run(run_dir)
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
  pruned, masks, _ = with_run(loaded, run_dir)
  return export_fn(pruned, out, masks=masks, overwrite=overwrite)
