"""Local evaluation data: rows of a task's dataset from a file or folder the user has.

Nothing is downloaded. A task's data comes from ``--data TASK=PATH`` or, when
that is not given, ``$JAXPRUNE_DATA/<task>.{jsonl,json,parquet}`` (default
``~/.cache/jaxprune/data``), then the calibration's local copy of the same
dataset (``<corpora cache>/local/gsm8k``...). JSON Lines and JSON lists are read directly;
Parquet, CSV, Arrow and ``save_to_disk`` folders through `datasets`.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxprune.errors import JaxpruneError

SUFFIXES = (".jsonl", ".json", ".parquet", ".jsonl.gz")


def data_root() -> Path:
  return Path(os.environ.get("JAXPRUNE_DATA", "~/.cache/jaxprune/data")).expanduser()


def locate(task: str, given: str | None, layout: str, local: Sequence[str] = ()) -> Path:
  """The data path of ``task``; ``layout`` describes the expected format for the error message.

  ``local`` names folders under the corpora cache's ``local/`` (where calibration
  finds ``gsm8k``, ``wmt14``...) that hold the same dataset.
  """
  if given is not None:
    path = Path(given).expanduser()
    if not path.exists():
      raise JaxpruneError(f"{task}: no such file or folder {path}: give {layout}")
    return path
  for suffix in SUFFIXES:
    if (candidate := data_root() / f"{task}{suffix}").exists():
      return candidate
  from jaxprune.calibration import corpora

  for name in local:
    if (candidate := corpora.cache_root() / "local" / name).exists():
      return candidate
  raise JaxpruneError(
      f"{task}: no data (looked for {data_root() / task}.jsonl): pass --data {task}=FILE with {layout}")


def _read_json(path: Path) -> list[dict[str, Any]]:
  opener = gzip.open if path.name.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8") as f:
    text = f.read()
  stripped = text.lstrip()
  if stripped.startswith("["):
    return list(json.loads(stripped))
  rows = []
  for number, line in enumerate(text.splitlines(), start=1):
    if line.strip():
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError as err:  # its own line number counts within the one line
        raise ValueError(f"line {number}, column {err.colno}: {err.msg}") from None
  return rows


def _read_datasets(path: Path, splits: Sequence[str]) -> list[dict[str, Any]]:
  import datasets

  if path.is_dir() and any((path / f).exists() for f in ("dataset_dict.json", "state.json")):
    ds = datasets.load_from_disk(str(path))
  elif path.is_dir():
    ds = datasets.load_dataset(str(path))
  else:
    builder = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}.get(path.suffix)
    if builder is None:
      raise ValueError(f"unknown file type {path.suffix!r}")
    ds = datasets.load_dataset(builder, data_files=str(path), split="train")
  if isinstance(ds, datasets.DatasetDict):
    pick = next((s for s in splits if s in ds), None) or (next(iter(ds)) if len(ds) == 1 else None)
    if pick is None:
      raise ValueError(f"no {' or '.join(splits)} split (has {', '.join(ds)})")
    ds = ds[pick]
  return [dict(row) for row in ds]


def load_rows(task: str, given: str | None, layout: str, splits: Sequence[str] = ("validation", "test"),
              required: Sequence[str] = (), local: Sequence[str] = ()) -> list[dict[str, Any]]:
  """Every row of the task's data (the first of ``splits`` a dataset folder has), checked for ``required`` fields."""
  path = locate(task, given, layout, local)
  try:
    if path.is_file() and (path.suffix == ".json" or path.name.endswith((".jsonl", ".jsonl.gz"))):
      rows = _read_json(path)
    else:
      rows = _read_datasets(path, splits)
  except Exception as err:  # json, datasets and pyarrow raise many types; keep one line
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    raise JaxpruneError(f"{task}: could not read {path} ({first}): give {layout}") from None
  if not rows:
    raise JaxpruneError(f"{task}: {path} has no rows: give {layout}")
  missing = [f for f in required if f not in rows[0]]
  if missing:
    raise JaxpruneError(f"{task}: rows of {path} lack field {missing[0]!r} (have {', '.join(rows[0])}): give {layout}")
  return rows
