"""evals.sandbox: statuses, limits, isolation layers, and hostile programs contained.

Hostile programs run under two fences separately, so each layer is tested on
its own: ``os`` (namespaces, no audit hook: the kernel alone must stop them)
and ``hook`` (no namespaces: the Python audit hook and the limits must).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest

from jaxprune.evals import sandbox
from jaxprune.evals.sandbox import Program, SandboxConfig, python_program
from jaxprune.errors import JaxpruneError

NAMESPACES = sandbox.namespaces_available()
needs_ns = pytest.mark.skipif(not NAMESPACES, reason="user namespaces unavailable here")


def py(source: str, **config) -> sandbox.SandboxResult:
  return sandbox.run(python_program(textwrap.dedent(source)), SandboxConfig(**config))


# --------------------------------------------------------------------------- #
# Statuses and plumbing
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "source, status, code",
    [
        ("print('hi')", "passed", 0),
        ("raise SystemExit(3)", "failed", 3),
        ("assert 1 == 2", "failed", 1),
        ("import time; time.sleep(30)", "timeout", None),
    ],
    ids=["exit-0", "exit-3", "assertion", "sleep-past-wall-clock"],
)
def test_status_and_returncode(source, status, code):
  result = py(source, timeout_s=1.5)
  assert (result.status, result.returncode) == (status, code), result.stderr


def test_stdout_stderr_tails():
  result = py("import sys; print('x' * 10000 + 'END'); print('oops', file=sys.stderr)", output_chars=100)
  assert len(result.stdout) == 100 and result.stdout.endswith("END\n")
  assert result.stderr == "oops\n"


def test_commands_stop_at_first_failure():
  program = Program(
      files={"a.sh": "echo one", "b.sh": "echo two; exit 4", "c.sh": "echo three"},
      commands=(("sh", "a.sh"), ("sh", "b.sh"), ("sh", "c.sh")),
  )
  result = sandbox.run(program)
  assert (result.status, result.returncode, result.failed_command) == ("failed", 4, 1)
  assert result.stdout == "one\ntwo\n"


@pytest.mark.parametrize("failing, status", [(0, "compile_error"), (1, "failed")], ids=["build", "run"])
def test_a_failing_compile_command_is_a_compile_error(failing, status):
  scripts = {f"{i}.sh": "exit 3" if i == failing else "true" for i in range(2)}
  program = Program(files=scripts, commands=(("sh", "0.sh"), ("sh", "1.sh")), compile_commands=1)
  result = sandbox.run(program)
  assert (result.status, result.failed_command) == (status, failing) and status in sandbox.STATUSES


def test_files_bytes_and_subdirs():
  program = python_program(
      "print(open('data/blob.bin', 'rb').read().hex(), open('data/t.txt').read())",
      files={"data/t.txt": "text"},
  )
  program = dataclasses.replace(program, files={**program.files, "data/blob.bin": b"\x00\xff"})
  result = sandbox.run(program)
  assert result.stdout == "00ff text\n", result.stderr


@pytest.mark.parametrize(
    "source, status",
    [("print('M')", "passed"), ("print('M'); print('more')", "failed"), ("import os; os._exit(0)", "failed")],
    ids=["marker-last", "marker-not-last", "exit-0-early"],
)
def test_success_marker(source, status):
  program = dataclasses.replace(python_program(source), success_marker="M")
  assert sandbox.run(program).status == status


def test_environment_is_scrubbed(monkeypatch):
  monkeypatch.setenv("JAXPRUNE_SECRET", "hunter2")
  result = py("import os, json; print(json.dumps(dict(os.environ)), os.getcwd())", env=(("EXTRA", "1"),))
  env_json, cwd = result.stdout.rsplit(" ", 1)
  env = json.loads(env_json)
  assert "JAXPRUNE_SECRET" not in env and env["EXTRA"] == "1"
  assert env["HOME"] == env["TMPDIR"] == cwd.strip()


def test_working_dir_is_fresh_and_deleted(tmp_path):
  config = dict(tmp_root=str(tmp_path))
  first = py("import os; open('left.txt', 'w').write('x'); print(os.getcwd(), sorted(os.listdir()))", **config)
  second = py("import os; print(os.getcwd(), sorted(os.listdir()))", **config)
  assert first.stdout.split(" ", 1)[1].strip() == "['left.txt', 'main.py']"
  assert second.stdout.split(" ", 1)[1].strip() == "['main.py']"
  assert list(tmp_path.iterdir()) == []


def test_output_names_the_working_dir_sandbox():
  result = py("import os, sys; print(os.getcwd()); sys.exit(f'failed in {os.getcwd()}/main.py')")
  assert result.stdout.strip() == sandbox.SANDBOX_DIR
  assert "failed in <sandbox>/main.py" in result.stderr and "jaxprune-sbx-" not in result.stderr


def test_cpu_limit_is_a_timeout():
  result = py("while True: pass", timeout_s=20, cpu_s=1)
  assert result.status == "timeout" and result.returncode == -signal.SIGXCPU
  assert result.duration_s < 10


def test_file_size_limit():
  result = py("open('big', 'wb').write(b'x' * (3 << 20))", file_mb=1)  # Python ignores SIGXFSZ
  assert result.status == "failed" and "File too large" in result.stderr


def test_missing_program_is_a_user_error():
  with pytest.raises(JaxpruneError, match="not an installed program"):
    sandbox.run(Program({}, (("no-such-compiler-xyz", "a.c"),)))


def test_namespaces_required_but_unavailable(monkeypatch):
  monkeypatch.setattr(sandbox, "namespaces_available", lambda tmp_root=None: False)
  with pytest.raises(JaxpruneError, match="isolation 'namespaces' is unavailable"):
    sandbox.run(python_program("pass"), SandboxConfig(isolation="namespaces"))


@pytest.mark.parametrize("bad", ["/etc/x", "../x", ""], ids=["absolute", "dotdot", "empty"])
def test_file_names_must_stay_inside(bad):
  with pytest.raises(ValueError, match="relative path"):
    sandbox.run(Program({bad: "x"}, (("true",),)))


@needs_ns
def test_namespaced_identity_and_layers():
  result = py("""
      import os
      status = open('/proc/self/status').read()
      cap = [l.split()[1] for l in status.splitlines() if l.startswith('CapEff')][0]
      print(os.getuid(), cap, os.getpid() < 10)
  """)
  assert result.stdout.split() == ["1000", "0000000000000000", "True"]
  for layer in ("net-ns", "pid-ns", "user-ns", "mount-ns", "read-only-fs", "unprivileged-uid", "audit-hook"):
    assert layer in result.isolation
  assert result.network == "net-ns"
  assert not any(layer.startswith("writable:") for layer in result.isolation)


def test_hook_only_reports_hook():
  result = sandbox.run(python_program("pass"), SandboxConfig(isolation="none"))
  assert result.network == "audit-hook" and "net-ns" not in result.isolation


def test_parallel_runs_bounded_by_workers():
  source = "import time; a = time.time(); time.sleep(0.4); print(a, time.time())"
  results = sandbox.run_many([python_program(source)] * 6, SandboxConfig(workers=2))
  spans = [tuple(map(float, r.stdout.split())) for r in results]
  most = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
  assert most == 2, spans


# --------------------------------------------------------------------------- #
# Hostile programs
# --------------------------------------------------------------------------- #

FENCES = [
    pytest.param("os", marks=needs_ns, id="namespaces-no-hook"),
    pytest.param("hook", id="hook-no-namespaces"),
]


def hostile_run(fence: str, sources: list[str], root: Path, marker: str) -> list[sandbox.SandboxResult]:
  """Run hostile sources then a benign one in one batch, under one fence, working dirs in ``root``."""
  config = SandboxConfig(
      timeout_s=2.5, tmp_root=str(root), env=(("JP_MARKER", marker),),
      isolation="namespaces" if fence == "os" else "none",
  )
  programs = [python_program(textwrap.dedent(s), guarded=fence == "hook") for s in sources]
  results = sandbox.run_many([*programs, python_program("print('still running')")], config)
  assert results[-1].stdout == "still running\n", results[-1]
  return results[:-1]


def leftover_processes(marker: str) -> list[int]:
  """Processes still alive that carry the run's marker in their environment."""
  found = []
  for entry in Path("/proc").iterdir():
    try:
      if entry.name.isdigit() and marker.encode() in (entry / "environ").read_bytes():
        found.append(int(entry.name))
    except OSError:
      pass
  return found


