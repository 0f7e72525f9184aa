"""Running untrusted generated code: the one module every execution-based eval uses.

Each run is a fresh process session started from `_sandbox_init.py`, with a
temporary working directory deleted afterwards, a scrubbed environment,
`resource` limits (CPU time, address space, file size, processes, open files)
and a wall-clock timeout that kills the whole process group. Where Linux lets
us create namespaces (as root, or with unprivileged user namespaces), the run
also gets its own user, network, PID, mount, IPC and UTS namespaces: no network
at all (only a downed loopback), a read-only file system apart from a
size-limited tmpfs working directory, and a non-root uid for the program. Where
it does not, Python programs still get an audit hook that refuses sockets,
processes, signals and writes outside the working directory. Every result says
which layers were in force.

The module is over the ~400-line guide on purpose: it is the project's one
security boundary (with its two process-side helpers), and its limits,
isolation and result classification are reviewed together.

Example:
  >>> result = run(python_program("print(1 + 1)"))
  >>> result.status, result.stdout
  ('passed', '2\\n')
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import functools
import json
import logging
import math
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
_INIT = _HERE / "_sandbox_init.py"
GUARD_SOURCE = (_HERE / "_sandbox_guard.py").read_text()
ISOLATION_MODES = ("auto", "namespaces", "none")
STATUSES = ("passed", "failed", "compile_error", "timeout", "error")


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
  """Limits of one run; every field has a default sized for a HumanEval test.

  Attributes:
    timeout_s: wall-clock seconds for the whole run (all commands together).
    cpu_s: CPU seconds per process (default: ``ceil(timeout_s)``).
    memory_mb: address-space limit per process; None for none (the JVM and V8
      reserve far more address space than they use).
    file_mb: largest file a process may write (stdout and stderr included).
    disk_mb: size of the tmpfs working directory (namespaced runs).
    max_processes: processes and threads the program may run at once; the
      kernel enforces it for non-root uids, i.e. in namespaced runs or when
      not running as root.
    max_open_files: file descriptors per process.
    output_chars: characters kept from the end of stdout and of stderr.
    workers: parallel runs in `run_many` (default: the usable CPU cores).
    isolation: ``auto`` (namespaces when they work), ``namespaces`` (fail
      without them) or ``none`` (limits and the Python audit hook only).
    uid: the uid the program runs as outside its namespace when we are root.
    env: extra environment variables, as (name, value) pairs.
    tmp_root: where the temporary working directories go (default: $TMPDIR).
  """

  timeout_s: float = 10.0
  cpu_s: int | None = None
  memory_mb: int | None = 2048
  file_mb: int = 64
  disk_mb: int = 256
  max_processes: int = 64
  max_open_files: int = 256
  output_chars: int = 4000
  workers: int | None = None
  isolation: str = "auto"
  uid: int = 65534
  env: tuple[tuple[str, str], ...] = ()
  tmp_root: str | None = None

  def __post_init__(self):
    if self.isolation not in ISOLATION_MODES:
      raise JaxpruneError(f"sandbox isolation {self.isolation!r} is unknown: use one of {', '.join(ISOLATION_MODES)}")
    if self.timeout_s <= 0:
      raise JaxpruneError(f"sandbox timeout {self.timeout_s} s must be positive: give e.g. 10")


@dataclasses.dataclass(frozen=True)
class Program:
  """Files to write into the working directory and commands to run in order.

  The run stops at the first command that fails (a compiler's error, say);
  the first ``compile_commands`` commands build the program, and their
  failure is a ``compile_error``. ``guarded`` marks a Python program run under the audit hook. ``expose``
  names host paths the program reads (a precompiled header) that may lie
  under a directory its uid cannot enter; they are bound in read-only. With
  ``success_marker`` the run passes only if stdout ends with that line, so a
  program that exits 0 before its tests finish (``exit(0)`` in a completion)
  fails.
  """

  files: Mapping[str, str | bytes]
  commands: tuple[tuple[str, ...], ...]
  guarded: bool = False
  expose: tuple[str, ...] = ()
  success_marker: str | None = None
  compile_commands: int = 0


def success_marker() -> str:
  """A fresh line for `Program.success_marker`: no program can print it by chance."""
  return f"jaxprune-tests-passed-{secrets.token_hex(8)}"


@dataclasses.dataclass(frozen=True)
class SandboxResult:
  """Outcome of one run.

  Attributes:
    status: ``passed`` (every command exited 0), ``failed`` (one did not, or
      was killed by a limit other than time), ``compile_error`` (the failed
      command is one of the program's `Program.compile_commands`), ``timeout`` (wall clock or CPU
      time ran out) or ``error`` (the sandbox itself could not run it).
    returncode: exit code of the last command run; negative for a signal;
      None when none finished.
    stdout, stderr: the last ``output_chars`` characters of each.
    duration_s: wall-clock seconds of the run.
    isolation: the layers that were in force.
    network: what blocked the network: ``net-ns``, ``audit-hook`` or ``none``.
    failed_command: index of the command that failed, or None.
  """

  status: str
  returncode: int | None
  stdout: str
  stderr: str
  duration_s: float
  isolation: tuple[str, ...]
  network: str
  failed_command: int | None = None

  @property
  def passed(self) -> bool:
    return self.status == "passed"


# --------------------------------------------------------------------------- #
# Building programs
# --------------------------------------------------------------------------- #


def python_program(source: str, *, guarded: bool = True, files: Mapping[str, str] | None = None) -> Program:
  """A Python program run as ``main.py`` by this interpreter, under the audit hook by default."""
  command = (sys.executable, "-I", "-B", "main.py")
  if guarded:
    command = (sys.executable, "-I", "-B", "-c", GUARD_SOURCE, "main.py")
  return Program(files={**(files or {}), "main.py": source}, commands=(command,), guarded=guarded)


def _check_program(program: Program) -> None:
  for name in program.files:
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts:
      raise ValueError(f"sandbox file name {name!r} must be a relative path inside the working directory")
  for command in program.commands:
    if command and _built_in_run(command[0]):
      continue
    if not command or shutil.which(command[0]) is None:
      raise JaxpruneError(
          f"sandbox command {command[:1]} is not an installed program: install it or fix the command"
      )


def _built_in_run(executable: str) -> bool:
  """``./a.out``: a program an earlier command builds in the working directory."""
  return "/" in executable and not os.path.isabs(executable)


def _needs_cover(path: str) -> str | None:
  """The outermost directory above ``path`` that other users cannot enter, if any."""
  parent = Path(path).parent
  for ancestor in [*reversed(parent.parents), parent]:
    if ancestor != Path("/") and not os.stat(ancestor).st_mode & stat.S_IXOTH:
      return str(ancestor)
  return None


def _covers(program: Program, workdir: str) -> dict[str, list[str]]:
  """Directories to hide behind a tmpfs and the paths to re-expose inside them.

  A program running as another uid cannot reach an interpreter installed under
  a private directory (pyenv's /root/.pyenv with /root at 0700), nor a working
  directory under one; the mount namespace re-exposes just those paths.
  """
  needed = {os.path.realpath(shutil.which(c[0]) or c[0]) for c in program.commands if not _built_in_run(c[0])}
  needed |= {workdir, *(os.path.realpath(p) for p in program.expose)}
  if any(os.path.realpath(c[0]) == os.path.realpath(sys.executable) for c in program.commands):
    needed |= {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
  covers: dict[str, set[str]] = {}
  for path in needed:
    cover = _needs_cover(path)
    if cover is not None:
      covers.setdefault(cover, set()).add(path)
  # Bind the outermost paths only: a prefix already brings its bin/.
  return {
      cover: sorted(p for p in paths if not any(q != p and p.startswith(q + os.sep) for q in paths))
      for cover, paths in covers.items()
  }


# --------------------------------------------------------------------------- #
# Running
# --------------------------------------------------------------------------- #


def _limits(config: SandboxConfig, namespaced: bool) -> dict[str, tuple[int, int]]:
  cpu = config.cpu_s or math.ceil(config.timeout_s)
  mb = 1 << 20
  limits = {
      "RLIMIT_CPU": (cpu, cpu + 1),
      "RLIMIT_FSIZE": (config.file_mb * mb, config.file_mb * mb),
      "RLIMIT_NOFILE": (config.max_open_files, config.max_open_files),
      "RLIMIT_CORE": (0, 0),
  }
  if config.memory_mb is not None:
    limits["RLIMIT_AS"] = (config.memory_mb * mb, config.memory_mb * mb)
  # RLIMIT_NPROC counts every process of the uid: without a namespace of our
  # own a non-root user's other processes would count against the program.
  if namespaced or os.geteuid() == 0:
    limits["RLIMIT_NPROC"] = (config.max_processes, config.max_processes)
  return limits


def _env(config: SandboxConfig, workdir: str) -> dict[str, str]:
  env = {
      "PATH": "/usr/local/bin:/usr/bin:/bin",
      "HOME": workdir,
      "TMPDIR": workdir,
      "LANG": "C.UTF-8",
      "LC_ALL": "C.UTF-8",
  }
  env.update(dict(config.env))
  return env


def _encode(content: str | bytes) -> str | dict[str, str]:
  return content if isinstance(content, str) else {"b64": base64.b64encode(content).decode()}


def _tail(f, chars: int) -> str:
  f.seek(0, os.SEEK_END)
  size = f.tell()
  f.seek(max(0, size - 4 * chars))
  return f.read().decode("utf-8", "replace")[-chars:]


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
  """Wait for ``proc`` to exit without reaping it, so its group id stays ours; True on time-out."""
  fd = os.pidfd_open(proc.pid)
  try:
    return not select.select([fd], [], [], timeout)[0]
  finally:
    os.close(fd)


def _classify(report: dict, timed_out: bool, init_code: int) -> tuple[str, int | None, int | None]:
  """(status, returncode, index of the failed command) from the init's report."""
  if timed_out:
    return "timeout", None, None
  if "error" in report:
    return "error", None, None
  codes = report.get("codes")
  if not codes:  # the init died before reporting: the program killed it
    return "failed", init_code, None
  last = codes[-1]
  if last == 0:
    return "passed", 0, None
  return ("timeout" if last == -signal.SIGXCPU else "failed"), last, len(codes) - 1


SANDBOX_DIR = "<sandbox>"
"""How a program's output names its (deleted) working directory."""


def _run_once(program: Program, config: SandboxConfig, namespaced: bool) -> SandboxResult:
  start = time.monotonic()
  workdir = tempfile.mkdtemp(prefix="jaxprune-sbx-", dir=config.tmp_root)
  spec = {
      "workdir": workdir,
      "files": {name: _encode(content) for name, content in program.files.items()},
      "commands": [list(c) for c in program.commands],
      "env": _env(config, workdir),
      "limits": _limits(config, namespaced),
      "namespaces": namespaced,
      "uid": config.uid,
      "gid": config.uid,
      "disk_mb": config.disk_mb,
      "covers": {},
      "drop_uid": False,
  }
  if os.geteuid() == 0:
    covers = _covers(program, workdir)
    spec["covers" if namespaced else "drop_uid"] = covers if namespaced else not covers
  files = [tempfile.TemporaryFile() for _ in range(4)]
  spec_file, out, err, report_file = files
  try:
    spec_file.write(json.dumps(spec).encode())
    spec_file.seek(0)
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", str(_INIT), str(report_file.fileno())],
        stdin=spec_file, stdout=out, stderr=err, pass_fds=(report_file.fileno(),),
        cwd=workdir, env=spec["env"], start_new_session=True,
    )
    timed_out = _wait(proc, config.timeout_s)
    try:
      os.killpg(proc.pid, signal.SIGKILL)  # stragglers, or everything on time-out
    except ProcessLookupError:
      pass
    init_code = proc.wait()
    report_file.seek(0)
    raw = report_file.read()
    report = json.loads(raw) if raw else {}
    status, code, failed = _classify(report, timed_out, init_code)
    if status == "failed" and failed is not None and failed < program.compile_commands:
      status = "compile_error"
    # The working directory is deleted below: its name in the output (tracebacks, test messages) is
    # written as <sandbox>, so results files carry no machine path.
    stdout, stderr = (_tail(f, config.output_chars).replace(workdir, SANDBOX_DIR) for f in (out, err))
    if status == "error":
      stderr = f"{report['error']}\n{stderr}"
    marker = program.success_marker
    if status == "passed" and marker is not None and stdout.rstrip("\n").rpartition("\n")[2] != marker:
      status, failed = "failed", len(program.commands) - 1
      stderr += "\nsandbox: exited 0 without printing its success marker (it stopped before its tests ended)"
    layers = ("process-group", "rlimits", "scrubbed-env", "temp-dir", *report.get("layers", ()))
    if program.guarded:
      layers += ("audit-hook",)
    network = "net-ns" if "net-ns" in layers else "audit-hook" if program.guarded else "none"
    return SandboxResult(
        status=status, returncode=code, stdout=stdout, stderr=stderr,
        duration_s=time.monotonic() - start, isolation=layers, network=network, failed_command=failed,
    )
  finally:
    for f in files:
      f.close()
    shutil.rmtree(workdir, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def namespaces_available(tmp_root: str | None = None) -> bool:
  """Whether namespaced runs work here (probed once per process)."""
  probe = Program(files={}, commands=((sys.executable, "-I", "-S", "-c", "pass"),))
  try:
    result = _run_once(probe, SandboxConfig(timeout_s=30, tmp_root=tmp_root), namespaced=True)
  except OSError as err:
    log.warning("sandbox: namespaces unavailable (%s); falling back to limits and the audit hook", err)
    return False
  if result.status != "passed":
    log.warning(
        "sandbox: namespaces unavailable (%s); falling back to limits and the audit hook",
        result.stderr.strip().splitlines()[:1],
    )
  return result.status == "passed"


def _namespaced(config: SandboxConfig) -> bool:
  if config.isolation == "none":
    return False
  available = namespaces_available(config.tmp_root)
  if config.isolation == "namespaces" and not available:
    raise JaxpruneError(
        "sandbox isolation 'namespaces' is unavailable here (user namespaces are"
        " disabled or blocked): run as root, enable them, or use isolation='auto'"
    )
  return available


def run(program: Program, config: SandboxConfig = SandboxConfig()) -> SandboxResult:
  """Run ``program`` once in a fresh sandbox and wait for it."""
  _check_program(program)
  return _run_once(program, config, _namespaced(config))


def workers(config: SandboxConfig) -> int:
  """Parallel runs: the configured number, else the cores this process may use."""
  return config.workers or len(os.sched_getaffinity(0))


def run_many(
    programs: Iterable[Program],
    config: SandboxConfig = SandboxConfig(),
    *,
    on_result: Callable[[int, SandboxResult], None] | None = None,
) -> list[SandboxResult]:
  """Run programs in parallel (at most `workers` at once); results in input order.

  A program that breaks its sandbox's setup gets an ``error`` result; the
  others still run. ``on_result(index, result)`` is called as each finishes
  (for progress bars).
  """
  programs = list(programs)
  for program in programs:
    _check_program(program)
  namespaced = _namespaced(config)

  def one(program: Program) -> SandboxResult:
    try:
      return _run_once(program, config, namespaced)
    except OSError as err:  # fork/disk failures on our side: keep going
      log.warning("sandbox: run failed to start: %s", err)
      return SandboxResult("error", None, "", str(err), 0.0, (), "none")

  results: list[SandboxResult | None] = [None] * len(programs)
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers(config)) as pool:
    futures = {pool.submit(one, p): i for i, p in enumerate(programs)}
    for future in concurrent.futures.as_completed(futures):
      i = futures[future]
      results[i] = future.result()
      if on_result is not None:
        on_result(i, results[i])
  return results  # type: ignore[return-value]
