"""The sandbox's first process: namespaces, mounts, limits, then the program.

`evals.sandbox` starts this file as ``python -I -S _sandbox_init.py REPORT_FD``
with the run's spec (JSON) on stdin. It imports the stdlib only, because it
runs before (and while) the file system is being locked down.

With ``namespaces`` it enters new user, mount, network, IPC, UTS and PID
namespaces and forks the PID namespace's init, which

* mounts a fresh /proc and a size-limited tmpfs on the working directory (the
  program's files are written there), makes every other mount read-only, and
  re-exposes interpreter prefixes hidden under private directories (a pyenv
  under a 0700 /root) through bind mounts on a tmpfs;
* forks each command as an unprivileged uid (65534 outside, when we are root)
  with no capabilities and ``no_new_privs``, under `resource` limits; as the
  uid differs from the init's, the program can signal neither it nor us.

When the PID namespace's init exits, the kernel kills every process left in
it, so nothing the program starts survives the run. Without ``namespaces`` the
same steps run minus the namespaces and mounts (as root, the program still
switches to the unprivileged uid when it can reach its executables). One process writes a JSON
report (layers in force, exit code of each step) to REPORT_FD.
"""

# Import everything up front: once /root (say) is covered, this interpreter's
# own library may be out of reach.
import base64
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
# statvfs flags that a bind remount must repeat (the kernel refuses to clear
# locked ones); their ST_* values equal the MS_* values.
KEEP_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | 1024 | 2048 | 4096
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
INNER_ID = 1000  # the program's uid/gid inside the user namespace (root runs)

_libc = ctypes.CDLL(None, use_errno=True)


def _call(name, *args):
  if getattr(_libc, name)(*args) != 0:
    err = ctypes.get_errno()
    raise OSError(err, f"{name}{tuple(a for a in args if isinstance(a, (str, bytes)))}: {os.strerror(err)}")


def _mount(src, target, fstype, flags, data=None):
  enc = lambda s: None if s is None else os.fsencode(s)
  _call("mount", enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))


def _die_with_parent() -> None:
  _call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# --------------------------------------------------------------------------- #
# Namespaces
# --------------------------------------------------------------------------- #


def _enter_namespaces(uid: int, gid: int):
  """Unshare; a helper left outside writes our id maps. Returns the inner id to run as.

  Only a process with CAP_SETUID outside may map a second id, so root runs map
  0->0 (for the mounts) and INNER_ID->uid (for the program); others map their
  own id to 0 and run the program as that.
  """
  euid, egid, me = os.geteuid(), os.getegid(), os.getpid()
  if euid == 0:
    uid_map, gid_map, inner = f"0 0 1\n{INNER_ID} {uid} 1\n", f"0 0 1\n{INNER_ID} {gid} 1\n", INNER_ID
  else:
    uid_map, gid_map, inner = f"0 {euid} 1\n", f"0 {egid} 1\n", None
  go_r, go_w = os.pipe()
  done_r, done_w = os.pipe()
  helper = os.fork()
  if helper == 0:
    os.close(go_w)
    ok = b"n"
    try:
      if os.read(go_r, 1) == b"u":
        if inner is None:
          with open(f"/proc/{me}/setgroups", "w") as f:
            f.write("deny")
        with open(f"/proc/{me}/uid_map", "w") as f:
          f.write(uid_map)
        with open(f"/proc/{me}/gid_map", "w") as f:
          f.write(gid_map)
        ok = b"k"
    finally:
      os.write(done_w, ok)
      os._exit(0)
  os.close(go_r)
  try:
    _call("unshare", CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID)
  except OSError:
    os.close(go_w)
    os.waitpid(helper, 0)
    raise
  os.write(go_w, b"u")
  ok = os.read(done_r, 1)
  os.waitpid(helper, 0)
  if ok != b"k":
    raise OSError("could not write the user namespace's id maps")
  return inner


# --------------------------------------------------------------------------- #
# Mounts (inside the PID namespace's init)
# --------------------------------------------------------------------------- #


def _mountpoints() -> list[str]:
  points = []
  with open("/proc/self/mountinfo") as f:
    for line in f:
      point = line.split()[4]
      points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point))  # \040 -> space
  return points


