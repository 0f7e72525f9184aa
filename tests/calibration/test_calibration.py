"""jaxprune.calibration: seeded windows and packing, held-out split, local text and hf: datasets, errors.

A byte-level tokenizer (one token per ASCII byte, plus <eos>) makes token counts
and decoded text exact, so every property is checked on the text itself.
"""

from __future__ import annotations

import json
import logging
import os
import random

import numpy as np
import pytest

from jaxprune import calibration
from jaxprune.calibration import documents, windows
from jaxprune.calibration.documents import is_held_out
from jaxprune.errors import JaxpruneError


@pytest.fixture(scope="module")
def tok():
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast

  vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
  vocab["<eos>"] = len(vocab)
  t = Tokenizer(models.BPE(vocab=vocab, merges=[]))
  t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  t.decoder = decoders.ByteLevel()
  return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<eos>")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXPRUNE_CACHE", str(tmp_path / "cache"))


def names(side: str, count: int, prefix: str = "doc", ext: str = ".txt") -> list[str]:
  """File names whose hash puts them on the given side of the split."""
  want = side == "held"
  out = [f"{prefix}{i:04d}{ext}" for i in range(10_000) if is_held_out(f"local/{prefix}{i:04d}{ext}") == want]
  return out[:count]


def write(folder, files: dict[str, str | bytes]):
  folder.mkdir(parents=True, exist_ok=True)
  for name, body in files.items():
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
  return folder


def corpus(tmp_path, n: int = 40, seed: int = 0):
  """Files of mixed length, each line tagged with the file's name."""
  rng = random.Random(seed)
  files = {f"d{i // 10}/f{i:03d}.txt": "".join(f"<f{i:03d}> line {j}\n" for j in range(rng.choice([2, 5, 40, 120])))
           for i in range(n)}
  return write(tmp_path / "corpus", files), files


def text(tok, row) -> str:
  return tok.decode(row)


# --------------------------------------------------------------------------- #
# Determinism
# --------------------------------------------------------------------------- #


def test_same_seed_same_tokens_other_seed_other_tokens(tmp_path, tok):
  folder, _ = corpus(tmp_path)
  a = calibration.sample(str(folder), tok, 16, 64, seed=0)
  b = calibration.sample(str(folder), tok, 16, 64, seed=0)
  c = calibration.sample(str(folder), tok, 16, 64, seed=1)
  assert a.dtype == np.int32 and a.shape == (16, 64)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_file_listing_order_does_not_matter(tmp_path, tok, monkeypatch):
  folder, _ = corpus(tmp_path)
  before = calibration.sample(str(folder), tok, 16, 64, seed=3)
  held_before = calibration.held_out(str(folder), tok, 64, 8)
  real_walk, shuffler, orders = os.walk, random.Random(7), []

  def shuffled_walk(top, *args, **kwargs):
    for dirpath, dirnames, filenames in real_walk(top, *args, **kwargs):
      shuffler.shuffle(dirnames)
      shuffler.shuffle(filenames)
      orders.append(list(filenames))
      yield dirpath, dirnames, filenames

  monkeypatch.setattr(documents.os, "walk", shuffled_walk)
  after = calibration.sample(str(folder), tok, 16, 64, seed=3)
  assert any(o != sorted(o) for o in orders), "the fake walk must actually reorder files"
  np.testing.assert_array_equal(before, after)
  np.testing.assert_array_equal(held_before, calibration.held_out(str(folder), tok, 64, 8))


# --------------------------------------------------------------------------- #
# Split, windows, packing
# --------------------------------------------------------------------------- #


