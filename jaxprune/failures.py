"""Failures that are not the user's input: file-system faults and signals.

`cli.main` turns each into one line that says what happened, what is kept and
what to do. Library code calls `keep` once it has something worth keeping
after a failure (a prune's finished blocks), so that the line can say so.
"""

from __future__ import annotations

import errno
import signal

_kept: list[str] = []


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
