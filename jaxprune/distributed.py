"""Multi-host runs: `jax.distributed` start-up, fail-fast supervision, barriers.

One process per host (or per GPU) runs the same ``jaxprune prune`` command;
they meet at a coordinator (process 0's ``HOST:PORT``), agree on the global
device list, and from then on the driver's ``data`` mesh spans every device of
every host. On CPU the cross-process collectives go over gloo.

Why a supervisor: when a peer dies, JAX's coordination service terminates every
other process from C++ (an abseil fatal log and a stack trace, after the
heartbeat timeout), and it does the same when a process cannot join within the
initialization timeout. Python cannot catch that, so ``jaxprune prune`` runs
its real work in a child process (`supervise`) and turns such an abort into one
`JaxpruneError` line; JAX's own log goes to a file named in that line.

Example (two hosts):
  host0$ jaxprune prune ... --coordinator host0:8476 --num-processes 2 --process-id 0
  host1$ jaxprune prune ... --coordinator host0:8476 --num-processes 2 --process-id 1
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)

WORKER_ENV = "JAXPRUNE_DISTRIBUTED_WORKER"  # set in the supervised child
# Set by the supervisor when its own stderr is a terminal: the worker's stderr
# is a pipe, so without it the worker's progress bars would switch themselves off.
TTY_ENV = "JAXPRUNE_STDERR_IS_TTY"
AUTO = "auto"  # --coordinator auto: let JAX detect SLURM / Open MPI / JAX_COORDINATOR_ADDRESS

# Where the worker's stderr starts to be kept back: a log line of JAX's
# distributed runtime (abseil format, e.g. "F1128 16:06:27.091636   11885
# client.h:80] Terminating process because ...") or a Python traceback.
_HOLD = re.compile(
    rb"^(?:[EFW]\d{4} [\d:.]+ +\d+ (?:coordination\w*|client|service|distributed\w*|preemption\w*)\.(?:cc|h):\d+\] "
    rb"|Traceback \(most recent call last\):)"
)
_FATAL = b"JAX distributed service detected fatal errors"
_LOST = re.compile(rb"Gloo \w+ failed[^\n]*|Connection (?:reset|closed) by peer")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """Where the processes of one run meet, and how long they wait for each other.

  Attributes:
    coordinator: ``HOST:PORT`` of process 0 (a free port there), or None to
      let `jax.distributed.initialize` detect it (SLURM, Open MPI,
      ``JAX_COORDINATOR_ADDRESS``).
    num_processes: processes in the run (None: detected).
    process_id: this process, in ``0 .. num_processes - 1`` (None: detected).
    init_timeout_s: how long to wait for every process to join.
    heartbeat_timeout_s: a process silent this long counts as dead, and every
      other process stops (so nobody hangs in a collective).
    shutdown_timeout_s: how long a finished process waits for the others.
    cpu_collectives: CPU cross-process collectives (``gloo`` or ``mpi``).
  """

  coordinator: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  init_timeout_s: int = 300
  heartbeat_timeout_s: int = 60
  shutdown_timeout_s: int = 120
  cpu_collectives: str = "gloo"

  def validate(self) -> None:
    if self.coordinator is not None:
      host, sep, port = self.coordinator.rpartition(":")
      if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise JaxpruneError(
            f"--coordinator {self.coordinator!r} is not HOST:PORT: give process 0's host and a free port,"
            " e.g. --coordinator node001:8476"
        )
    if self.num_processes is not None and self.num_processes < 1:
      raise JaxpruneError(f"--num-processes {self.num_processes} must be at least 1")
    if self.process_id is not None:
      if self.process_id < 0 or (self.num_processes is not None and self.process_id >= self.num_processes):
        raise JaxpruneError(
            f"--process-id {self.process_id} is out of range: give 0 .. {(self.num_processes or 1) - 1}"
        )
    flags = {"init_timeout_s": "--init-timeout", "heartbeat_timeout_s": "--heartbeat-timeout",
             "shutdown_timeout_s": "shutdown_timeout_s"}
    for name, flag in flags.items():
      if getattr(self, name) < 1:
        raise JaxpruneError(f"{flag} {getattr(self, name)} must be at least 1 second")

  def describe(self) -> str:
    """'process I of N (coordinator HOST:PORT)': who failed, as far as known before start-up."""
    who = "this process" if self.process_id is None else f"process {self.process_id}"
    of = f" of {self.num_processes}" if self.num_processes is not None else ""
    at = f" (coordinator {self.coordinator})" if self.coordinator else ""
    return f"{who}{of}{at}"


def is_worker() -> bool:
  """True in the child that `supervise` started (it does the real work)."""
  return os.environ.get(WORKER_ENV) == "1"


def initialize(config: DistributedConfig) -> None:
  """Join the distributed run; call before any JAX computation.

  Errors in the arguments raise `JaxpruneError`. A process that cannot join
  within ``init_timeout_s``, or whose peer dies later, is terminated by JAX
  itself (see the module docstring; `supervise` reports it in one line).
  """
  import jax

  config.validate()
  if jax.distributed.is_initialized():
    log.info("jax.distributed already initialized: process %d of %d", jax.process_index(), jax.process_count())
    return
  if is_worker():
    _die_with_supervisor()
  jax.config.update("jax_cpu_collectives_implementation", config.cpu_collectives)
  explicit = None not in (config.coordinator, config.num_processes, config.process_id)
  try:
    jax.distributed.initialize(
        coordinator_address=config.coordinator,
        num_processes=config.num_processes,
        process_id=config.process_id,
        # Explicit flags skip cluster detection, which under SLURM would also
        # narrow each process to one GPU (SLURM_LOCALID).
        cluster_detection_method="deactivate" if explicit else None,
        initialization_timeout=config.init_timeout_s,
        heartbeat_timeout_seconds=config.heartbeat_timeout_s,
        shutdown_timeout_seconds=config.shutdown_timeout_s,
    )
  except (RuntimeError, ValueError, TypeError) as err:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "coordinator_address" in first or "must be defined" in first:
      raise JaxpruneError(
          "no coordinator, process count or process id given or detected: pass --coordinator HOST:PORT"
          " --num-processes N --process-id I, or --coordinator auto under SLURM / Open MPI"
      ) from None
    if "before" in first or "already" in first:
      raise JaxpruneError(
          f"jax.distributed could not start ({first}): initialize before any other JAX computation"
      ) from None
    raise JaxpruneError(
        f"jax.distributed could not start for {config.describe()} ({first}):"
        " check --coordinator, --num-processes and --process-id"
    ) from None
  log.info("process %d of %d: %d local of %d global devices", jax.process_index(), jax.process_count(),
           jax.local_device_count(), jax.device_count())


def barrier(name: str) -> None:
  """Wait until every process gets here (no-op in a single-process run)."""
  import jax

  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def check_same(value: str, what: str) -> None:
  """Refuse to go on unless every process passes the same ``value``.

  Processes started with different options would silently mix their
  statistics; every process learns of a mismatch at once and raises the same
  error (no process is left waiting in a collective).
  """
  import jax

  if jax.process_count() == 1:
    return
  import numpy as np
  from jax.experimental import multihost_utils

  digest = np.frombuffer(hashlib.sha256(value.encode()).digest(), np.uint8)
  every = np.asarray(multihost_utils.process_allgather(digest)).reshape(jax.process_count(), -1)
  differ = [i for i in range(every.shape[0]) if not np.array_equal(every[i], every[0])]
  if differ:
    raise JaxpruneError(
        f"process(es) {', '.join(map(str, differ))} got other {what} than process 0:"
        " start every process with the same command (only --process-id differs)"
    )


# --------------------------------------------------------------------------- #
# Supervision
# --------------------------------------------------------------------------- #


def supervise(command: Sequence[str], config: DistributedConfig) -> int:
  """Run ``command`` as a worker child; report a JAX abort as one error line.

  The child's stdout and stdin are inherited, its stderr passes through until
  JAX's distributed runtime logs a problem or Python prints a traceback; from
  then on it is kept back. If the child then dies of a lost peer, the kept
  text goes to a log file and this raises a `JaxpruneError` naming the cause
  and the fix; otherwise it is printed when the child ends.

  Returns:
    the child's exit status (when it did not die of a JAX abort).
  """
  env = {**os.environ, WORKER_ENV: "1", TTY_ENV: "1" if sys.stderr.isatty() else ""}
  proc = subprocess.Popen(list(command), env=env, stderr=subprocess.PIPE)
  # Ctrl-C reaches the child directly (same process group); a scheduler's SIGTERM is passed on.
  forwarded = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
               signal.SIGTERM: signal.signal(signal.SIGTERM, lambda sig, _: proc.send_signal(sig))}
  held = bytearray()
  try:
    tail = b""
    while chunk := os.read(proc.stderr.fileno(), 65536):
      if held:
        held += chunk
        continue
      out, tail, start = _split_held(tail + chunk)
      _write(out)
      held += start or b""
    _write(tail)
    rc = proc.wait()
  finally:
    for sig, handler in forwarded.items():
      signal.signal(sig, handler)
    proc.stderr.close()
  if (rc < 0 and _FATAL in held) or (rc != 0 and _LOST.search(held)):  # LOG(FATAL) aborts: SIGABRT
    path = _keep_log(bytes(held), config)
    raise JaxpruneError(f"{_diagnose(bytes(held), config)} (details: {path})")
  _write(bytes(held))
  if rc < 0:
    name = signal.Signals(-rc).name if -rc in {s.value for s in signal.Signals} else str(-rc)
    raise JaxpruneError(f"the worker of {config.describe()} was killed by {name} (out of memory?):"
                        " rerun the same command on every host to resume")
  return rc


def _split_held(data: bytes) -> tuple[bytes, bytes, bytes | None]:
  """(text to pass on, unfinished line to wait with, text to hold from `_HOLD` on).

  Lines are split at newlines and carriage returns, so progress bars pass on
  as they are drawn; only a line that could still turn into a log line waits.
  """
  pos = 0
  for match in re.finditer(rb"[^\r\n]*(?:\r\n|\r|\n)", data):
    if _HOLD.match(match.group()):
      return data[: match.start()], b"", data[match.start() :]
    pos = match.end()
  rest = data[pos:]
  if _HOLD.match(rest):
    return data[:pos], b"", rest
  if len(rest) < 80 and re.fullmatch(rb"[EFW][\d :.]*(?:[\w.]+(?::\d*)?)?|T[\w (]*", rest):
    return data[:pos], rest, None  # might become a log line: wait for more
  return data, b"", None


def _write(data: bytes) -> None:
  if data:
    sys.stderr.buffer.write(data)
    sys.stderr.flush()


def _diagnose(text: bytes, config: DistributedConfig) -> str:
  who = config.describe()
  rerun = "then rerun the same command on every host (the run resumes after its last finished block)"
  if b"RegisterTask" in text or (b"DEADLINE_EXCEEDED" in text and b"heartbeat" not in text):
    return (f"{who} could not join the distributed run within {config.init_timeout_s} s: start all processes"
            " with the same --coordinator and --num-processes, check that process 0's host is reachable on"
            " that port, or raise --init-timeout")
  dead = re.search(rb"stopped sending heartbeats\)?:?\s*\n((?:\S+\n)+)", text)
  if dead:
    tasks = ", ".join(t.decode() for t in dead.group(1).split()[:8])
    return (f"{who} stopped: process(es) {tasks} sent no heartbeat for {config.heartbeat_timeout_s} s"
            f" (died or hung): check their logs, {rerun}")
  if b"leader task" in text or b"Failed to send RPC" in text or b"Socket closed" in text:
    return (f"{who} stopped: it lost the coordinator (process 0 died or the network failed): check process 0's"
            f" log, {rerun}")
  lost = _LOST.search(text)
  if lost:
    return (f"{who} stopped: it lost the connection to another process in a collective"
            f" ({lost.group().decode(errors='replace').strip()}): check the other processes' logs, {rerun}")
  return f"{who} stopped: JAX's distributed service reported a fatal error in another process: {rerun}"


def _keep_log(text: bytes, config: DistributedConfig) -> str:
  ident = "x" if config.process_id is None else str(config.process_id)
  fd, path = tempfile.mkstemp(prefix=f"jaxprune-process{ident}-", suffix=".log")
  with os.fdopen(fd, "wb") as f:
    f.write(text)
  return path


def _die_with_supervisor() -> None:
  """Make the kernel kill this worker when its supervisor dies (Linux)."""
  if not sys.platform.startswith("linux"):
    return
  try:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    log.debug("prctl(PR_SET_PDEATHSIG) unavailable")