def test_calibration_and_held_out_come_from_disjoint_files(tmp_path, tok):
  files = {n: "".join(f"<{n}> {j}\n" for j in range(30)) for n in names("calib", 30) + names("held", 6)}
  folder = write(tmp_path / "c", files)
  calib = "".join(text(tok, r) for r in calibration.sample(str(folder), tok, 40, 128, seed=0))
  held = "".join(text(tok, r) for r in calibration.held_out(str(folder), tok, 128, 50))
  tags = lambda s: {n for n in files if f"<{n}>" in s}  # noqa: E731
  assert tags(calib) and tags(held)
  assert tags(calib) <= set(names("calib", 30))
  assert tags(held) <= set(names("held", 6))


def test_held_out_windows_are_consecutive_and_non_overlapping(tmp_path, tok):
  files = {n: f"<{n}>" + "x" * 50 + "\n" for n in names("held", 5)} | {n: "y\n" for n in names("calib", 5)}
  folder = write(tmp_path / "c", files)
  windows = calibration.held_out(str(folder), tok, 16, 100)
  joined = text(tok, windows.reshape(-1))
  assert all(joined.count(f"<{n}>") == 1 for n in names("held", 5)), "each held-out file once, no overlap"
  assert "y" not in joined
  total = sum(len(files[n]) + 1 for n in names("held", 5))  # tokens plus one EOS each
  assert windows.shape == (total // 16, 16)
  assert len(calibration.held_out(str(folder), tok, 16, 3)) == 3


def test_packing_keeps_eos_boundaries(tmp_path, tok):
  files = {n: f"short document {n}\n" * (1 + i % 3) for i, n in enumerate(names("calib", 40))} | {
      n: "held\n" for n in names("held", 3)}
  files |= {n: f"{n}: the text <eos> is text, not a separator\n" for n in names("calib", 40)[::4]}
  folder = write(tmp_path / "c", files)
  docs = [tok.encode(files[n], add_special_tokens=False, split_special_tokens=True) for n in names("calib", 40)]
  rows = calibration.sample(str(folder), tok, 8, 100, seed=0)
  eos = tok.eos_token_id
  for row in rows.tolist():
    segments = [[]]
    for t in row:
      segments.append([]) if t == eos else segments[-1].append(t)
    *whole, last = segments
    assert len(whole) >= 1
    assert all(s in docs for s in whole), "each EOS-delimited segment is one whole document"
    assert any(d[:len(last)] == last for d in docs), "the row ends inside a document, from its start"


@pytest.mark.parametrize("lines", [20, 400], ids=["whole-document-tokenized", "stretch-tokenized"])
def test_long_documents_give_random_windows_without_eos(tmp_path, tok, lines):
  files = {n: "".join(f"{n}:{j:05d}\n" for j in range(lines)) for n in names("calib", 6) + names("held", 1)}
  folder = write(tmp_path / "c", files)
  rows = calibration.sample(str(folder), tok, 12, 64, seed=0)
  starts = set()
  for row in rows:
    assert tok.eos_token_id not in row
    s = text(tok, row)
    home = [body for body in files.values() if s in body]
    assert home, "a window is a contiguous stretch of one document"
    starts.add(home[0].index(s))
  assert len(starts) > 6, "window starts are random, not the document start"


def test_draws_alternate_evenly_between_projects(tok):
  big = documents.Group("big", tuple(f"b{i:04d}" for i in range(400)), read=lambda k: f"<{k}>" * 40)
  small = documents.Group("small", tuple(f"s{i:02d}" for i in range(20)), read=lambda k: f"<{k}>" * 40)
  corpus = documents.Corpus("two", (big, small))
  keys = [list(big.keys), list(small.keys)]
  side = windows._Side(corpus, positional=False, held_out=False)
  encode, eos = windows._encoder(tok)
  rows = calibration.draw(keys, side, encode, eos, 20, 16, np.random.default_rng(0), "two")
  from_small = sum("<s" in text(tok, r) for r in rows)
  assert 6 <= from_small <= 14, "a project is chosen uniformly, whatever its number of files"


def test_only_a_stretch_of_a_huge_document_is_tokenized(tmp_path, tok):
  big = "".join(f"line {j}\n" for j in range(300_000))  # ~2.5 MB
  folder = write(tmp_path / "c", {n: big for n in names("calib", 2) + names("held", 1)})
  counting = Counting(tok)
  rows = calibration.sample(str(folder), counting, 4, 32, seed=0)  # 2 documents: several passes
  assert rows.shape == (4, 32)
  assert counting.chars <= 3 * 4 * 32 * calibration.CHARS_PER_TOKEN
  counting.chars = 0
  assert calibration.held_out(str(folder), counting, 32, 2).shape == (2, 32)
  assert counting.chars <= 32 * calibration.CHARS_PER_TOKEN


class Counting:
  """A tokenizer that counts the characters it is asked to encode."""

  def __init__(self, tok):
    self.tok, self.chars = tok, 0

  def __getattr__(self, name):
    return getattr(self.tok, name)

  def encode(self, text, **kwargs):
    self.chars += len(text)
    return self.tok.encode(text, **kwargs)


def test_single_file_splits_head_and_tail(tmp_path, tok):
  body = "".join(f"line {j:04d}\n" for j in range(1000))
  path = write(tmp_path / "c", {"one.txt": body}) / "one.txt"
  cut = body.index("line 0900")
  calib = [text(tok, r) for r in calibration.sample(str(path), tok, 20, 64, seed=0)]
  held = [text(tok, r) for r in calibration.held_out(str(path), tok, 64, 1000)]
  assert all(body.index(s) + len(s) <= cut for s in calib)
  assert held and text(tok, calibration.held_out(str(path), tok, 64, 1)[0]) == body[cut:cut + 64]
  assert calibration.describe(str(path))["split"].startswith("last 10%")


def test_glob_selects_matching_files(tmp_path, tok):
  files = {f"a/{n}": f"<{n}> keep\n" * 20 for n in names("calib", 8, ext=".md")}
  files |= {f"b/{n}": f"<{n}> drop\n" * 20 for n in names("calib", 8, ext=".txt")}
  folder = write(tmp_path / "g", files)
  rows = calibration.sample(str(folder / "**" / "*.md"), tok, 4, 32, seed=0)
  joined = "".join(text(tok, r) for r in rows)
  assert "keep" in joined and "drop" not in joined
  assert calibration.describe(str(folder / "**" / "*.md"))["documents"] == 8


def test_binary_and_non_utf8_files_are_skipped_with_a_count(tmp_path, tok, caplog):
  good = names("calib", 5)
  files = {good[0]: "alpha " * 4, good[1]: "beta " * 4, good[2]: "gamma " * 4,
           good[3]: b"\x00\x01\x02binary\x00", good[4]: "caf\xe9 latin-1".encode("latin-1")}
  files |= {n: "held out text\n" for n in names("held", 1)}
  folder = write(tmp_path / "c", files)
  # 2 rows of 30 from 25 + 21 + 25 tokens: the first pass can fill only one, so it reads every file
  with caplog.at_level(logging.INFO, logger="jaxprune.calibration"):
    rows = calibration.sample(str(folder), tok, 2, 30, seed=0)
  assert not any(w in text(tok, r) for r in rows for w in ("binary", "caf"))
  assert "3 read; skipped 1 binary, 1 non-UTF-8" in caplog.text
  assert any(r.levelno == logging.WARNING for r in caplog.records)


# --------------------------------------------------------------------------- #
# hf: local datasets
# --------------------------------------------------------------------------- #

ROWS = [{"question": f"What is {i} + {i}?", "answer": f"It is {2 * i}.", "id": i} for i in range(60)]


def _jsonl(tmp_path):
  path = tmp_path / "qa.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
  return str(path)


def _parquet(tmp_path):
  import datasets

  path = tmp_path / "qa.parquet"
  datasets.Dataset.from_list(ROWS).to_parquet(str(path))
  return str(path)


def _saved(tmp_path):
  import datasets

  datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "saved"))
  return str(tmp_path / "saved")


