"""A precompiled <bits/stdc++.h> for C++ runs: compiling it dominates a HumanEval test's build.

Built once on the host from the system header (trusted input) and cached in
``$XDG_CACHE_HOME/jaxprune`` under a name that hashes the compiler's version
and flags; sandboxed builds use it with ``-I DIR -include bits/stdc++.h``
(about 0.2 s instead of 0.85 s per program here).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile

log = logging.getLogger(__name__)

FLAGS = ("-std=c++17", "-pipe")


@functools.lru_cache(maxsize=None)
def build() -> str | None:
  """The directory holding bits/stdc++.h.gch for `FLAGS`; None (and a warning) if it cannot be built."""
  try:
    version = subprocess.run(["g++", "--version"], capture_output=True, text=True, check=True).stdout
    deps = subprocess.run(
        ["g++", *FLAGS, "-x", "c++", "-M", "-"], input="#include <bits/stdc++.h>\n",
        capture_output=True, text=True, check=True,
    ).stdout
    header = next(p for p in re.split(r"[\s\\]+", deps) if p.endswith("bits/stdc++.h"))
    root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jaxprune")
    key = hashlib.sha256(f"{version}{FLAGS}{header}".encode()).hexdigest()[:16]
    final = os.path.join(root, f"pch-{key}")
    if os.path.isfile(os.path.join(final, "bits", "stdc++.h.gch")):
      return final
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix="pch-build-", dir=root)
    try:
      os.chmod(staging, 0o755)
      os.makedirs(os.path.join(staging, "bits"))
      os.symlink(header, os.path.join(staging, "bits", "stdc++.h"))
      subprocess.run(
          ["g++", *FLAGS, "-x", "c++-header", header, "-o", os.path.join(staging, "bits", "stdc++.h.gch")],
          capture_output=True, check=True,
      )
      os.rename(staging, final)
    except OSError:
      if not os.path.isdir(final):  # unless another process finished first
        raise
    finally:
      shutil.rmtree(staging, ignore_errors=True)
    return final
  except (OSError, subprocess.CalledProcessError, StopIteration) as err:
    log.warning("no precompiled <bits/stdc++.h> (%s): C++ builds will be slower", err)
    return None
