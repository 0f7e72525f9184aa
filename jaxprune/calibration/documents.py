"""Documents: the unit of calibration text, how to list them and how to read them.

A corpus is a tuple of groups (projects). A group lists its documents by stable
keys (paths relative to the group's root, zip member names, row numbers),
always sorted, so nothing depends on filesystem order. Reading a document gives
its text, or None with the reason counted (binary, non-UTF-8, filtered, empty).

Calibration and held-out text come from disjoint units (a file; for datasets,
a row): the sha256 of the unit's name decides, the same on every machine.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import gzip
import hashlib
import logging
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HELD_OUT_FRACTION = 0.1
"""Share of units whose text is kept for evaluation, never for calibration."""

Reader = Callable[[str], "bytes | str"]


def _identity(key: str) -> str:
  return key


def _keep(text: str) -> str | None:
  return text


@dataclasses.dataclass(frozen=True)
class Group:
  """One project of a corpus; sampling draws evenly from the groups.

  Attributes:
    name: stable group name; part of every unit's hashed name.
    keys: sorted document keys.
    read: key -> raw bytes (decoded here) or ready text.
    unit: key -> the name of what calibration and held-out never share.
    size: bytes of the group's source (for provenance; called lazily).
    info: provenance of the group (origin, licence, path).
  """

  name: str
  keys: tuple[str, ...]
  read: Reader
  unit: Callable[[str], str] = _identity
  size: Callable[[], int] = lambda: 0
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Corpus:
  """The documents of a domain, how to clean them, and where they come from."""

  domain: str
  groups: tuple[Group, ...]
  clean: Callable[[str], str | None] = _keep
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def num_documents(self) -> int:
    return sum(len(g.keys) for g in self.groups)


Doc = tuple[int, str]
"""A document: (index of its group in the corpus, its key)."""


# --------------------------------------------------------------------------- #
# Held-out split (pure)
# --------------------------------------------------------------------------- #


def is_held_out(unit: str, fraction: float = HELD_OUT_FRACTION) -> bool:
  """Whether a unit belongs to the held-out side: a hash, so no seed or order matters."""
  digest = hashlib.sha256(unit.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") < fraction * 2**64


def split(corpus: Corpus, fraction: float = HELD_OUT_FRACTION) -> tuple[list[list[str]], list[list[str]]]:
  """Per group, the calibration keys and the held-out keys (each sorted)."""
  calib: list[list[str]] = []
  held: list[list[str]] = []
  for g in corpus.groups:
    side = [is_held_out(f"{g.name}/{g.unit(k)}", fraction) for k in g.keys]
    calib.append([k for k, h in zip(g.keys, side) if not h])
    held.append([k for k, h in zip(g.keys, side) if h])
  return calib, held


def cut(text: str, held_out: bool, fraction: float = HELD_OUT_FRACTION) -> str:
  """The calibration head or the held-out tail of one text, cut at a line end.

  Used when a corpus has too few units for a hash split (one file, a handful
  of rows): both sides then come from every document, never the same text.
  """
  at = int(len(text) * (1 - fraction))
  nl = text.rfind("\n", 0, at)
  at = nl + 1 if nl > 0 else at
  return text[at:] if held_out else text[:at]


# --------------------------------------------------------------------------- #
# Reading and cleaning (pure, except the readers themselves)
# --------------------------------------------------------------------------- #


def decode(raw: bytes | str) -> tuple[str | None, str]:
  """Text of a document, or None and why not ("binary", "non-UTF-8")."""
  if isinstance(raw, str):
    return raw, "ok"
  if b"\x00" in raw:
    return None, "binary"
  try:
    return raw.decode("utf-8").lstrip("\ufeff"), "ok"
  except UnicodeDecodeError:
    return None, "non-UTF-8"


def read_text(corpus: Corpus, doc: Doc) -> tuple[str | None, str]:
  """Decoded, cleaned text of a document, or None and why ("binary", "filtered"...)."""
  try:
    raw = corpus.groups[doc[0]].read(doc[1])
  except OSError:  # removed or unreadable since it was listed
    return None, "unreadable"
  text, why = decode(raw)
  if text is not None:
    text = corpus.clean(text)
    why = "filtered" if text is None else why
  if text is not None and not text.strip():
    text, why = None, "empty"
  return text, why


def describe_skips(outcomes: Iterable[str]) -> str:
  """'3 read; skipped 2 binary, 1 non-UTF-8' for logs and errors."""
  counts = collections.Counter(outcomes)
  skipped = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()) if k != "ok" and v)
  return f"{counts.get('ok', 0)} read" + (f"; skipped {skipped}" if skipped else "")


_LICENCE = re.compile(r"copyright|licen[cs]e|spdx|all rights reserved|\bGPL\b|general public|warranty", re.I)
_C_COMMENT = re.compile(r"[ \t]*(?:/\*.*?\*/[ \t]*\n?|//[^\n]*\n?(?:[ \t]*//[^\n]*\n?)*)|[ \t]*\n", re.S)
_HASH_COMMENT = re.compile(r"[ \t]*#[^\n]*\n?(?:[ \t]*#[^\n]*\n?)*|[ \t]*\n")


def strip_licence_header(text: str, style: str) -> str:
  """Drop the leading comment blocks that carry a copyright or licence notice.

  The same notice opens every file of a project (25 lines in each OpenJDK
  file); left in, it would weigh in Wanda's statistics as if it were code.
  Other leading comments (``#!``, ``-*- C++ -*-``) are kept.
  """
  pattern = _C_COMMENT if style == "c" else _HASH_COMMENT
  pos, kept, dropped = 0, [], False
  while (m := pattern.match(text, pos)) and m.end() > pos:
    block = m.group(0)
    if _LICENCE.search(block):
      dropped = True
    else:
      kept.append(block)
    pos = m.end()
  if not dropped:
    return text
  prelude = re.sub(r"\n{3,}", "\n\n", "".join(kept)).lstrip("\n")
  return prelude + text[pos:]


def looks_minified(text: str) -> bool:
  """Bundled or minified code (very long lines) is not ordinary source code."""
  lines = text.count("\n") + 1
  return len(text) > 2000 and (len(text) / lines > 200 or max(map(len, text.split("\n"))) > 5000)


def code_cleaner(style: str) -> Callable[[str], str | None]:
  """Cleaning for code domains: no licence boilerplate, no minified files."""

  def clean(text: str) -> str | None:
    return None if looks_minified(text) else strip_licence_header(text, style)

  return clean


# --------------------------------------------------------------------------- #
# Listing (I/O)
# --------------------------------------------------------------------------- #


def _matches(name: str, suffixes: tuple[str, ...]) -> bool:
  if not suffixes:
    return True
  return any(name.endswith(s) if s else "." not in name for s in suffixes)


def list_tree(
    root: Path,
    *,
    under: Iterable[str] = ("",),
    suffixes: tuple[str, ...] = (),
    exclude: frozenset[str] = frozenset(),
) -> tuple[str, ...]:
  """Sorted relative paths of the regular files below ``root/under``.

  ``suffixes``: name endings to take ("" means no extension; empty: all);
  ``exclude``: directory names to skip. Hidden entries are skipped.
  """
  keys = []
  for sub in under:
    top = root / sub
    for dirpath, dirnames, filenames in os.walk(top):
      dirnames[:] = [d for d in dirnames if d not in exclude and not d.startswith(".")]
      rel = Path(dirpath).relative_to(root)
      for name in filenames:
        path = Path(dirpath) / name
        if not name.startswith(".") and _matches(name, suffixes) and path.is_file():
          keys.append((rel / name).as_posix())
  return tuple(sorted(set(keys)))


def _read_file(root: Path, key: str) -> bytes:
  data = (root / key).read_bytes()
  return gzip.decompress(data) if key.endswith(".gz") else data


def tree_group(name: str, root: Path, keys: tuple[str, ...], info: Mapping[str, Any] | None = None) -> Group:
  """A group of files below ``root``."""
  return Group(
      name=name,
      keys=keys,
      read=functools.partial(_read_file, root),
      size=lambda: sum((root / k).stat().st_size for k in keys),
      info={"path": str(root), **dict(info or {})},
  )


@functools.lru_cache(maxsize=4)
def _open_zip(path: str, mtime: float) -> zipfile.ZipFile:
  del mtime  # part of the cache key only: a replaced zip is reopened
  return zipfile.ZipFile(path)


def zip_group(
    name: str,
    path: Path,
    *,
    suffixes: tuple[str, ...],
    exclude_prefixes: tuple[str, ...] = (),
    info: Mapping[str, Any] | None = None,
) -> Group:
  """A group of members of a zip archive (a JDK's src.zip), read in place."""
  zf = _open_zip(str(path), path.stat().st_mtime)
  members = {i.filename: i.file_size for i in zf.infolist() if not i.is_dir()}
  keys = tuple(
      sorted(k for k in members if _matches(k, suffixes) and not k.startswith(exclude_prefixes))
  )
  return Group(
      name=name,
      keys=keys,
      read=zf.read,
      size=lambda: sum(members[k] for k in keys),
      info={"path": str(path), **dict(info or {})},
  )
