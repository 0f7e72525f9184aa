"""Fixtures of the fault sweep: a tiny model, a finished run, a user's folder, small file systems."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from jaxprune import cli
from tests.helpers import make_tiny_hf


@pytest.fixture(scope="package")
def model(tmp_path_factory) -> Path:
  return make_tiny_hf(tmp_path_factory.mktemp("model") / "m", "llama")


@pytest.fixture(scope="package")
def tokens(tmp_path_factory) -> Path:
  path = tmp_path_factory.mktemp("tokens") / "calib.npy"
  np.save(path, np.random.default_rng(1).integers(0, 97, (8, 16)))
  return path


@pytest.fixture(scope="package")
def run_dir(model, tokens, tmp_path_factory) -> Path:
  out = tmp_path_factory.mktemp("run") / "r"
  assert cli.main(["prune", "--model", str(model), "--calib-tokens", str(tokens), "--out", str(out)]) == 0
  return out


def snapshot(folder: Path) -> dict[str, bytes | None]:
  """Every path under ``folder`` (hidden ones too) with its bytes (None for folders)."""
  return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def one_line_error(capsys, code: int, expected: int, *patterns: str) -> str:
  """Assert the exit code and exactly one stderr line, without a traceback, holding ``patterns``."""
  err = capsys.readouterr().err
  lines = err.strip().splitlines()
  assert code == expected and len(lines) == 1 and "Traceback" not in err, (code, err)
  for pattern in patterns:
    assert pattern in lines[0], (pattern, lines[0])
  return lines[0]


@pytest.fixture
def no_model_load(monkeypatch):
  """Fail the test if a command loads the model (its output should have been refused first)."""
  from jaxprune import converters

  def refuse(*args, **kwargs):
    raise AssertionError("the model was loaded before the output was checked")

  monkeypatch.setattr(converters, "load_model", refuse)


@contextlib.contextmanager
def small_fs(where: Path, size: str, read_only: bool = False):
  """A tmpfs of ``size`` mounted at ``where`` (root only); unmounted after."""
  where.mkdir(parents=True, exist_ok=True)
  options = f"size={size}" + (",ro" if read_only else "")
  subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True, capture_output=True)
  try:
    yield where
  finally:
    subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def _can_mount() -> str | None:
  """None if tmpfs mounts work here, else why not."""
  if os.geteuid() != 0:
    return "mounting a small tmpfs needs root"
  probe = Path(f"/tmp/jaxprune-mount-probe-{os.getpid()}")
  try:
    with small_fs(probe, "64k"):
      pass
  except (subprocess.CalledProcessError, FileNotFoundError) as err:
    return f"mount -t tmpfs failed here ({err})"
  finally:
    with contextlib.suppress(OSError):
      probe.rmdir()
  return None


MOUNT_SKIP = _can_mount()
needs_mount = pytest.mark.skipif(MOUNT_SKIP is not None, reason=MOUNT_SKIP or "")
