"""Perplexity over non-overlapping windows, as Wanda's evaluation computes it.

Wanda's ``eval_ppl`` takes the mean next-token NLL of each window of
``seqlen`` tokens (seqlen - 1 predictions), averages the windows and
exponentiates. Task ``ppl:<domain>`` reads the held-out side of a calibration
domain (text the calibration side never sees); ``ppl:<file-or-folder>`` reads
all of a user's own text, documents joined with EOS as Wanda joins its test
set.

Example:
  >>> windows = calibration.held_out("python", loaded.tokenizer, seqlen=512, max_windows=64)
  >>> perplexity(masks.apply(loaded.model, masks), windows)["ppl"]
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jaxprune.evals import scoring
from jaxprune import calibration
from jaxprune.calibration import corpora
from jaxprune.calibration.documents import read_text
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)


def perplexity(model, windows: np.ndarray, *, batch_size: int = 4,
               on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
  """exp(mean over windows of the mean token NLL) of ``model`` on int windows [k, seqlen].

  Every batch has ``batch_size`` rows (one compilation); the padding rows of
  the last batch are dropped before averaging.
  """
  windows = np.asarray(windows, np.int32)
  if windows.ndim != 2 or windows.shape[0] == 0 or windows.shape[1] < 2:
    raise JaxpruneError(f"windows of shape {windows.shape}: need int tokens [k >= 1, seqlen >= 2]")
  tree_def, params = scoring.split(model)
  start = time.perf_counter()
  nlls: list[np.ndarray] = []
  for batch, real in scoring.batches(windows, batch_size):
    logprobs, _ = scoring.next_token_logprobs(tree_def, params, batch)
    nlls.append(-np.asarray(logprobs, np.float64)[:real].mean(axis=1))
    if on_batch is not None:
      on_batch(sum(map(len, nlls)))
  per_window = np.concatenate(nlls)
  nll = float(per_window.mean())
  return {
      "ppl": math.exp(nll),
      "nll": nll,
      "windows": int(windows.shape[0]),
      "seqlen": int(windows.shape[1]),
      "tokens": int(windows.size),
      "seconds": time.perf_counter() - start,
  }


def _is_local(source: str) -> bool:
  return source not in corpora.DOMAINS and not source.startswith("hf:")


def local_windows(source: str, tokenizer, seqlen: int, max_windows: int) -> np.ndarray:
  """Up to ``max_windows`` windows [k, seqlen] of all the text in a file, folder or glob."""
  path = Path(source).expanduser()
  if not path.exists() and not any(c in source for c in "*?["):
    raise JaxpruneError(
        f"ppl:{source}: no such file or folder; give ppl:<named domain> ({', '.join(corpora.DOMAINS)})"
        " or ppl:<UTF-8 text file, folder or glob>")
  corpus = calibration.resolve(source)
  eos = tokenizer.eos_token_id
  if eos is None:
    raise JaxpruneError("the tokenizer has no EOS token: joining documents needs one; set tokenizer.eos_token")

  def documents():
    read = 0
    for doc in ((g, key) for g, group in enumerate(corpus.groups) for key in group.keys):
      text, _ = read_text(corpus, doc)
      if text is not None:  # a prefix is enough: never tokenize whole megabyte files for a few windows
        tokens = tokenizer.encode(text[:(max_windows * seqlen - read) * calibration.CHARS_PER_TOKEN],
                                  add_special_tokens=False) + [eos]
        read += len(tokens)
        yield tokens

  windows, total = calibration.join_windows(documents(), seqlen, max_windows)
  if not len(windows):
    raise JaxpruneError(
        f"ppl:{source} has {total:,} tokens of UTF-8 text, fewer than one window of {seqlen}:"
        " add text or lower --seqlen")
  return windows


def windows_for(source: str, tokenizer, seqlen: int, max_windows: int) -> tuple[np.ndarray, str]:
  """Evaluation windows of a ``ppl:`` source and what they are (held-out side or whole text)."""
  if tokenizer is None:
    raise JaxpruneError("the model has no tokenizer: perplexity on text needs the model's tokenizer files")
  if _is_local(source):
    return local_windows(source, tokenizer, seqlen, max_windows), "all text"
  return calibration.held_out(source, tokenizer, seqlen, max_windows), "held-out side"


def run_task(loaded, name: str, config, progress) -> dict[str, Any]:
  """The ``ppl:SOURCE`` task of `evals.tasks`: perplexity on the source's windows."""
  source = name.split(":", 1)[1]
  windows, what = windows_for(source, loaded.tokenizer, config.seqlen, config.max_windows)
  report = perplexity(loaded.model, windows, batch_size=config.batch_size, on_batch=progress(name, len(windows)))
  return {"metrics": {"ppl": report.pop("ppl")}, "source": source, "text": what, **report}
