"""Multi-host pruning: two local CPU processes (gloo over loopback).

The end-to-end tests run `jaxprune prune` as two real processes of one
`jax.distributed` run, each with 2 CPU devices (4 global devices), and compare
with a single-process run; one process is killed to check that the other stops
within the heartbeat timeout with one error line instead of hanging.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxprune import converters
from jaxprune import cli, distributed, pruning, store
from jaxprune.errors import JaxpruneError
from tests.helpers import make_tiny_hf

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
HEARTBEAT_S = 5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  folder = make_tiny_hf(tmp_path_factory.mktemp("tiny") / "m", "llama", num_hidden_layers=3)
  tokens = tmp_path_factory.mktemp("tok") / "calib.npy"
  np.save(tokens, np.random.default_rng(1).integers(0, 97, (12, 16)))
  return folder, tokens


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(tiny, out: Path, port: int, logs: Path, *extra: str) -> list[subprocess.Popen]:
  """Both processes of a 2-process run; each its own session, so it can be killed whole."""
  folder, tokens = tiny
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "TMPDIR": str(logs),
         "PYTHONPATH": str(REPO), "PYTHONFAULTHANDLER": "1"}  # SIGABRT then prints every thread's stack
  env.pop(distributed.WORKER_ENV, None)
  procs = []
  for i in range(2):
    command = [sys.executable, "-m", "jaxprune.cli", "prune", "--model", str(folder), "--calib-tokens",
               str(tokens), "--microbatch", "4", "--out", str(out), "--coordinator", f"127.0.0.1:{port}",
               "--num-processes", "2", "--process-id", str(i), "--heartbeat-timeout", str(HEARTBEAT_S),
               "--init-timeout", "60", *extra]
    procs.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=open(logs / f"out{i}", "wb"),
                                  stderr=open(logs / f"err{i}", "wb"), start_new_session=True))
  return procs


def _wait(proc: subprocess.Popen, timeout: float, log: Path | None = None) -> int:
  """The exit code; a process still running after ``timeout`` fails the test with its stacks."""
  try:
    return proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.kill(proc.pid, signal.SIGABRT)  # faulthandler writes where it hung to its stderr
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    pid = proc.args[proc.args.index('--process-id') + 1]
    err = log.read_text(errors="replace") if log is not None and log.exists() else ""
    pytest.fail(f"process {pid} hung for {timeout} s:\n{err[-6000:]}")


HANG_S = 300
"""A process still running after this long has hung (a quiet 2-core machine takes about 30 s; with other jobs
holding both cores it took over 120 s)."""


@pytest.mark.parametrize("extra", [(), ("--mesh", "data=2,model=2", "--params", "host")],
                         ids=["data-mesh", "model-axis-host-params"])
def test_two_processes_give_the_single_process_masks(tiny, tmp_path, extra):
  folder, tokens = tiny
  out = tmp_path / "multi"
  procs = _launch(tiny, out, _free_port(), tmp_path, *extra)
  single = pruning.prune(converters.load_model(str(folder)), np.load(tokens), config=pruning.PruneConfig(microbatch=4))
  codes = [_wait(p, HANG_S, tmp_path / f"err{i}") for i, p in enumerate(procs)]
  assert codes == [0, 0], [(tmp_path / f"err{i}").read_text()[-2000:] for i in range(2)]

  stored, _ = store.load_masks(out)
  assert set(stored) == set(single.masks)
  for name, mask in single.masks.items():
    np.testing.assert_array_equal(stored[name], mask, err_msg=name)
  record = json.loads((out / "run.json").read_text())
  assert record["devices"]["processes"] == 2 and record["devices"]["count"] == 4
  assert not (out / "state").exists()
  for i in range(2):  # every process finished with the same masks and said so
    assert "pruned 21 matrices" in (tmp_path / f"out{i}").read_text()


@pytest.mark.parametrize("victim", [1, 0], ids=["worker-dies", "coordinator-dies"])
def test_dead_process_stops_the_other_fast_with_one_line(tiny, tmp_path, victim):
  out = tmp_path / "run"
  procs = _launch(tiny, out, _free_port(), tmp_path)
  deadline = time.monotonic() + 90
  while not out.with_name(f".{out.name}.jaxprune-partial").exists():  # both joined and loaded the model
    assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "the run did not start"
    time.sleep(0.05)
  os.killpg(procs[victim].pid, signal.SIGKILL)
  killed = time.monotonic()
  survivor = 1 - victim
  code = _wait(procs[survivor], 45)
  elapsed = time.monotonic() - killed
  procs[victim].wait()

  err = (tmp_path / f"err{survivor}").read_text()
  assert code == 2, err[-2000:]
  assert elapsed < HEARTBEAT_S + 25, elapsed
  last = err.strip().splitlines()[-1]
  assert last.startswith("jaxprune prune: error: process"), err[-2000:]
  assert ("process(es) 1 sent no heartbeat" if victim == 1 else "lost the coordinator") in last
  assert "Traceback" not in err and "Check failure stack trace" not in err
  details = Path(last.rsplit("details: ", 1)[1].rstrip(")"))
  assert details.parent == tmp_path and details.read_text()  # JAX's own log is kept, not shown
  assert not (out / "run.json").exists()


def test_process_that_never_joins_fails_in_one_line(tiny, tmp_path, capsys):
  folder, tokens = tiny
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "TMPDIR": str(tmp_path)}
  env.pop(distributed.WORKER_ENV, None)
  started = time.monotonic()
  done = subprocess.run(
      [sys.executable, "-m", "jaxprune.cli", "prune", "--model", str(folder), "--calib-tokens", str(tokens),
       "--out", str(tmp_path / "run"), "--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", "2",
       "--process-id", "1", "--init-timeout", "2"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
  )
  assert done.returncode == 2, done.stderr[-2000:]
  assert time.monotonic() - started < 40
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("jaxprune prune: error: process 1 of 2") and "could not join" in last
  assert "Check failure" not in done.stderr
  assert not (tmp_path / "run").exists()


def test_coordinator_auto_detects_slurm(tiny, tmp_path):
  folder, tokens = tiny
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "SLURM_JOB_ID": "4242",
         "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
         "JAX_COORDINATOR_PORT": str(_free_port())}
  env.pop(distributed.WORKER_ENV, None)
  done = subprocess.run(
      [sys.executable, "-m", "jaxprune.cli", "-v", "prune", "--model", str(folder), "--calib-tokens", str(tokens),
       "--out", str(tmp_path / "run"), "--coordinator", "auto"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert "process 0 of 1: 2 local of 2 global devices" in done.stderr
  assert (tmp_path / "run" / "run.json").exists()


# --------------------------------------------------------------------------- #
# Fast checks: flags, supervision and diagnosis without a second process
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("flags, message", [
    (["--coordinator", "node1", "--num-processes", "2", "--process-id", "0"], "is not HOST:PORT"),
    (["--coordinator", "node1:99999", "--num-processes", "2", "--process-id", "0"], "is not HOST:PORT"),
    (["--coordinator", "node1:1234", "--num-processes", "2", "--process-id", "2"], "out of range"),
    (["--coordinator", "node1:1234", "--num-processes", "0", "--process-id", "0"], "at least 1"),
    (["--coordinator", "node1:1234", "--heartbeat-timeout", "0"], "at least 1 second"),
])
def test_bad_distributed_flags_one_line(tmp_path, capsys, flags, message):
  assert cli.main(["prune", "--model", "none", "--out", str(tmp_path / "r"), *flags]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and message in err
  assert not (tmp_path / "r").exists()


FATAL = (b"F1128 16:06:27.091636   11885 client.h:80] Terminating process because the JAX distributed service"
         b" detected fatal errors. absl::Status: UNAVAILABLE: The following tasks are unhealthy (stopped"
         b" sending heartbeats):\n1\nThe tasks have crashed.\n*** Check failure stack trace: ***\n    @ 0x7f SendToLog()\n")


def _child(script: str) -> list[str]:
  return [sys.executable, "-c", script]


def test_supervisor_turns_a_jax_abort_into_one_line(tmp_path, monkeypatch, capfd):
  monkeypatch.setenv("TMPDIR", str(tmp_path))
  script = ("import os, sys; w = sys.stderr.buffer.write; w(b'blocks: 33%\\r'); w(b'blocks: 66%\\r');"
            f" w({FATAL!r}); sys.stderr.flush(); os.abort()")
  config = distributed.DistributedConfig("127.0.0.1:1234", 2, 0, heartbeat_timeout_s=7)
  with pytest.raises(JaxpruneError) as err:
    distributed.supervise(_child(script), config)
  message = str(err.value)
  assert "\n" not in message and message.startswith("process 0 of 2")
  assert "process(es) 1 sent no heartbeat for 7 s" in message and "rerun the same command" in message
  shown = capfd.readouterr().err
  assert "33%\r" in shown and "66%\r" in shown and "client.h" not in shown  # progress passes, the abort does not
  assert b"Check failure" in Path(message.rsplit("details: ", 1)[1].rstrip(")")).read_bytes()


def test_supervisor_passes_on_ordinary_exits(capfd):
  config = distributed.DistributedConfig("127.0.0.1:1234", 2, 0)
  script = "import sys; print('done'); sys.stderr.write('jaxprune prune: error: bad input\\n'); sys.exit(2)"
  assert distributed.supervise(_child(script), config) == 2
  captured = capfd.readouterr()
  assert captured.out == "done\n" and captured.err == "jaxprune prune: error: bad input\n"
  script = "import os, sys; assert os.environ['JAXPRUNE_DISTRIBUTED_WORKER'] == '1'; raise ValueError('boom')"
  assert distributed.supervise(_child(script), config) == 1
  assert "Traceback" in capfd.readouterr().err  # an ordinary crash keeps its traceback


def test_supervisor_reports_a_killed_worker(capfd):
  config = distributed.DistributedConfig("127.0.0.1:1234", 2, 1)
  with pytest.raises(JaxpruneError, match="process 1 of 2 .* was killed by SIGKILL"):
    distributed.supervise(_child("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), config)


@pytest.mark.parametrize("text, expected", [
    (b"E1 RPC: /xla.coordination.CoordinationService/RegisterTask DEADLINE_EXCEEDED", "could not join"),
    (b"Failed to send RPC to coordination service. Either the leader task was preempted", "lost the coordinator"),
    (b"jax.errors.JaxRuntimeError: UNKNOWN: Gloo AllGather failed: Read error: Connection reset by peer",
     "lost the connection to another process in a collective (Gloo AllGather failed"),
])
def test_diagnosis(text, expected):
  assert expected in distributed._diagnose(text, distributed.DistributedConfig("h:1", 2, 0))


def test_single_process_helpers_are_no_ops():
  distributed.barrier("nothing")
  distributed.check_same("anything", "options")


@pytest.mark.parametrize("supervisor_tty,shown", [(True, True), (False, False)], ids=["terminal", "pipe"])
def test_worker_draws_progress_when_the_supervisor_has_a_terminal(monkeypatch, supervisor_tty, shown):
  import io

  monkeypatch.setenv(distributed.TTY_ENV, "1" if supervisor_tty else "")
  monkeypatch.setattr(sys, "stderr", io.StringIO())  # the worker's stderr is a pipe, never a terminal
  bar = cli.common.progress(3, "blocks")
  drawn = not bar.disable
  bar.update(1)
  bar.close()
  assert drawn == shown and ("1/3" in sys.stderr.getvalue()) == shown
