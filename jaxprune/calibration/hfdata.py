"""Calibration text from local datasets: ``hf:<name-or-path>[:split][:field]``.

Loads with `datasets`, offline only: a ``save_to_disk`` folder, JSON / JSONL /
Parquet / CSV files or a folder of them, ``CACHE/local/<name>``, or a dataset
already in the local Hugging Face hub cache. Nothing is ever downloaded.

The paper's short names (``py_alpaca``, ``gsm8k``, ``wmt14``...) map to the
field layout of the dataset they name, so ``hf:gsm8k`` gives question and
answer, ``hf:wmt14`` an English->French translation prompt.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jaxprune.calibration.documents import Group
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)

Row = Mapping[str, Any]
Formatter = Callable[[Row], str]

_BUILDERS = {
    ".jsonl": "json", ".json": "json", ".jsonl.gz": "json", ".json.gz": "json",
    ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow",
}


def translation_prompt(english: str, french: str) -> str:
  """One English->French pair as a prompt; the same shape for every source."""
  return f"English: {english.strip()}\nFrench: {french.strip()}"


def _get(row: Row, path: str) -> Any:
  value: Any = row
  for part in path.split("."):
    if not isinstance(value, Mapping) or part not in value:
      raise KeyError(path)
    value = value[part]
  return value


def join_fields(*fields: str) -> Formatter:
  """Non-empty fields (dotted paths allowed) joined by newlines."""

  def fmt(row: Row) -> str:
    return "\n".join(str(v) for f in fields if (v := _get(row, f)) not in (None, ""))

  fmt.fields = fields  # type: ignore[attr-defined]
  return fmt


def first_field(*fields: str) -> Formatter:
  """The first of several field names a dataset's versions have used."""

  def fmt(row: Row) -> str:
    for f in fields:
      if f in row:
        return str(row[f] or "")
    raise KeyError(" or ".join(fields))

  fmt.fields = fields  # type: ignore[attr-defined]
  return fmt


def _translation(row: Row) -> str:
  pair = row["translation"]
  return translation_prompt(pair["en"], pair["fr"])


def _openbookqa(row: Row) -> str:
  choices = row["choices"]
  answer = choices["text"][choices["label"].index(row["answerKey"])]
  return f"{row['question_stem']} {answer}"


def _hellaswag(row: Row) -> str:
  label = str(row.get("label", ""))
  return row["ctx"] + (" " + row["endings"][int(label)] if label.isdigit() else "")


@dataclasses.dataclass(frozen=True)
class Layout:
  """A known dataset: its hub ids (for the local hub cache), config and text."""

  hub_ids: tuple[str, ...]
  config: str | None
  format: Formatter
  note: str = ""


LAYOUTS: dict[str, Layout] = {
    "py_alpaca": Layout(("iamtarun/python_code_instructions_18k_alpaca",), None,
                        join_fields("instruction", "input", "output")),
    "code-java": Layout(("code-search-net/code_search_net", "code_search_net"), "java",
                        first_field("whole_func_string", "func_code_string")),
    "code-javascript": Layout(("code-search-net/code_search_net", "code_search_net"), "javascript",
                              first_field("whole_func_string", "func_code_string")),
    "cpp_dataset": Layout(("nhlcoding/cleaned_cpp_dataset",), None,
                          first_field("code", "content", "text", "solution", "output"),
                          note="hub id and field guessed from the paper's short name"),
    "ob_qa": Layout(("allenai/openbookqa", "openbookqa"), "main", _openbookqa),
    "hellaswag": Layout(("Rowan/hellaswag", "hellaswag"), None, _hellaswag),
    "math_qa": Layout(("allenai/math_qa", "math_qa"), None, join_fields("Problem", "Rationale")),
    "math_inst": Layout(("TIGER-Lab/MathInstruct",), None, join_fields("instruction", "output")),
    "math_o": Layout(("microsoft/orca-math-word-problems-200k",), None, join_fields("question", "answer"),
                     note="read as Orca-Math (question, answer)"),
    "gsm8k": Layout(("openai/gsm8k", "gsm8k"), "main", join_fields("question", "answer")),
    "wmt14": Layout(("wmt/wmt14", "wmt14"), "fr-en", _translation),
    "o_books": Layout(("Helsinki-NLP/opus_books", "opus_books"), "en-fr", _translation),
    "c4": Layout(("allenai/c4", "c4"), "en", join_fields("text")),
}


@dataclasses.dataclass(frozen=True)
class HfSpec:
  """A parsed ``hf:<name-or-path>[:split][:field]``."""

  name: str
  split: str | None = None
  field: str | None = None


def parse(spec: str) -> HfSpec:
  """Parse ``hf:NAME[:SPLIT][:FIELD]`` (FIELD may be ``a+b`` to join fields)."""
  parts = spec.removeprefix("hf:").split(":")
  if not parts[0] or len(parts) > 3:
    raise JaxpruneError(
        f"bad dataset spec {spec!r}: write hf:NAME_OR_PATH[:SPLIT][:FIELD], e.g. hf:gsm8k:train:question+answer"
    )
  return HfSpec(parts[0], (parts[1:2] or [None])[0] or None, (parts[2:3] or [None])[0] or None)