@pytest.fixture
def listener():
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen()
  server.setblocking(False)
  yield server
  server.close()


@pytest.fixture
def open_root():
  """A world-writable parent for the working dirs, like /tmp without the sticky bit.

  The program sees its real neighbours (under pytest's private tmp_path the
  sandbox would hide them behind a tmpfs), and only the read-only file system,
  not file permissions, stops it from deleting them or writing beside them.
  """
  root = Path(tempfile.mkdtemp(prefix="jaxprune-test-"))
  root.chmod(0o777)
  yield root
  shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("fence", FENCES)
def test_hostile_programs_are_contained(fence, open_root, listener):
  marker = uuid.uuid4().hex
  outside = open_root / "escaped.txt"
  sentinel = open_root / "sentinel.txt"
  sentinel.write_text("keep me")
  port = listener.getsockname()[1]
  cases = {
      "write-outside": f"open({str(outside)!r}, 'w').write('pwned')",
      "write-tmp": f"open('/tmp/jaxprune-escape-{marker}', 'w').write('pwned')",
      "delete-parent": """
          import os, shutil
          for name in os.listdir('..'):
            path = os.path.join('..', name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
      """,
      "socket": f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1).send(b'x')",
      "fork-bomb": """
          import os
          while True:
            try:
              os.fork()
            except OSError:
              pass
      """,
      "infinite-loop": "while True: pass",
      "alloc-50GB": "x = bytearray(50 * 2**30); x[-1] = 1",
      "kill-parent": "import os, signal, time; os.kill(os.getppid(), signal.SIGKILL); time.sleep(5)",
  }
  escaped_tmp = Path(f"/tmp/jaxprune-escape-{marker}")
  try:
    results = hostile_run(fence, list(cases.values()), open_root, marker)
    assert not escaped_tmp.exists()
  finally:
    escaped_tmp.unlink(missing_ok=True)  # a failing run must not leave it behind
  statuses = {name: r.status for name, r in zip(cases, results)}
  assert all(s in ("failed", "timeout") for s in statuses.values()), statuses
  assert statuses["infinite-loop"] == "timeout"
  assert all(r.duration_s < 6 for r in results), [r.duration_s for r in results]
  assert not outside.exists()
  assert sentinel.read_text() == "keep me"
  with pytest.raises(BlockingIOError):
    listener.accept()
  assert leftover_processes(marker) == []
  assert os.getppid() > 1  # we are alive and so is our parent


