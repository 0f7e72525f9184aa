"""``jaxprune finetune`` as a library call: a prune run in, a fine-tuned run out.

The new run is a run like any other (`jaxprune.runs`): the base run's masks,
the fine-tuned weights of the prunable linears in ``weights/`` (where SparseGPT
runs keep theirs, so ``export``, ``eval`` and ``compare`` read it unchanged)
and a ``run.json`` that copies the base run's model, calibration and options
and adds ``finetune``: the base run, the training text, the options, the loss
of every step and timings. It is built in the hidden folder beside ``out``
(with ``state/``, the periodic checkpoints) and renamed into place when done;
the same command after a kill resumes from the last checkpoint.

Training text comes from the calibration side of ``calib`` only
(`calibration.sample`), so held-out perplexity stays measured on unseen files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxprune import calibration, failures, outputs, runs, store
from jaxprune.pruning import blocks
from jaxprune.errors import JaxpruneError
from jaxprune.finetune.checkpoints import StepCheckpointer
from jaxprune.finetune.driver import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  """One ``jaxprune finetune`` command.

  Attributes:
    masks: the prune run to start from (its masks, and its weights if it has any).
    out: the run directory to write.
    model: the model the run was pruned from.
    calib: calibration domain (or path) whose calibration side is the training text.
    train: the `TrainConfig`.
    checkpoint_every: steps between Orbax checkpoints.
    overwrite: replace a finished run at ``out`` (and any unfinished one).
    dtype: parameter dtype (None: the checkpoint's).
  """

  masks: str
  out: str
  model: str = "smollm2-135m"
  calib: str = "python"
  train: TrainConfig = TrainConfig()
  checkpoint_every: int = 50
  overwrite: bool = False
  dtype: str | None = None


def training_tokens(calib: str, tokenizer, config: TrainConfig, max_positions: int | None = None) -> np.ndarray:
  """``steps * batch`` sequences of ``seqlen`` tokens from the calibration side of ``calib``."""
  if max_positions and config.seqlen > max_positions:
    raise JaxpruneError(f"--seqlen {config.seqlen} exceeds the model's context of {max_positions}:"
                        f" use --seqlen {max_positions} or less")
  if tokenizer is None:
    raise JaxpruneError("the model has no tokenizer files: fine-tuning needs its tokenizer to read --calib")
  n = config.steps * config.batch
  try:
    return calibration.sample(calib, tokenizer, n, config.seqlen, config.seed)
  except JaxpruneError as err:
    raise JaxpruneError(f"{err} (fine-tuning draws steps x batch = {config.steps} x {config.batch} = {n} sequences"
                        " of --seqlen tokens: lower --steps, --batch or --seqlen, or pick a larger --calib)") from None


def _file_hash(path: Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def finetune_run(config: FinetuneConfig, *, loaded=None, tokens: np.ndarray | None = None, mesh=None,
                 on_step: Callable[[int, int, float], None] | None = None,
                 on_resume: Callable[[int, int], None] | None = None) -> TrainResult:
  """Fine-tune the sub-model of the run ``config.masks`` and write the new run to ``config.out``.

  Args:
    config: the command.
    loaded: the `converters.LoadedModel` (default: loaded from ``config.model``).
    tokens: explicit training tokens [steps * batch, seqlen] (default: drawn from ``config.calib``).
    mesh, on_step, on_resume: as `driver.train`.
  """
  config.train.validate()
  if config.checkpoint_every < 1:
    raise JaxpruneError(f"--checkpoint-every {config.checkpoint_every} must be at least 1")
  inputs = (config.model, config.masks, config.calib)
  claim = outputs.claim_dir(config.out, "run", overwrite=config.overwrite, inputs=inputs)
  base_record = store.load_record(config.masks)  # a missing or damaged run, before the slow model load
  if loaded is None:
    from jaxprune import converters

    loaded = converters.load_model(config.model, dtype=config.dtype)
  masks, _, base_weights = runs.load_run_for(loaded, config.masks)
  model = blocks.apply_pruning(loaded.model, masks, base_weights)
  if tokens is None:
    tokens = training_tokens(config.calib, loaded.tokenizer, config.train, loaded.spec.max_positions)
    data: dict[str, Any] = {"source": config.calib}
    try:
      data["provenance"] = calibration.describe(config.calib)
    except JaxpruneError:
      pass
  else:
    data = {"source": "tokens"}
  tokens = np.asarray(tokens, np.int32)
  data.update(token_hash=runs.token_hash(tokens), shape=list(tokens.shape), side="calibration")
  fingerprint = json.loads(json.dumps({
      "model": loaded.model_id, "base_run": _file_hash(Path(config.masks) / store.RUN_JSON),
      "tokens": data["token_hash"], "train": dataclasses.asdict(config.train)}, default=str))

  work = claim.partial  # an old run at config.out stays in place until the new one is committed
  outputs.start(claim, resume=not config.overwrite)
  for stale in (store.MASKS, store.WEIGHTS):  # left by a crash between the final saves
    if (work / stale).exists():
      shutil.rmtree(work / stale)
  checkpoints = StepCheckpointer(work / store.STATE, fingerprint, config.checkpoint_every)
  failures.keep(f"the checkpoints are kept in {work}: rerun the same command to resume")
  started = time.perf_counter()
  try:
    result = train(model, masks, tokens, config.train, checkpoints=checkpoints, mesh=mesh,
                   on_step=on_step, on_resume=on_resume)
  except BaseException:
    saved = checkpoints.latest
    checkpoints.close()
    if saved is None:
      outputs.discard(claim)  # no checkpoint: nothing worth resuming from
      failures.reset()
    raise
  checkpoints.close()
  store.save_results(work, masks, {"model": loaded.model_id, "method": "finetune", "base_run": config.masks},
                     result.weights)
  record = {
      "format": store.RUN_FORMAT,
      "model": loaded.model_id,
      **{k: base_record[k] for k in ("calibration", "options", "dtype", "block_sparsity", "sparsity")
         if k in base_record},
      "finetune": {
          "base_run": calibration.portable_path(str(Path(config.masks).absolute())),
          "base_options": base_record.get("options"),
          "data": data,
          "train": dataclasses.asdict(config.train),
          "mode": f"lora rank {config.train.lora}" if config.train.lora else "full (kept weights of the prunable linears)",
          "steps": config.train.steps,
          "tokens": int(tokens.size),
          "losses": [round(x, 6) for x in result.losses],
          "resumed_from_step": result.resumed_from,
          "train_seconds": round(result.seconds, 3),
      },
      "timings": {"total": round(time.perf_counter() - started, 3)},
      "devices": {"count": jax.device_count(), "platform": jax.devices()[0].platform},
      "versions": runs.versions(),
  }
  store.write_json_atomic(work / store.RUN_JSON, record)
  shutil.rmtree(work / store.STATE, ignore_errors=True)
  outputs.commit(claim)
  return result
