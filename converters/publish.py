"""``jaxprune export``: a prune run's sub-model as an HF folder that can be published on the Hub.

The folder holds the pruned weights, config and tokenizer (`converters.export`),
a model card ``README.md`` (`converters.card`: base model, licence, how the
sub-model was made, achieved sparsity, evaluation results) and the source's
licence files. It is built beside ``out`` and renamed into place complete.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)

RUN_ID_HEX = 16


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportConfig:
  """One ``jaxprune export``.

  Attributes:
    model: the model the run was pruned from (HF folder, .gguf file or built-in name).
    masks: the run directory written by ``jaxprune prune``.
    out: the HF folder to write.
    overwrite: replace an earlier export in ``out``.
    eval: a report of ``jaxprune eval --masks <the run>`` whose metrics go into the card.
  """

  model: str
  masks: str
  out: str
  overwrite: bool = False
  eval: str | None = None


def run_id(run_dir: str | Path) -> str:
  """The run's id: the first hex digits of the sha256 of its run.json (``sha256sum run.json`` shows it)."""
  from jaxprune import store

  return hashlib.sha256((Path(run_dir) / store.RUN_JSON).read_bytes()).hexdigest()[:RUN_ID_HEX]


def read_eval(path: str, record: dict[str, Any]) -> dict[str, Any]:
  """The `jaxprune eval` report at ``path``, checked to be of the run ``record``."""
  from jaxprune.converters import card

  try:
    report = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
  except FileNotFoundError:
    raise JaxpruneError(f"--eval {path} does not exist: pass the JSON written by `jaxprune eval --out`") from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
    raise JaxpruneError(f"--eval {path} is not readable JSON ({err}): pass the file `jaxprune eval --out` wrote"
                        ) from None
  return dict(card.check_eval(report, record, path))


def export(config: ExportConfig) -> Path:
  """Export the run ``config.masks`` of ``config.model`` with its model card into ``config.out``."""
  from jaxprune import converters
  from jaxprune.converters import card
  from jaxprune import outputs, runs, store

  outputs.claim_dir(config.out, "export", overwrite=config.overwrite,
                    inputs=(config.model, config.masks, config.eval))
  record = store.load_record(config.masks)  # a missing or damaged run.json, before the slow model load
  evaluation = read_eval(config.eval, record) if config.eval else None
  loaded = converters.load_model(config.model)  # one-line errors for a missing or bad model first
  name = Path(config.out).expanduser().absolute().name
  extras = card.files(card.origin_of(config.model), record, name=name, run_id=run_id(config.masks),
                      evaluation=evaluation)
  export_fn = functools.partial(converters.export_hf, extras=extras)
  out = runs.export_run(loaded, config.masks, config.out, overwrite=config.overwrite, export_fn=export_fn)
  log.info("exported %s with its model card to %s", config.masks, out)
  return out