@needs_ns
@pytest.mark.parametrize(
    "source",
    [
        "open('/dev/shm/jaxprune-escape', 'w')",
        "import ctypes; assert ctypes.CDLL(None).mount(None, b'/', None, 32 | 4096, None) == 0",
        "import os, signal; os.kill(-1, signal.SIGKILL); import time; time.sleep(5)",
        "import os; os.setuid(0)",
        "open('/dev/vda' if __import__('os').path.exists('/dev/vda') else '/dev/mem', 'rb').read(1)",
    ],
    ids=["dev-shm", "remount-rw", "kill-everyone", "setuid-root", "raw-disk"],
)
def test_kernel_fences_without_hook(source):
  escaped = Path("/dev/shm/jaxprune-escape")
  try:
    result = sandbox.run(python_program(source, guarded=False), SandboxConfig(timeout_s=2.5))
    assert result.status in ("failed", "timeout"), result
    assert not escaped.exists()
  finally:
    escaped.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "source, message",
    [
        ("import socket; socket.socket()", "socket.__new__ is not allowed"),
        ("import subprocess; subprocess.run(['true'])", "subprocess.Popen is not allowed"),
        ("import os; os.remove('/etc/hostname')", "os.remove outside"),
        ("import os; fd = os.open('..', os.O_RDONLY); os.unlink('x', dir_fd=fd)", "os.remove outside"),
        ("import os; os.rename('main.py', '../moved.py')", "os.rename outside"),
        ("import ctypes; ctypes.CDLL(None)", "ctypes.dlopen is not allowed"),
    ],
    ids=["socket", "subprocess", "remove", "remove-dir-fd", "rename-out", "ctypes"],
)
def test_audit_hook_refuses(source, message):
  result = sandbox.run(python_program(source), SandboxConfig(isolation="none"))
  assert result.status == "failed" and message in result.stderr, result.stderr


def test_audit_hook_allows_work_inside():
  result = py("""
      import os, shutil
      os.makedirs('a/b'); open('a/b/f', 'w').write('x'); os.rename('a/b/f', 'a/g')
      shutil.rmtree('a'); print(sorted(os.listdir()))
  """, isolation="none")
  assert result.stdout == "['main.py']\n", result.stderr