@pytest.mark.parametrize("make", [_jsonl, _parquet, _saved], ids=["jsonl", "parquet", "save_to_disk"])
def test_hf_local_dataset(tmp_path, tok, make):
  where = make(tmp_path)
  spec = f"hf:{where}:train:question+answer"
  rows = calibration.sample(spec, tok, 4, 64, seed=0)
  again = calibration.sample(spec, tok, 4, 64, seed=0)
  np.testing.assert_array_equal(rows, again)
  first = text(tok, rows[0]).split("<eos>")[0]
  i = int(first.split()[2])
  assert first == f"What is {i} + {i}?\nIt is {2 * i}."
  held = {text(tok, r) for r in calibration.held_out(spec, tok, 16, 100)}
  info = calibration.describe(spec)
  assert info["documents"] == 60 and info["held_out_documents"] > 0
  calib_rows = calibration.sample(spec, tok, 20, 64, seed=1)
  calib_q = {s.split("\n")[0] for r in calib_rows for s in text(tok, r).split("<eos>")}
  held_ids = {j for j in range(60) if is_held_out(f"train/{j:02d}")}
  assert not any(f"What is {j} + {j}?" in calib_q for j in held_ids)
  assert held


def test_hf_short_name_uses_its_field_layout(tmp_path, tok):
  local = tmp_path / "cache" / "local"
  write(local / "gsm8k", {"train.jsonl": "".join(json.dumps(r) + "\n" for r in ROWS)})
  wmt = [{"translation": {"en": f"house {i}", "fr": f"maison {i}"}} for i in range(40)]
  write(local / "wmt14", {"train.jsonl": "".join(json.dumps(r) + "\n" for r in wmt)})
  math_rows = "".join(text(tok, r) for r in calibration.sample("math", tok, 2, 64, seed=0))
  assert "?\nIt is " in math_rows
  pair = text(tok, calibration.sample("hf:wmt14", tok, 1, 64, seed=0)[0]).split("<eos>")[0]
  i = pair.split()[2]
  assert pair == f"English: house {i}\nFrench: maison {i}"


