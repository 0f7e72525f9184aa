"""Shared pieces of the benchmarks: per-process peak memory and worker runs."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def peak_rss_mib() -> float:
  """This process's peak resident memory (VmHWM), in MiB.

  Read from /proc rather than getrusage: a child's ru_maxrss starts at its
  parent's RSS at fork time, which would charge the parent's memory to it.
  """
  for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) / 1024
  return float("nan")


def run_worker(script: str, args: list[str], cwd: Path) -> dict:
  """Run ``script --worker ...`` in a fresh process; return the JSON it prints last."""
  with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
    code = subprocess.call([sys.executable, script, *args], stdout=out, stderr=err, cwd=cwd)
    out.seek(0)
    err.seek(0)
    if code:
      sys.exit(f"worker {args} failed:\n{err.read()[-3000:]}")
    return json.loads(out.read().strip().splitlines()[-1])
