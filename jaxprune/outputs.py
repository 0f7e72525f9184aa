"""Claiming output paths: what a command may write, replace or never touch.

Every command that writes (``prune``, ``export``, ``compare``, ``eval --out``)
claims its output here before it starts working:

* the path must be non-empty, not the current folder or one above it, and not
  an input of the command (the model folder, a run) or a folder above one;
* the nearest existing folder on the way must be writable;
* an existing non-empty folder is replaced only if jaxprune made it (a run's
  ``run.json``, an export's ``.jaxprune.json``, a report's ``distances.json``
  carry a signature) and is of the same kind, and only with ``--overwrite``;
  anything else is refused and never touched.

Folders are built under a fixed hidden name beside the target
(``.NAME.jaxprune-partial``) and renamed into place once complete, so the
target is always absent, the old output, or the new complete one. A fixed name
lets an interrupted prune resume from it and lets the next attempt of any
command clear what a killed one left.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jaxprune.errors import JaxpruneError
from jaxprune.store import MASKS, RUN_FORMAT, RUN_JSON, STATE, WEIGHTS

log = logging.getLogger(__name__)

EXPORT_FORMAT = "jaxprune-export/1"
EXPORT_MARKER = ".jaxprune.json"
LIBRARY_FORMAT = "jaxprune-library/1"
KINDS = {"run": "a prune run", "export": "an export", "report": "a compare report", "library": "a sub-model library"}
_RUN_KEYS = {"model", "options", "block_sparsity", "versions"}  # run.json written before RUN_FORMAT
_UNFINISHED_RUN = {STATE, MASKS, WEIGHTS}


def _json(path: Path) -> Any:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def made_by_jaxprune(folder: Path) -> str | None:
  """The kind ("run", "export", "report") of a folder jaxprune wrote, else None."""
  run = _json(folder / RUN_JSON)
  if isinstance(run, dict) and (run.get("format") == RUN_FORMAT or _RUN_KEYS <= set(run)):
    return "run"
  names = {p.name for p in folder.iterdir()}
  if STATE in names and names <= _UNFINISHED_RUN and (folder / STATE / "steps").is_dir():
    return "run"  # an unfinished run written before runs were built beside their target
  marker = _json(folder / EXPORT_MARKER)
  if isinstance(marker, dict) and marker.get("format") == EXPORT_FORMAT:
    return "export"
  library = _json(folder / "library.json")
  if isinstance(library, dict) and library.get("format") == LIBRARY_FORMAT:
    return "library"
  report = _json(folder / "distances.json")
  if isinstance(report, dict) and str(report.get("format", "")).startswith("jaxprune-compare/"):
    return "report"
  return None


def _check_place(path: Path, raw: str, flag: str, inputs: Iterable[Any]) -> Path:
  """Refuse an empty path, the current folder or one above it, an input or a folder above one."""
  if not raw.strip():
    raise JaxpruneError(f"{flag} is empty: name the path to write")
  real = path.resolve()
  cwd = Path.cwd().resolve()
  if real == cwd or real in cwd.parents:
    raise JaxpruneError(f"{flag} {raw} is the current folder or one above it: name a new folder to write")
  for item in inputs:
    if item is None or not str(item).strip() or not Path(str(item)).expanduser().exists():
      continue
    source = Path(str(item)).expanduser().resolve()
    if real == source or real in source.parents:
      raise JaxpruneError(f"{flag} {raw} is an input of this command ({item}) or holds one: choose another {flag}")
  return path


def _check_writable(path: Path, flag: str, raw: str) -> None:
  """The nearest existing folder on the way to ``path`` must be a writable folder."""
  probe = path.parent
  while not probe.exists() and probe != probe.parent:
    probe = probe.parent
  if not probe.is_dir():
    raise JaxpruneError(f"{flag} {raw}: {probe} is a file, not a folder: choose another {flag}")
  if not os.access(probe, os.W_OK | os.X_OK):
    why = "is on a read-only file system" if _read_only(probe) else "is not writable by you"
    raise JaxpruneError(f"{flag} {raw}: {probe} {why}: choose another {flag}")


def _read_only(folder: Path) -> bool:
  try:
    return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
  except OSError:
    return False


@dataclasses.dataclass(frozen=True)
class Claim:
  """An output folder a command may write.

  Attributes:
    path: where the finished output goes.
    kind: "run", "export" or "report".
    replace: an earlier output of the same kind is there and goes at `commit`.
  """

  path: Path
  kind: str
  replace: bool = False

  @property
  def partial(self) -> Path:
    """The hidden folder beside ``path`` where the new output is built."""
    return self.path.with_name(f".{self.path.name}.jaxprune-partial")


def claim_dir(out: str | os.PathLike, kind: str, *, overwrite: bool = False, inputs: Iterable[Any] = (),
              flag: str = "--out") -> Claim:
  """Check that ``out`` may receive a new output of ``kind``; writes nothing."""
  raw = str(out)
  path = _check_place(Path(raw).expanduser().absolute(), raw, flag, inputs)
  what = KINDS[kind]
  if path.is_symlink() or (path.exists() and not path.is_dir()):
    raise JaxpruneError(f"{flag} {raw} is a file, not a folder: choose another {flag}")
  _check_writable(path, flag, raw)
  if not path.exists() or not any(path.iterdir()):
    return Claim(path, kind, replace=False)
  found = made_by_jaxprune(path)
  if found is None:
    raise JaxpruneError(
        f"{flag} {raw} already exists and holds files jaxprune did not write: choose another {flag}"
        " (jaxprune replaces only its own runs, exports and reports)")
  if found != kind:
    raise JaxpruneError(f"{flag} {raw} holds {KINDS[found]} of jaxprune, not {what}: choose another {flag}")
  unfinished = kind == "run" and not (path / "run.json").exists()
  if not overwrite and not unfinished:
    finished = "a finished run" if kind == "run" else what
    raise JaxpruneError(f"{flag} {raw} already holds {finished}: choose another {flag} or pass --overwrite")
  return Claim(path, kind, replace=True)


def start(claim: Claim, *, resume: bool = False) -> Path:
  """Create (or, with ``resume``, keep) the partial folder; returns it."""
  partial = claim.partial
  if partial.exists() and not resume:
    shutil.rmtree(partial)  # left by a killed attempt at this same output
  partial.mkdir(parents=True, exist_ok=True)  # mkdir honours the umask (mkdtemp would make it private)
  return partial


def _portable_commit_markers(partial: Path) -> None:
  """Orbax's ``commit_success.txt`` markers name the folder they were written in by its absolute
  path (the partial folder, on this machine); only their existence matters, so each is rewritten
  to name its folder relative to the output, and a committed run carries no machine path."""
  for marker in partial.rglob("commit_success.txt"):
    where = marker.parent.relative_to(partial).as_posix()
    marker.write_text(f"Checkpoint commit was successful to {where}")


def commit(claim: Claim) -> Path:
  """Move the complete partial folder into place; an old output goes only after."""
  path, partial = claim.path, claim.partial
  _portable_commit_markers(partial)
  old = path.with_name(f".{path.name}.jaxprune-old")
  if old.exists():
    shutil.rmtree(old)
  if path.exists():
    if any(path.iterdir()):
      os.rename(path, old)
    else:
      path.rmdir()
  try:
    os.rename(partial, path)
  except OSError:
    if old.exists():
      os.rename(old, path)  # put the old output back
    raise
  shutil.rmtree(old, ignore_errors=True)
  return path


def discard(claim: Claim) -> None:
  """Remove the partial folder (after a failure that leaves nothing worth keeping)."""
  shutil.rmtree(claim.partial, ignore_errors=True)


def claim_file(out: str | os.PathLike, *, inputs: Iterable[Any] = (), flag: str = "--out",
               is_ours=lambda data: False) -> Path:
  """Check that a file ``out`` may be written; an existing one only if ``is_ours(its JSON)``."""
  raw = str(out)
  path = _check_place(Path(raw).expanduser().absolute(), raw, flag, inputs)
  if path.is_dir():
    raise JaxpruneError(f"{flag} {raw} is a folder: name a file, e.g. {Path(raw) / 'eval.json'}")
  if not path.parent.is_dir():
    if path.parent.exists():
      raise JaxpruneError(f"{flag} {raw}: {path.parent} is a file, not a folder: choose another {flag}")
    raise JaxpruneError(f"{flag} {raw}: its folder does not exist; create it or choose another path")
  _check_writable(path, flag, raw)
  if path.exists() and not is_ours(_json(path)):
    raise JaxpruneError(f"{flag} {raw} already exists and jaxprune did not write it: choose another {flag}")
  return path

