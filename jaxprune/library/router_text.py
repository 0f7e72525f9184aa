"""The router's training text: what the classifier learns each sub-model (and the background) from.

A sub-model's text is drawn from the calibration side of its run's
calibration source, with the run's seed and sequence length (more sequences
than the run used, when the source has them), and decoded: text like the
run's calibration text, never its held-out files. A run calibrated on a token
file uses that file; one without calibration text (magnitude) needs a source
given by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxprune.errors import JaxpruneError


def _sample(source: str, tokenizer, docs: int, seqlen: int, seed: int) -> np.ndarray:
  """Up to ``docs`` calibration sequences of ``source``: fewer (halving) when its calibration side is smaller."""
  from jaxprune import calibration

  while True:
    try:
      return calibration.sample(source, tokenizer, docs, seqlen, seed)
    except JaxpruneError as err:
      if docs == 1 or "fewer than nsamples" not in str(err):
        raise
      docs = max(1, docs // 2)


def of_run(record: dict[str, Any], tokenizer, docs: int, override: str | None) -> tuple[list[str], str]:
  """The router's training text of a sub-model, decoded: ``docs`` sequences drawn from the calibration side
  of the run's calibration source with its seed and length (or of ``override``), or the run's token file."""
  cal = record.get("calibration") or {}
  seqlen = int(cal.get("seqlen") or 256)
  if override is not None:
    tokens, source = _sample(override, tokenizer, docs, seqlen, 0), override
  elif cal.get("source") == "tokens-file" and Path(cal.get("path", "")).is_file():
    tokens, source = np.load(cal["path"]), cal["path"]
  elif cal.get("source") and cal.get("nsamples"):
    tokens = _sample(cal["source"], tokenizer, docs, seqlen, int(cal.get("seed") or 0))
    source = cal["source"]
  else:
    raise JaxpruneError("the run has no calibration text (magnitude, or its token file is gone):"
                        " give router text with --router-text NAME=DOMAIN_OR_PATH")
  return _decode(tokenizer, np.asarray(tokens)[:docs]), str(source)


def of_source(source: str, tokenizer, docs: int, seqlen: int = 256) -> list[str]:
  """Up to ``docs`` decoded sequences of ``seqlen`` tokens from the calibration side of ``source``."""
  return _decode(tokenizer, _sample(source, tokenizer, docs, seqlen, 0))


def _decode(tokenizer, tokens: np.ndarray) -> list[str]:
  return [tokenizer.decode([int(t) for t in row]) for row in tokens]
