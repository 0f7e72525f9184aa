"""User-facing errors.

Every mistake a user can make (a wrong path, a sparsity out of range, an empty
calibration set) raises `JaxpruneError` with one line that names the problem and
the fix. The CLI prints that line alone, without a traceback.
"""

from __future__ import annotations


class JaxpruneError(Exception):
  """A problem with the user's input, with a one-line message naming the fix."""

  def __init__(self, message: str):
    super().__init__(" ".join(str(message).split()))
