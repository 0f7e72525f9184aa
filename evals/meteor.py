"""Translation scored by METEOR: best of 5 sampled translations per source sentence.

METEOR is nltk's `meteor_score` with WordNet 3.0 read from the files of
Debian's ``wordnet-base`` (``/usr/share/wordnet``, or ``--data wordnet=DIR``);
nltk never downloads anything. Debian ships no ``lexnames`` file, which nltk's
reader needs, so a copy of the database plus that fixed 45-line
table is made once under the jaxprune cache (a copy: nltk refuses links).

Prompts use the calibration's translation layout (``English: ...\\nFrench:``)
after three exemplar pairs of our own. Data: WMT14 / opus_books rows
(``translation: {en, fr}``, or flat ``en``/``fr``) from a local file, or, when
none is given, the held-out gettext catalogues of the ``translation`` domain.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxprune.evals import data
from jaxprune.errors import JaxpruneError

BEST_OF = 5
LANGUAGES = {"en": "English", "fr": "French"}
TASKS = {"meteor-en-fr": ("en", "fr"), "meteor-fr-en": ("fr", "en")}
LAYOUT = "WMT14/opus_books rows as JSONL/JSON/Parquet (field translation: {en, fr}, or fields en and fr)"
EXEMPLARS = (
    ("The weather is nice today.", "Il fait beau aujourd'hui."),
    ("Where is the train station?", "Où est la gare ?"),
    ("Please save your work before closing the window.", "Veuillez enregistrer votre travail avant de fermer la fenêtre."),
)
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition"
    " noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object"
    " noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape"
    " noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication"
    " verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception"
    " verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_TOKEN = re.compile(r"\w+|[^\w\s]")


# --------------------------------------------------------------------------- #
# WordNet and METEOR
# --------------------------------------------------------------------------- #


def _with_lexnames(source: Path, cache: Path) -> Path:
  """A folder with ``source``'s WordNet files and the lexnames table (made once, atomically)."""
  target = cache / f"wordnet-{hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]}"
  if (target / "lexnames").exists():
    return target
  cache.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=cache))
  for f in source.iterdir():  # copies (28 MB): nltk refuses symbolic and hard links
    if f.is_file():  # the database files only: some Debian builds add folders (wnres/, for the GUI)
      shutil.copyfile(f, tmp / f.name)
  (tmp / "lexnames").write_text("".join(
      f"{i:02d}\t{name}\t{_POS_NUMBER[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES)))
  try:
    tmp.rename(target)
  except OSError:  # another process made it first
    pass
  return target


def wordnet(path: str | os.PathLike | None = None, cache: str | os.PathLike | None = None):
  """nltk's WordNet reader over the Debian ``wordnet-base`` files at ``path``."""
  import nltk
  from nltk.corpus.reader.wordnet import WordNetCorpusReader

  source = Path(path or os.environ.get("JAXPRUNE_WORDNET", "/usr/share/wordnet")).expanduser()
  if not (source / "data.noun").is_file() or not (source / "index.noun").is_file():
    raise JaxpruneError(
        f"no WordNet 3.0 database (data.noun, index.noun, ...) in {source}: `apt-get install wordnet-base`,"
        " or unpack it with `apt-get download wordnet-base && dpkg-deb -x` and pass --data wordnet=DIR")
  cache = Path(cache or os.environ.get("JAXPRUNE_CACHE", "~/.cache/jaxprune")).expanduser()
  root = source if (source / "lexnames").exists() else _with_lexnames(source, cache)
  for allowed in (root.resolve(), source.resolve()):  # nltk only opens files below its data paths
    if str(allowed) not in nltk.data.path:
      nltk.data.path.append(str(allowed))
  class WordNet30(WordNetCorpusReader):
    def map_wn(self, version="wordnet"):
      """No mapping: this is WordNet 3.0 itself (nltk would look for its own download to map from)."""
      return None

  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "multilingual functions are not available": we need none
    reader = WordNet30(str(root), None)
  if reader.get_version() != "3.0":
    raise JaxpruneError(f"{source} holds WordNet {reader.get_version()}, not 3.0: point at Debian's wordnet-base files")
  return reader


def tokens(text: str) -> list[str]:
  return _TOKEN.findall(text.lower())


def meteor(reference: str, hypothesis: str, wn) -> float:
  """METEOR of one hypothesis against one reference (nltk's defaults: alpha 0.9, beta 3, gamma 0.5)."""
  from nltk.translate.meteor_score import meteor_score

  return float(meteor_score([tokens(reference)], tokens(hypothesis), wordnet=wn))


# --------------------------------------------------------------------------- #
# Data and prompts
# --------------------------------------------------------------------------- #


def pairs_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
  """(English, French) of WMT14 / opus_books rows or flat en/fr rows."""
  out = []
  for row in rows:
    pair = row.get("translation", row)
    if not isinstance(pair, Mapping) or "en" not in pair or "fr" not in pair:
      raise JaxpruneError(f"a translation row has fields {', '.join(row)}: give {LAYOUT}")
    out.append((str(pair["en"]).strip(), str(pair["fr"]).strip()))
  return out


def gettext_pairs(limit: int) -> list[tuple[str, str]]:
  """Held-out (English, French) pairs of the ``translation`` domain: sentences of 4+ words, no placeholders."""
  from jaxprune import calibration
  from jaxprune.calibration.documents import read_text, split

  corpus = calibration.resolve("translation")
  _, held = split(corpus)
  found = []
  for g, keys in enumerate(held):
    for key in keys:
      text, _ = read_text(corpus, (g, key))
      en, sep, fr = (text or "").removeprefix("English: ").partition("\nFrench: ")
      if sep and len(en.split()) >= 4 and not re.search(r"[%{}<>\n\\_&]", en + fr):
        found.append((en.strip(), fr.strip()))
  found.sort(key=lambda p: hashlib.sha256(p[0].encode()).digest())  # a fixed mix of catalogues
  if not found:
    raise JaxpruneError(f"the translation domain has no held-out sentence pairs: give --data with {LAYOUT}")
  return found[:limit]


def prompt(source: str, src: str, tgt: str) -> str:
  """Three exemplar pairs, then the source sentence, in the calibration's layout."""
  shots = "".join(f"{LANGUAGES[src]}: {dict(en=e, fr=f)[src]}\n{LANGUAGES[tgt]}: {dict(en=e, fr=f)[tgt]}\n\n"
                  for e, f in EXEMPLARS)
  return f"{shots}{LANGUAGES[src]}: {source}\n{LANGUAGES[tgt]}:"


# --------------------------------------------------------------------------- #
# Evaluation
# --------------------------------------------------------------------------- #


def evaluate(generate: Callable[..., list[list[str]]], pairs: Sequence[tuple[str, str]], direction: tuple[str, str],
             wn, *, temperature: float = 0.8, top_p: float = 0.95, max_new_tokens: int = 128,
             keep_samples: bool = True) -> dict[str, Any]:
  """Best-of-5 METEOR of ``generate``'s sampled translations (a `codegen.Generate`).

  With ``keep_samples``, ``samples`` holds each source, its reference and the best translation.
  """
  src, tgt = direction
  start = time.perf_counter()
  sources = [dict(en=e, fr=f)[src] for e, f in pairs]
  references = [dict(en=e, fr=f)[tgt] for e, f in pairs]
  outputs = generate([prompt(s, src, tgt) for s in sources], num_samples=BEST_OF, temperature=temperature,
                     top_p=top_p, max_new_tokens=max_new_tokens, stop=["\n"])
  scores = np.array([[meteor(ref, hyp.strip(), wn) for hyp in hyps] for ref, hyps in zip(references, outputs)])
  best = scores.argmax(axis=1)
  report = {
      "metrics": {"meteor": float(scores.max(axis=1).mean()), "meteor_mean_sample": float(scores.mean())},
      "num_examples": len(pairs), "best_of": BEST_OF, "direction": f"{src}-{tgt}",
      "seconds": time.perf_counter() - start,
  }
  if keep_samples:
    report["samples"] = [{"source": s, "reference": r, "best": o[b].strip(), "meteor": float(sc[b])}
                         for s, r, o, b, sc in zip(sources, references, outputs, best, scores)]
  return report


def preflight(name: str, config) -> None:
  """WordNet is readable and a given data file exists (before the model loads)."""
  wordnet(config.data_path("wordnet"))
  if config.data_path(name) is not None:
    data.locate(name, config.data_path(name), LAYOUT)


def run_task(loaded, name: str, config, progress) -> dict[str, Any]:
  """``meteor-en-fr`` / ``meteor-fr-en``: local WMT14-style data, else held-out gettext pairs."""
  from jaxprune.evals import generate

  wn = wordnet(config.data_path("wordnet"))
  limit = config.limit or 200
  try:
    path = data.locate(name, config.data_path(name), LAYOUT, local=("wmt14", "o_books"))
  except JaxpruneError:
    if config.data_path(name) is not None:
      raise
    pairs, origin = gettext_pairs(limit), "held-out gettext catalogues of the translation domain"
  else:
    pairs, origin = pairs_from_rows(data.load_rows(name, str(path), LAYOUT, ("test", "validation")))[:limit], str(path)
  sampler = generate.make_generate(loaded, config.generation(), on_batch=progress(name, len(pairs) * BEST_OF))
  report = evaluate(sampler, pairs, TASKS[name], wn, temperature=config.temperature, top_p=config.top_p,
                    max_new_tokens=min(config.max_new_tokens, 128), keep_samples=config.samples)
  return {**report, "data": origin}
