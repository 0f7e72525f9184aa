"""Failures that are not the user's input: file-system faults and signals.

`cli.main` turns each into one line that says what happened, what is kept and
what to do. Library code calls `keep` once it has something worth keeping
after a failure (a prune's finished blocks), so that the line can say so.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

_kept: list[str] = []
_program: dict = {"run": False}  # a `jaxprune` process (not a call of cli.main from Python)


def keep(note: str) -> None:
  """Record what survives a failure from here on (the newest note is reported)."""
  _kept.append(note)


def reset() -> None:
  """Forget the notes (at the start of a command)."""
  _kept.clear()


def kept() -> str:
  """The newest note, or a sentence saying no output was changed."""
  return _kept[-1] if _kept else "no output was written or changed"


_WHAT = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOENT: "no such file or folder",
    errno.EIO: "input/output error",
}
_DO = {
    errno.ENOSPC: "free space and rerun the same command",
    errno.EDQUOT: "free space and rerun the same command",
    errno.EROFS: "choose an --out on a writable file system",
    errno.EACCES: "choose an --out you may write, or fix the permissions",
    errno.EPERM: "choose an --out you may write, or fix the permissions",
    errno.ENOTDIR: "check the path",
    errno.EISDIR: "check the path",
    errno.ENOENT: "check that the file still exists and rerun",
    errno.EIO: "check the disk and rerun",
}


def os_error_line(err: OSError) -> str:
  """``what happened (where); what is kept; what to do`` for an `OSError`."""
  what = _WHAT.get(err.errno) or err.strerror or str(err).splitlines()[0]
  where = f" ({err.filename})" if err.filename else ""
  do = _DO.get(err.errno, "fix the cause and rerun the same command")
  return f"{what}{where}; {kept()}; {do}"


def os_error_in(err: BaseException) -> OSError | None:
  """The `OSError` behind ``err`` (Orbax and TensorStore wrap them), or None."""
  seen = err
  for _ in range(8):
    if isinstance(seen, OSError):
      return seen
    seen = seen.__cause__ or seen.__context__
    if seen is None:
      break
  text = str(err)
  for code, what in ((errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system"),
                     (errno.EDQUOT, "Disk quota exceeded")):
    if what in text:
      return OSError(code, what)
  return None


def damaged_file(err: BaseException) -> str | None:
  """``Type: first line`` of an error reading an Orbax/TensorStore file that is damaged or missing;
  None when it is a file-system fault, which the caller re-raises (reported as such)."""
  if os_error_in(err) is not None and not isinstance(err, FileNotFoundError):
    return None
  first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
  return f"{type(err).__name__}: {first}"


@contextlib.contextmanager
def damaged_as(message: str):
  """Reading Orbax/TensorStore files: a damaged or missing one raises one line, ``message`` with the
  damage filled in at ``{damage}``; user errors, memory and file-system faults pass through."""
  from jaxprune.errors import JaxpruneError

  try:
    yield
  except (JaxpruneError, MemoryError):
    raise
  except Exception as err:  # Orbax/TensorStore raise many types for damaged files
    if (damage := damaged_file(err)) is None:
      raise
    raise JaxpruneError(message.replace("{damage}", damage)) from None


class Terminated(KeyboardInterrupt):
  """SIGTERM, raised like Ctrl-C so that the same cleanup runs."""


def _raise_terminated(signum, frame):
  raise Terminated()


def handle_sigterm():
  """Make SIGTERM raise `Terminated` (a `KeyboardInterrupt`); returns the previous handler."""
  try:
    return signal.signal(signal.SIGTERM, _raise_terminated)
  except ValueError:  # not the main thread (e.g. called from a notebook worker)
    return None


def restore_sigterm(previous) -> None:
  """Put back the handler `handle_sigterm` replaced."""
  if previous is not None:
    signal.signal(signal.SIGTERM, previous)


def program_run(flag: bool) -> None:
  """Say whether this process is the `jaxprune` program (it may then silence its stderr after a fault)."""
  _program["run"] = flag
  _program.pop("stderr", None)


@contextlib.contextmanager
def quiet_writes():
  """In a program run, hide file descriptor 2 while Orbax writes; after a failure, for good.

  A failed Orbax write leaves TensorStore threads that print tracebacks of
  their late callbacks; the program is then ending with one line, which
  `report` still sends to the real stderr.
  """
  if not _program["run"] or "stderr" in _program:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  silence_stderr()
  try:
    yield
  except BaseException:
    _program["stderr"] = saved
    raise
  os.dup2(saved, 2)
  os.close(saved)


def report(line: str) -> None:
  """Print the one line of a failed command (to the real stderr, also after `quiet_cleanup`)."""
  if "stderr" in _program:
    os.write(_program["stderr"], (line + "\n").encode())
  else:
    print(line, file=sys.stderr)


def silence_stderr() -> None:
  """Send whatever is still written to file descriptor 2 to /dev/null (a program about to end).

  After a failed Orbax write, TensorStore's threads print tracebacks of their
  own late callbacks; the one line that explains the failure is already out.
  """
  sys.stderr.flush()
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  os.close(devnull)