def test_csr_domain_reads_local_openbookqa(tmp_path, tok):
  local = tmp_path / "cache" / "local"
  rows = [{"question_stem": f"Rain makes the ground {i}", "answerKey": "B",
           "choices": {"text": ["dry", f"wet {i}"], "label": ["A", "B"]}} for i in range(40)]
  write(local / "ob_qa", {"train.jsonl": "".join(json.dumps(r) + "\n" for r in rows)})
  first = text(tok, calibration.sample("csr", tok, 1, 64, seed=0)[0]).split("<eos>")[0]
  i = first.split()[-1]
  assert first == f"Rain makes the ground {i} wet {i}"


# --------------------------------------------------------------------------- #
# Errors: one line, naming the fix
# --------------------------------------------------------------------------- #


def _empty(tmp_path):
  (tmp_path / "empty").mkdir()
  return str(tmp_path / "empty")


def _binary_only(tmp_path):
  return str(write(tmp_path / "bin", {n: b"\x00\xff" * 50 for n in names("calib", 3) + names("held", 1)}))


def _tiny(tmp_path):
  return str(write(tmp_path / "tiny", {n: "abc\n" for n in names("calib", 4) + names("held", 1)}))


def _jsonl_no_field(tmp_path):
  return "hf:" + _jsonl(tmp_path)


def _jsonl_bad_split(tmp_path):
  return "hf:" + _jsonl(tmp_path) + ":validation"


def _jsonl_bad_field(tmp_path):
  return "hf:" + _jsonl(tmp_path) + ":train:body"