def find_local(name: str, cache_root: Path, *, paths: bool = True) -> tuple[Path, bool] | None:
  """Where a dataset is on this machine (a path, CACHE/local/NAME, the hub cache), and whether in the hub cache.

  ``paths=False`` (a built-in domain's dataset, not one the user named): only
  the cache and the hub cache, never a folder that happens to share the name.
  """
  path = Path(name).expanduser()
  if paths and path.exists():
    return path, False
  if (cache_root / "local" / name).exists():
    return cache_root / "local" / name, False
  layout = LAYOUTS.get(name)
  hub_ids = layout.hub_ids if layout else ((name,) if "/" in name else ())
  for hub_id in hub_ids:
    try:
      from huggingface_hub import snapshot_download

      return Path(snapshot_download(hub_id, repo_type="dataset", local_files_only=True)), True
    except Exception:  # not in the hub cache: try the next id
      continue
  return None


def _builder(path: Path) -> str | None:
  name = path.name.lower()
  return next((b for s, b in _BUILDERS.items() if name.endswith(s)), None)


def is_data_file(path: Path) -> bool:
  """Whether a path is a table (JSONL, Parquet...) rather than plain text."""
  return path.is_file() and _builder(path) is not None


def _load(path: Path, config: str | None, split: str | None, cache_root: Path, label: str):
  import datasets

  cache = str(cache_root / "hf-datasets")
  try:
    if path.is_dir() and any((path / f).exists() for f in ("dataset_dict.json", "state.json")):
      ds = datasets.load_from_disk(str(path))
    elif path.is_dir():
      ds = datasets.load_dataset(str(path), config, cache_dir=cache)
    else:
      builder = _builder(path)
      if builder is None:
        raise JaxpruneError(f"{label}: {path.name} is not a JSON, JSONL, Parquet, CSV or Arrow file")
      ds = datasets.load_dataset(builder, data_files=str(path), cache_dir=cache)
  except JaxpruneError:
    raise
  except Exception as err:  # datasets' errors are long; keep their first line
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    raise JaxpruneError(f"{label}: datasets could not load {path}: {first}") from None
  if isinstance(ds, datasets.DatasetDict):
    names = sorted(ds)
    pick = split or ("train" if "train" in ds else names[0] if len(names) == 1 else None)
    if pick not in ds:
      raise JaxpruneError(f"{label}: no split {split!r}: choose one of {', '.join(names)}, e.g. {label}:{names[0]}")
    return ds[pick], pick
  return ds, split or "train"


def _formatter(label: str, field: str | None, layout: Layout | None, columns: list[str], features) -> Formatter:
  if field:
    return join_fields(*field.split("+"))
  if layout:
    return layout.format
  if "text" in columns:
    return join_fields("text")
  strings = [c for c in columns if getattr(features.get(c), "dtype", None) in ("string", "large_string")]
  if len(strings) == 1:
    return join_fields(strings[0])
  raise JaxpruneError(
      f"{label}: say which field holds the text, e.g. {label}:train:{'+'.join(columns[:2]) or 'text'}"
      f" (columns: {', '.join(columns)})"
  )


def dataset_group(spec: HfSpec, cache_root: Path, group_name: str | None = None, *, paths: bool = True) -> Group:
  """A group whose documents are the rows of a local dataset (one unit per row); ``paths`` as `find_local`."""
  label = f"hf:{spec.name}"
  layout = LAYOUTS.get(spec.name)
  found = find_local(spec.name, cache_root, paths=paths)
  if found is None:
    known = f"put its files in {cache_root / 'local' / spec.name} or " if layout else ""
    raise JaxpruneError(
        f"{label}: no such file, folder or locally cached dataset: {known}give a local path"
        " (jaxprune never downloads datasets)"
    )
  path, from_hub = found
  # a hub snapshot holds every config of the dataset; the user's own files are the data itself
  ds, split = _load(path, layout.config if layout and from_hub else None, spec.split, cache_root, label)
  fmt = _formatter(label, spec.field, layout, list(ds.column_names), ds.features)
  if len(ds):
    try:
      fmt(ds[0])
    except (KeyError, ValueError, IndexError, TypeError) as err:
      raise JaxpruneError(
          f"{label}: rows have no field {err}: name the field, e.g. {label}:{split}:FIELD"
          f" (columns: {', '.join(ds.column_names)})"
      ) from None
  width = len(str(max(len(ds) - 1, 0)))

  def read(key: str) -> str:
    return fmt(ds[int(key)])

  return Group(
      name=group_name or split,
      keys=tuple(f"{i:0{width}d}" for i in range(len(ds))),
      read=read,
      size=lambda: int(ds.data.nbytes),
      info={
          "path": str(path), "split": split, "rows": len(ds),
          "fields": list(getattr(fmt, "fields", [])) or getattr(fmt, "__name__", "").lstrip("_"),
          "licence": "see the dataset's card", **({"note": layout.note} if layout and layout.note else {}),
      },
  )
