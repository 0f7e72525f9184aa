"""Faults while working: bad dtypes, damaged state, signals, full and read-only file systems."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from jaxprune import cli, store
from tests.faults.conftest import needs_mount, one_line_error, small_fs, snapshot


def _prune(model, tokens, out, *extra):
  return ["prune", "--model", str(model), "--calib-tokens", str(tokens), "--out", str(out), *extra]


@pytest.mark.parametrize("dtype", ["banana", "int8", "uint8", "float64", "bool"])
@pytest.mark.parametrize("command", ["prune", "eval"])
def test_dtype_other_than_a_float_the_model_runs_in_is_refused(command, dtype, model, tokens, tmp_path, capsys,
                                                                no_model_load):
  out = tmp_path / "out"
  if command == "prune":
    argv = _prune(model, tokens, out, "--dtype", dtype)
  else:
    argv = ["eval", "--model", str(model), "--tasks", "ppl:python", "--dtype", dtype]
  one_line_error(capsys, cli.main(argv), 2, f"--dtype {dtype} is not a parameter dtype", "float32, bfloat16")
  assert list(tmp_path.iterdir()) == []


def test_run_json_records_the_parameter_dtype(model, tokens, run_dir, tmp_path):
  assert json.loads((run_dir / "run.json").read_text())["dtype"] == "float32"
  assert cli.main(_prune(model, tokens, tmp_path / "r16", "--dtype", "float16")) == 0
  assert json.loads((tmp_path / "r16" / "run.json").read_text())["dtype"] == "float16"


def _interrupt_after_first_block(monkeypatch, raise_it):
  """Make the prune stop (by ``raise_it``) right after block 1's state is saved."""
  original = store.BlockCheckpointer.save

  def save(self, step, *args, **kwargs):
    original(self, step, *args, **kwargs)
    raise_it()

  monkeypatch.setattr(store.BlockCheckpointer, "save", save)


SIGNALS = {"SIGINT": (signal.SIGINT, 130), "SIGTERM": (signal.SIGTERM, 143)}


@pytest.mark.parametrize("name", list(SIGNALS))
def test_signal_keeps_finished_blocks_and_the_rerun_resumes(name, model, tokens, tmp_path, capsys, monkeypatch):
  sig, code = SIGNALS[name]
  out = tmp_path / "r"
  with monkeypatch.context() as patch:
    _interrupt_after_first_block(patch, lambda: os.kill(os.getpid(), sig))
    rc = cli.main(_prune(model, tokens, out))
  one_line_error(capsys, rc, code, "interrupted", "finished blocks are kept", "rerun the same command to resume")
  assert not out.exists() and (tmp_path / ".r.jaxprune-partial" / "state").is_dir()
  assert signal.getsignal(signal.SIGTERM) is not None and signal.getsignal(signal.SIGTERM).__module__ != "jaxprune.failures"
  assert cli.main(_prune(model, tokens, out)) == 0
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["resuming after block 1 of 2 (an interrupted run of the same command)"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["r"] and (out / "run.json").is_file()


def test_damaged_state_is_one_line_and_overwrite_starts_over(model, tokens, tmp_path, capsys, monkeypatch):
  out = tmp_path / "r"

  def stop():
    raise KeyboardInterrupt

  with monkeypatch.context() as patch:
    _interrupt_after_first_block(patch, stop)
    assert cli.main(_prune(model, tokens, out)) == 130
  capsys.readouterr()
  steps = tmp_path / ".r.jaxprune-partial" / "state" / "steps"
  damaged = [p for p in steps.rglob("*") if p.is_file()]
  assert damaged
  for path in damaged:
    path.write_bytes(b"\x00garbage")
  one_line_error(capsys, cli.main(_prune(model, tokens, out)), 2, "cannot be read", "pass --overwrite")
  assert cli.main(_prune(model, tokens, out, "--overwrite")) == 0
  assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_bad_calibration_tokens_leave_nothing(model, tmp_path, capsys):
  bad = tmp_path / "bad.npy"
  np.save(bad, np.full((4, 16), 500))  # beyond the vocabulary of 97
  rc = cli.main(_prune(model, bad, tmp_path / "r"))
  one_line_error(capsys, rc, 2)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy"]


@pytest.mark.parametrize("command", ["export", "compare", "eval"])
def test_damaged_run_json_is_one_line(command, model, run_dir, tmp_path, capsys):
  damaged = shutil.copytree(run_dir, tmp_path / "damaged")
  (damaged / "run.json").write_text('{"model": ')
  argv = {
      "export": ["export", "--model", str(model), "--masks", str(damaged), "--out", str(tmp_path / "hf")],
      "compare": ["compare", str(run_dir), str(damaged), "--out", str(tmp_path / "rep")],
      "eval": ["eval", "--model", str(model), "--masks", str(damaged), "--tasks", "ppl:" + str(damaged / "run.json"),
               "--seqlen", "8"],
  }[command]
  one_line_error(capsys, cli.main(argv), 2, "run.json", "JSON")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged"]


READ_ONLY = {
    "prune": lambda m, tok, r, out: _prune(m, tok, out),
    "export": lambda m, tok, r, out: ["export", "--model", str(m), "--masks", str(r), "--out", str(out)],
    "compare": lambda m, tok, r, out: ["compare", str(r), str(r), "--out", str(out)],
    "eval": lambda m, tok, r, out: ["eval", "--model", str(m), "--tasks", "ppl:python", "--out", str(out) + ".json"],
}


@needs_mount
@pytest.mark.parametrize("command", list(READ_ONLY))
def test_read_only_out_is_refused_before_work(command, model, tokens, run_dir, tmp_path, capsys, no_model_load):
  with small_fs(tmp_path / "ro", "64k", read_only=True) as ro:
    code = cli.main(READ_ONLY[command](model, tokens, run_dir, ro / "out"))
    one_line_error(capsys, code, 2, "read-only file system")
    assert list(ro.iterdir()) == []


_QUIET_CLI = ("import logging, sys; from jaxprune import cli;"
              " logging.getLogger('jaxprune.converters.loading').setLevel(logging.ERROR);"  # the test model has no tokenizer
              " sys.argv[0] = 'jaxprune'; sys.exit(cli.main())")


def _program(*argv):
  """Run ``jaxprune ARGV`` as a program (a fault ends it the way a user sees it)."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  return subprocess.run([sys.executable, "-c", _QUIET_CLI, *argv], capture_output=True, text=True, env=env,
                        timeout=300, check=False)


@needs_mount
def test_disk_full_during_prune_is_one_line_and_resumes_once_space_is_freed(model, tmp_path):
  tokens = tmp_path / "calib.npy"
  np.save(tokens, np.random.default_rng(1).integers(0, 97, (12, 16)))
  model_before = snapshot(model)
  with small_fs(tmp_path / "disk", "160k") as disk:
    out = disk / "r"
    first = _program(*_prune(model, tokens, out))
    lines = first.stderr.strip().splitlines()
    assert first.returncode == 1 and len(lines) == 1 and "Traceback" not in first.stderr, first.stderr
    assert "no space left on the device" in lines[0] and "free space and rerun" in lines[0]
    assert not out.exists()
    kept = (disk / ".r.jaxprune-partial").exists()
    assert ("finished blocks are kept" in lines[0]) == kept
    subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
    second = _program(*_prune(model, tokens, out))
    assert second.returncode == 0, second.stderr
    assert ("resuming after block" in second.stderr) == kept
    assert sorted(p.name for p in disk.iterdir()) == ["r"] and (out / "run.json").is_file()
  assert snapshot(model) == model_before
