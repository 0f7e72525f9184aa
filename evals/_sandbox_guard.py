"""Audit hook for sandboxed Python programs: the layer that needs no privileges.

`evals.sandbox` passes this file's text as ``python -I -c GUARD main.py``. It
refuses sockets, new processes, signals, ctypes and any write, removal or
rename outside the working directory, then runs main.py as ``__main__``.
Audit hooks cannot be removed, but Python code can be crafted around them;
where namespaces work they are the real fence and this hook is a second one
(the sole network block when namespaces are unavailable).
"""

import os
import sys

_WORK = os.path.realpath(os.getcwd())
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_DENIED = frozenset({
    "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
    "os.fork", "os.forkpty", "os.kill", "os.killpg", "signal.pthread_kill",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "os.chroot",
})
# For each event that changes the file system: (path argument, dir_fd
# argument or None) pairs, positions as CPython's audit events pass them.
_PATH_EVENTS = {
    "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),),
    "os.rename": ((0, 2), (1, 3)), "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),),
    "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.utime": ((0, 3),),
    "os.truncate": ((0, None),), "os.setxattr": ((0, None),), "os.removexattr": ((0, None),),
    "shutil.rmtree": ((0, 1),), "shutil.move": ((0, None), (1, None)), "shutil.chown": ((0, None),),
}


def _inside(path, dir_fd=None) -> bool:
  if isinstance(path, int):  # an fd the program already holds
    return True
  path = os.fsdecode(path)
  if dir_fd not in (None, -1) and not os.path.isabs(path):
    path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
  real = os.path.realpath(path)
  return real == _WORK or real.startswith(_WORK + os.sep) or real == os.devnull


def _hook(event: str, args: tuple) -> None:
  if event in _DENIED:
    raise PermissionError(f"sandbox: {event} is not allowed")
  if event == "open" and args[0] is not None:
    path, mode, flags = args
    writes = (flags or 0) & _WRITE_FLAGS or (isinstance(mode, str) and set(mode) & set("wax+"))
    # os.open (mode None) may carry a dir_fd the event does not show.
    blind = mode is None and not isinstance(path, int) and not os.path.isabs(os.fsdecode(path))
    if writes and (blind or not _inside(path)):
      raise PermissionError(f"sandbox: writing {path} outside the working directory")
  elif event in _PATH_EVENTS:
    for path_at, fd_at in _PATH_EVENTS[event]:
      dir_fd = args[fd_at] if fd_at is not None and fd_at < len(args) else None
      if not _inside(args[path_at], dir_fd):
        raise PermissionError(f"sandbox: {event} outside the working directory")


sys.addaudithook(_hook)
del sys.argv[0]
import runpy  # noqa: E402 - after the hook, so runpy's own imports are watched

runpy.run_path(sys.argv[0], run_name="__main__")
