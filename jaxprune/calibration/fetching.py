"""Fetching corpora into the cache: Debian packages and npm packages, atomically.

Debian packages are fetched with ``apt-get download`` and unpacked with
``dpkg-deb -x`` (never installed: an apt install would upgrade the system's
JDK or Python); npm packages are installed at pinned versions with
``npm install``. Each fetch builds in a temporary folder and renames it into
place under a file lock, so a killed fetch leaves nothing half-written, two
concurrent fetches do the work once, and a second fetch does nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from jaxprune.errors import JaxpruneError

CACHE_ENV = "JAXPRUNE_CACHE"
MARKER = ".jaxprune-fetched.json"
NPM_PACKAGES = ("lodash@4.17.21", "three@0.177.0", "webpack@5.99.9", "express@5.1.0", "jquery@3.7.1")
NPM_BEFORE = "2025-06-01"  # transitive dependencies resolve as on this date: same tree everywhere


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
  """The corpora cache: ``cache_dir``, else $JAXPRUNE_CACHE, else the user cache."""
  if cache_dir:
    return Path(cache_dir).expanduser().absolute()
  if os.environ.get(CACHE_ENV):
    return Path(os.environ[CACHE_ENV]).expanduser().absolute()
  base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(base) / "jaxprune" / "corpora"


@dataclasses.dataclass(frozen=True)
class Deb:
  """A Debian package unpacked (not installed) into CACHE/deb/<package>."""

  package: str
  licence: str

  def path(self, root: Path) -> Path:
    return root / "deb" / self.package


@dataclasses.dataclass(frozen=True)
class Npm:
  """npm packages at pinned versions, installed into CACHE/npm."""

  packages: tuple[str, ...] = NPM_PACKAGES

  def path(self, root: Path) -> Path:
    return root / "npm"


def fetched(item: Deb | Npm, root: Path) -> dict | None:
  """The fetch record of an item, or None when it is missing or stale."""
  try:
    record = json.loads((item.path(root) / MARKER).read_text())
  except (OSError, ValueError):
    return None
  if isinstance(item, Npm) and record.get("packages") != list(item.packages):
    return None
  return record


def _run(cmd: list[str], cwd: Path | None = None) -> str:
  try:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
  except FileNotFoundError:
    raise JaxpruneError(
        f"{cmd[0]} not found: this corpus comes from {'npm' if cmd[0] == 'npm' else 'Debian packages'};"
        f" install {cmd[0]} or calibrate on a local folder instead"
    ) from None
  if done.returncode:
    lines = [l for l in (done.stderr + done.stdout).splitlines() if l.strip() and not l.startswith("W:")]
    hint = "; run `apt-get update` first" if "Unable to locate" in done.stderr else ""
    raise JaxpruneError(f"`{' '.join(cmd)}` failed: {(lines or ['no output'])[-1].strip()}{hint}")
  return done.stdout


def _install(final: Path, build: Callable[[Path], dict], fresh: Callable[[], dict | None]) -> tuple[dict, bool]:
  """Build ``final`` in a temp folder and rename it into place (idempotent, locked).

  Returns the fetch record and whether this call did the work.
  """
  from filelock import FileLock

  final.parent.mkdir(parents=True, exist_ok=True)
  with FileLock(str(final.parent / f".{final.name}.lock")):
    if (record := fresh()) is not None:
      return record, False
    for stale in final.parent.glob(f".{final.name}.tmp*"):  # left by a killed fetch
      shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp", dir=final.parent))
    try:
      record = {**build(tmp), "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
      (tmp / MARKER).write_text(json.dumps(record, indent=1))
      tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other
      if final.exists():
        old = final.with_name(f".{final.name}.tmp-old")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
      else:
        tmp.rename(final)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
  return record, True


def _build_deb(package: str, root: Path, tmp: Path) -> dict:
  with tempfile.TemporaryDirectory(prefix=".download", dir=root) as dl:
    _run(["apt-get", "download", package], cwd=Path(dl))
    deb = next(Path(dl).glob("*.deb"))
    version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    digest = hashlib.sha256(deb.read_bytes()).hexdigest()
    _run(["dpkg-deb", "-x", str(deb), str(tmp)])
  return {"source": "debian", "package": package, "version": version, "deb_sha256": digest}


def _build_npm(packages: tuple[str, ...], tmp: Path) -> dict:
  deps = dict(p.rsplit("@", 1) for p in packages)
  (tmp / "package.json").write_text(json.dumps({"name": "jaxprune-corpus", "private": True, "dependencies": deps}))
  _run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--before", NPM_BEFORE], cwd=tmp)
  lock = json.loads((tmp / "package-lock.json").read_text())
  return {"source": "npm", "packages": list(packages), "before": NPM_BEFORE,
          "resolved": len(lock.get("packages", {})) - 1}


def fetch_item(item: Deb | Npm, root: Path) -> tuple[dict, bool]:
  """Fetch one item into the cache unless it is there already."""
  if isinstance(item, Deb):
    build = functools.partial(_build_deb, item.package, root)
  else:
    build = functools.partial(_build_npm, item.packages)
  return _install(item.path(root), build, lambda: fetched(item, root))