def _lock_down(spec: dict, inner) -> list[str]:
  """Fresh /proc, tmpfs working dir, hidden prefixes re-exposed, the rest read-only."""
  work = spec["workdir"]
  _mount(None, "/", None, MS_REC | MS_PRIVATE)
  fds = {path: os.open(path, os.O_PATH) for paths in spec["covers"].values() for path in paths}
  _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
  owner = "" if inner is None else f",uid={inner},gid={inner}"
  _mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, f"size={spec['disk_mb']}m,mode=0700{owner}")
  for cover, paths in spec["covers"].items():
    _mount("tmpfs", cover, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for path in paths:
      if os.path.isdir(f"/proc/self/fd/{fds[path]}"):
        os.makedirs(path, exist_ok=True)
      else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").close()
      _mount(f"/proc/self/fd/{fds[path]}", path, None, MS_BIND | MS_REC)
  for fd in fds.values():
    os.close(fd)
  failed = []
  for point in _mountpoints():
    if point == work:
      continue
    try:
      flags = os.statvfs(point).f_flag & KEEP_FLAGS
      _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
    except OSError:
      failed.append(point)
  if "/" in failed:
    raise OSError("could not make / read-only")
  layers = ["mount-ns", "read-only-fs", "tmpfs-workdir"]
  return layers + [f"writable:{p}" for p in failed]


# --------------------------------------------------------------------------- #
# Program
# --------------------------------------------------------------------------- #


def _write_files(spec: dict, inner) -> None:
  for name, content in spec["files"].items():
    path = os.path.join(spec["workdir"], name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = base64.b64decode(content["b64"]) if isinstance(content, dict) else content.encode()
    with open(path, "wb") as f:
      f.write(data)
  if inner is not None:
    for root, dirs, files in os.walk(spec["workdir"]):
      for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
        os.chown(name, inner, inner)


def _exec(argv: list, spec: dict, inner, drop_caps: bool) -> None:
  """In the forked child: limits, identity, then exec. Never returns."""
  try:
    os.chdir(spec["workdir"])
    # Resolve before dropping privileges: the lookup may import modules that
    # the new uid cannot read.
    path = shutil.which(argv[0], path=spec["env"]["PATH"]) or argv[0]
    for name, (soft, hard) in spec["limits"].items():
      resource.setrlimit(getattr(resource, name), (soft, hard))
    if drop_caps:
      last = int(open("/proc/sys/kernel/cap_last_cap").read())
      for cap in range(last + 1):
        _call("prctl", PR_CAPBSET_DROP, cap, 0, 0, 0)
    if inner is not None:
      os.setgroups([])
      os.setresgid(inner, inner, inner)
      os.setresuid(inner, inner, inner)
    _call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.execve(path, argv, spec["env"])
  except BaseException as err:  # noqa: BLE001 - report anything, then die
    os.write(2, f"sandbox: cannot run {argv[0]}: {err}\n".encode())
  os._exit(127)


def _run_steps(spec: dict, inner, drop_caps: bool) -> list[int]:
  codes = []
  for argv in spec["commands"]:
    pid = os.fork()
    if pid == 0:
      _exec(argv, spec, inner, drop_caps)
    _, status = os.waitpid(pid, 0)
    codes.append(os.waitstatus_to_exitcode(status))
    if codes[-1] != 0:
      break
  return codes


def _report(fd: int, **fields) -> None:
  os.write(fd, json.dumps(fields).encode())


def main() -> None:
  report_fd = int(sys.argv[1])
  os.set_inheritable(report_fd, False)
  spec = json.loads(sys.stdin.buffer.read())
  devnull = os.open(os.devnull, os.O_RDONLY)
  os.dup2(devnull, 0)
  _die_with_parent()
  if not spec["namespaces"]:
    # Root without namespaces: still run as another uid when it can reach the
    # programs, so a stray kill(-1) or write cannot touch root's processes and files.
    inner = spec["uid"] if os.geteuid() == 0 and spec["drop_uid"] else None
    _write_files(spec, inner)
    codes = _run_steps(spec, inner, drop_caps=False)
    _report(report_fd, layers=[] if inner is None else ["unprivileged-uid"], codes=codes)
    os._exit(0)
  try:
    inner = _enter_namespaces(spec["uid"], spec["gid"])
  except OSError as err:
    _report(report_fd, error=f"namespaces unavailable: {err}")
    os._exit(125)
  pid = os.fork()
  if pid == 0:  # pid 1 of the new PID namespace
    try:
      _die_with_parent()
      layers = ["user-ns", "net-ns", "pid-ns", "ipc-ns", "uts-ns"] + _lock_down(spec, inner)
      layers.append("unprivileged-uid" if inner is not None else "no-capabilities")
      _write_files(spec, inner)
    except BaseException as err:  # noqa: BLE001
      _report(report_fd, error=f"sandbox setup failed: {err}")
      os._exit(125)
    codes = _run_steps(spec, inner, drop_caps=True)
    _report(report_fd, layers=layers, codes=codes)
    os._exit(0)
  _, status = os.waitpid(pid, 0)
  os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
  main()