BAD = {
    "unknown-domain": (lambda p: "klingon", "python, java, cpp, javascript, english"),
    "empty-folder": (_empty, "has no files"),
    "nothing-readable": (_binary_only, "no readable text"),
    "too-few-tokens": (_tiny, "has 20 tokens, fewer than nsamples x seqlen = 4 x 64 = 256"),
    "glob-no-match": (lambda p: str(p / "*.nothing"), "matches no files"),
    "hf-missing": (lambda p: "hf:no_such_dataset", "never downloads"),
    "hf-bad-spec": (lambda p: "hf:", "hf:NAME_OR_PATH[:SPLIT][:FIELD]"),
    "hf-which-field": (_jsonl_no_field, "say which field holds the text"),
    "hf-bad-split": (_jsonl_bad_split, "no split 'validation'"),
    "hf-bad-field": (_jsonl_bad_field, "no field 'body'"),
    "math-absent": (lambda p: "math", "no local GSM8K or MathQA data"),
    "csr-absent": (lambda p: "csr", "no local OpenBookQA or HellaSwag data"),
    "not-fetched": (lambda p: "cpp", "run `jaxprune corpora fetch cpp`"),
}


@pytest.mark.parametrize("make,message", BAD.values(), ids=BAD.keys())
def test_bad_input_is_one_line_naming_the_fix(tmp_path, tok, make, message):
  with pytest.raises(JaxpruneError) as err:
    calibration.sample(make(tmp_path), tok, 4, 64, seed=0)
  assert message in str(err.value)
  assert "\n" not in str(err.value)


def test_bad_sizes(tmp_path, tok):
  folder, _ = corpus(tmp_path)
  with pytest.raises(JaxpruneError, match="at least 1"):
    calibration.sample(str(folder), tok, 0, 64, seed=0)
  with pytest.raises(JaxpruneError, match="fewer than one window"):
    folder = write(tmp_path / "h", {n: "a\n" for n in names("held", 1) + names("calib", 1)})
    calibration.held_out(str(folder), tok, 64, 4)


def test_hf_short_name_from_the_local_hub_cache(tmp_path, tok, monkeypatch):
  """A dataset downloaded earlier by `datasets` is found offline, with its config."""
  import datasets
  from huggingface_hub import constants

  repo = tmp_path / "hub" / "datasets--openai--gsm8k"
  snapshot = repo / "snapshots" / ("0" * 40)
  (repo / "refs").mkdir(parents=True)
  (repo / "refs" / "main").write_text("0" * 40)
  (snapshot / "main").mkdir(parents=True)
  (snapshot / "other").mkdir(parents=True)
  datasets.Dataset.from_list(ROWS).to_parquet(str(snapshot / "main" / "train-00000-of-00001.parquet"))
  datasets.Dataset.from_list([{"question": "wrong config", "answer": "x"}] * 60).to_parquet(
      str(snapshot / "other" / "train-00000-of-00001.parquet"))
  (snapshot / "README.md").write_text(
      "---\nconfigs:\n- config_name: main\n  data_files:\n  - split: train\n    path: main/train-*\n"
      "- config_name: other\n  data_files:\n  - split: train\n    path: other/train-*\n---\n")
  monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
  joined = "".join(text(tok, r) for r in calibration.sample("hf:gsm8k", tok, 2, 64, seed=0))
  assert "?\nIt is " in joined and "wrong config" not in joined
  assert calibration.describe("math")["groups"][0]["path"] == str(snapshot)


def test_provenance_paths_are_portable(tmp_path, monkeypatch):
  from pathlib import Path

  home = tmp_path / "home"
  (home / "repo").mkdir(parents=True)
  monkeypatch.setenv("HOME", str(home))
  monkeypatch.chdir(home / "repo")
  assert calibration.portable_path(str(home / ".cache" / "x.zip")) == "~/.cache/x.zip"
  assert calibration.portable_path(str(home / "repo" / "data" / "c.txt")) == "data/c.txt"
  assert calibration.portable_path("/opt/corpus") == "/opt/corpus"
  monkeypatch.chdir(home)
  assert calibration.portable_path(str(home / "repo" / "c.txt")) == "~/repo/c.txt"
  assert Path(calibration.portable_path(str(home / "repo"))).name == "repo"
