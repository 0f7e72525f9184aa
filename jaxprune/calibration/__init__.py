"""Calibration text: from a domain name to token windows.

Data flows one way: `sources` turns a domain name into a corpus (a named one
from `corpora`, fetched by `fetching`; a local dataset from `hfdata`; local
files), made of `documents`; `windows` cuts the corpus's calibration side
into ``[n, seqlen]`` token windows (`sample`) and its held-out side into
evaluation windows (`held_out`).

Example:
  >>> from jaxprune import calibration
  >>> tokens = calibration.sample("python", tokenizer, n=128, seqlen=512, seed=0)  # int32 [128, 512]
"""

from jaxprune.calibration.sources import describe, known_domains, portable_path, resolve, sides
from jaxprune.calibration.windows import CHARS_PER_TOKEN, draw, held_out, join_windows, sample

__all__ = ["CHARS_PER_TOKEN", "describe", "draw", "held_out", "join_windows", "known_domains",
           "portable_path", "resolve", "sample", "sides"]
