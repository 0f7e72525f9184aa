"""Calibration and held-out token windows from a domain's text (`jaxprune.calibration.sources`).

`sample` follows Wanda's C4 loader: a seeded choice of documents, a random
window of ``seqlen`` tokens from a document longer than that; documents that
are shorter (code instructions, translation pairs) are packed, separated by
EOS. Draws alternate evenly between a corpus's projects. `held_out` cuts
non-overlapping windows from the files the calibration side never sees.

Example:
  >>> tokens = sample("python", tokenizer, n=128, seqlen=512, seed=0)  # int32 [128, 512]
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from jaxprune.calibration.documents import Corpus, Doc, cut, describe_skips, read_text
from jaxprune.calibration.sources import resolve, sides
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 8
"""A stretch of seqlen * 8 characters holds more than seqlen tokens of any text
we know (code and prose run 3-5 characters per token): documents are
tokenized only that far, never whole megabyte files for one window."""

# --------------------------------------------------------------------------- #
# Sampling core (pure given the corpus readers and the tokenizer)
# --------------------------------------------------------------------------- #


@dataclasses.dataclass
class _Side:
  """Reads documents' text for one side of the split; records each one's outcome once."""

  corpus: Corpus
  positional: bool
  held_out: bool
  seen: dict[Doc, str] = dataclasses.field(default_factory=dict)

  def __call__(self, doc: Doc) -> str | None:
    text, self.seen[doc] = read_text(self.corpus, doc)
    if text is not None and self.positional:
      text = cut(text, self.held_out)
    return text if text and text.strip() else None

  def report(self, domain: str, what: str) -> None:
    """Log what was read; binary and non-UTF-8 files are a warning, as the user may not expect them."""
    level = logging.WARNING if {"binary", "non-UTF-8"} & set(self.seen.values()) else logging.INFO
    log.log(level, "%s: %s from documents: %s", domain, what, describe_skips(self.seen.values()))


def _encoder(tokenizer) -> tuple[Callable[[str], list[int]], int]:
  """Token ids of a text without added BOS/EOS (literal special-token text stays text), and EOS."""
  eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
  if eos is None:
    raise JaxpruneError("the tokenizer has no EOS token: packing short documents needs one; set tokenizer.eos_token")

  def encode(text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True, verbose=False))

  return encode, int(eos)


def _order(keys: list[list[str]], rng: np.random.Generator) -> Iterator[Doc]:
  """One pass over every document: each step picks a project uniformly, then its next document."""
  perms = [rng.permutation(len(k)) for k in keys]
  pos = [0] * len(keys)
  active = [g for g, k in enumerate(keys) if k]
  while active:
    g = active[int(rng.integers(len(active)))]
    yield g, keys[g][perms[g][pos[g]]]
    pos[g] += 1
    if pos[g] == len(keys[g]):
      active.remove(g)


def _stretch(text: str, limit: int, rng: np.random.Generator) -> tuple[str, bool]:
  """A random stretch of at most ``limit`` characters cut at line ends, and whether it is cut."""
  if len(text) <= limit:
    return text, False
  start = int(rng.integers(0, len(text) - limit + 1))
  if start and (nl := text.find("\n", start, start + limit // 2)) >= 0:
    start = nl + 1
  end = start + limit
  if (nl := text.rfind("\n", start + limit // 2, end)) >= 0:
    end = nl + 1
  return text[start:end], True


def _count_tokens(keys: list[list[str]], text_of: _Side, encode: Callable[[str], list[int]], need: int) -> int:
  """Tokens (with EOS) of the side, counted only until ``need``: never whole huge files."""
  total = 0
  for doc in ((g, k) for g, ks in enumerate(keys) for k in ks):
    if (text := text_of(doc)) is not None:
      total += len(encode(text[:(need - total) * CHARS_PER_TOKEN])) + 1
      if total >= need:
        break
  return total


def draw(keys: list[list[str]], text_of: _Side, encode: Callable[[str], list[int]], eos: int,
         n: int, seqlen: int, rng: np.random.Generator, domain: str) -> np.ndarray:
  """``n`` rows of ``seqlen`` tokens: random windows of long documents, short ones packed with EOS.

  Documents come without replacement until every one was drawn; a small corpus
  with enough tokens in all is then walked again with new random windows.
  """
  rows: list[list[int]] = []
  buf: list[int] = []
  limit = seqlen * CHARS_PER_TOKEN
  first = True
  while len(rows) < n:
    readable = 0
    for doc in _order(keys, rng):
      text = text_of(doc)
      if text is None:
        continue
      readable += 1
      if not buf:
        piece, was_cut = _stretch(text, limit, rng)
        toks = encode(piece)[: -1 if was_cut else None]  # a cut may split the last token
        if len(toks) > seqlen:
          start = int(rng.integers(0, len(toks) - seqlen + 1))
          rows.append(toks[start:start + seqlen])
        else:
          buf = toks + [eos]
      else:
        buf += encode(text[:limit]) + [eos]
      if len(buf) >= seqlen:
        rows.append(buf[:seqlen])
        buf = []
      if len(rows) == n:
        break
    else:
      if not readable:
        raise JaxpruneError(
            f"{domain}: no readable text on the calibration side ({describe_skips(text_of.seen.values())}):"
            " give UTF-8 text files")
      if first:
        total = _count_tokens(keys, text_of, encode, n * seqlen)
        if total < n * seqlen:
          raise JaxpruneError(
              f"{domain}: the calibration side has {total:,} tokens, fewer than nsamples x seqlen ="
              f" {n} x {seqlen} = {n * seqlen:,}: add text or lower nsamples/seqlen"
          )
      first = False  # enough text: further passes draw new windows from the same documents
  return np.asarray(rows, np.int32)


def _check(n: int, seqlen: int, what: str = "nsamples") -> None:
  if n < 1 or seqlen < 1:
    raise JaxpruneError(f"{what} and seqlen must be at least 1 (got {n} and {seqlen})")


def sample(domain: str, tokenizer, n: int, seqlen: int, seed: int, *,
           cache_dir: str | os.PathLike | None = None) -> np.ndarray:
  """``n`` calibration sequences of ``seqlen`` tokens, int32 [n, seqlen], the same for a seed anywhere."""
  _check(n, seqlen)
  corpus = resolve(domain, cache_dir=cache_dir)
  calib, _, positional = sides(corpus)
  encode, eos = _encoder(tokenizer)
  side = _Side(corpus, positional, held_out=False)
  rows = draw(calib, side, encode, eos, n, seqlen, np.random.default_rng(seed), domain)
  side.report(domain, f"{n} x {seqlen} calibration tokens")
  return rows


def _held_out_order(corpus: Corpus, held: list[list[str]]) -> Iterator[Doc]:
  """Held-out documents in a fixed order, no seed: one per project in turn, each in hash order."""
  def rank(g: int, key: str) -> bytes:
    return hashlib.sha256(f"order/{corpus.groups[g].name}/{key}".encode()).digest()

  queues = [sorted(keys, key=lambda k, g=g: rank(g, k)) for g, keys in enumerate(held)]
  for i in range(max(map(len, queues), default=0)):
    yield from ((g, q[i]) for g, q in enumerate(queues) if i < len(q))


def held_out(domain: str, tokenizer, seqlen: int, max_windows: int, *,
             cache_dir: str | os.PathLike | None = None) -> np.ndarray:
  """Up to ``max_windows`` non-overlapping windows, int32 [k, seqlen], of text calibration never sees.

  Documents are joined with EOS (as Wanda's eval joins its test set) and each
  gives at most seqlen * CHARS_PER_TOKEN characters, so windows span many files.
  """
  _check(max_windows, seqlen, "max_windows")
  corpus = resolve(domain, cache_dir=cache_dir)
  _, held, positional = sides(corpus)
  encode, eos = _encoder(tokenizer)
  text_of = _Side(corpus, positional, held_out=True)
  texts = (text_of(doc) for doc in _held_out_order(corpus, held))
  documents = (encode(t if positional else t[:seqlen * CHARS_PER_TOKEN]) + [eos] for t in texts if t is not None)
  windows, total = join_windows(documents, seqlen, max_windows)
  if not len(windows):
    raise JaxpruneError(
        f"{domain}: the held-out side has {total:,} tokens, fewer than one window of {seqlen}:"
        " add text or lower seqlen"
    )
  text_of.report(domain, f"{len(windows)} held-out windows of {seqlen}")
  return windows


def join_windows(documents: Iterable[list[int]], seqlen: int, max_windows: int) -> tuple[np.ndarray, int]:
  """Documents' tokens (each ending in EOS) joined into up to ``max_windows`` windows int32 [k, seqlen].

  Documents are read only until the windows are full. Returns the windows (k = 0
  when there is less than one) and the number of tokens read.
  """
  stream: list[int] = []
  for tokens in documents:
    stream += tokens
    if len(stream) >= max_windows * seqlen:
      break
  k = min(max_windows, len(stream) // seqlen)
  return np.asarray(stream[:k * seqlen], np.int32).reshape(k, seqlen), len(stream)


