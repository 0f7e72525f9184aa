"""What text a calibration domain names, and its provenance.

A domain is a named corpus (`python`, `java`, `cpp`, `javascript`, `english`,
`translation`, `math`, `generic`; see `jaxprune.calibration.corpora`), a local
dataset (``hf:<name-or-path>[:split][:field]``; see
`jaxprune.calibration.hfdata`), or a local file, folder or glob of text.
`resolve` turns the name into a `Corpus` (groups of documents), `sides` splits
it into calibration and held-out documents, `describe` is its provenance.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

from jaxprune.calibration import corpora, hfdata
from jaxprune.calibration.documents import HELD_OUT_FRACTION, Corpus, list_tree, split, tree_group
from jaxprune.errors import JaxpruneError

_GLOB_CHARS = "*?["


def known_domains() -> str:
  return ", ".join(corpora.DOMAINS) + ", hf:NAME_OR_PATH[:SPLIT][:FIELD], or a file, folder or glob of text"


def _local(spec: str, root: Path) -> Corpus:
  """A corpus of local text: every file below a folder, one file, or a glob's matches."""
  path = Path(spec).expanduser()
  if any(c in spec for c in _GLOB_CHARS) and not path.exists():
    matches = sorted(p for p in glob.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(p))
    if not matches:
      raise JaxpruneError(f"glob {spec!r} matches no files: check the pattern (quote it so the shell keeps it)")
    base = Path(os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in matches]))
    keys = tuple(sorted(Path(os.path.abspath(p)).relative_to(base).as_posix() for p in matches))
    return Corpus(spec, (tree_group("local", base, keys, {"glob": spec}),))
  if path.is_dir():
    keys = list_tree(path)
    if not keys:
      raise JaxpruneError(f"folder {path} has no files: put text files in it or choose another domain")
    return Corpus(spec, (tree_group("local", path, keys),))
  if hfdata.is_data_file(path):
    return Corpus(spec, (hfdata.dataset_group(hfdata.HfSpec(str(path)), root),))
  if path.is_file():
    return Corpus(spec, (tree_group("local", path.parent, (path.name,)),))
  raise JaxpruneError(f"unknown calibration domain {spec!r}: use one of {known_domains()}")


def resolve(domain: str, *, cache_dir: str | os.PathLike | None = None) -> Corpus:
  """The corpus a domain string names; one-line errors for anything unusable."""
  root = corpora.cache_root(cache_dir)
  if domain in corpora.DOMAINS:
    return corpora.build(domain, root)
  if domain.startswith("hf:"):
    return Corpus(domain, (hfdata.dataset_group(hfdata.parse(domain), root),))
  return _local(domain, root)


def sides(corpus: Corpus) -> tuple[list[list[str]], list[list[str]], bool]:
  """Calibration keys, held-out keys per group, and whether the split is positional.

  With too few units for a hash split (a single file), every document gives
  its head to calibration and its tail to held-out instead.
  """
  calib, held = split(corpus)
  if any(calib) and any(held):
    return calib, held, False
  every = [list(g.keys) for g in corpus.groups]
  return every, every, True


def portable_path(path: str) -> str:
  """``path`` as provenance records it: relative under the working folder, ``~/...`` under the home folder.

  A run.json committed with a reproduction then names its corpus files the
  same way on every machine (never ``/root/...`` of the one that made it).
  """
  absolute, cwd, home = Path(path).expanduser().absolute(), Path.cwd(), Path.home()
  # the working folder only when it is not the home folder or above it (then ~/ says more)
  bases = ([] if cwd == home or cwd in home.parents else [(cwd, "")]) + [(home, "~/")]
  for base, shown in bases:
    try:
      relative = absolute.relative_to(base)
    except ValueError:
      continue
    return shown + str(relative) if str(relative) != "." else (shown.rstrip("/") or ".")
  return str(path)


def describe(domain: str, *, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
  """Provenance of a domain for run.json and `jaxprune corpora list`: source, licence, size, readiness.

  Paths of the corpus files are `portable_path`s.
  """
  named = corpora.DOMAINS.get(domain)
  head: dict[str, Any] = {"domain": domain}
  if named:
    head |= {"kind": named.kind, "source": named.summary}
  try:
    corpus = resolve(domain, cache_dir=cache_dir)
  except JaxpruneError as err:  # a named domain that is not usable here is reported, not raised
    if named is None:
      raise
    return head | {"ready": False, "fix": str(err)}
  calib, held, positional = sides(corpus)
  groups = [{"name": g.name, "documents": len(g.keys), "bytes": g.size(), **g.info,
             **({"path": portable_path(g.info["path"])} if "path" in g.info else {})} for g in corpus.groups]
  return head | {
      "ready": True,
      "licence": "; ".join(sorted({str(g.get("licence", "unknown")) for g in groups})),
      "documents": sum(g["documents"] for g in groups),
      "bytes": sum(g["bytes"] for g in groups),
      "calibration_documents": sum(map(len, calib)),
      "held_out_documents": 0 if positional else sum(map(len, held)),
      "split": (f"last {HELD_OUT_FRACTION:.0%} of each document held out (too few files to split by file)"
                if positional else f"by sha256 of each file's relative path, {HELD_OUT_FRACTION:.0%} held out"),
      "groups": groups,
      **corpus.info,
  }
