"""Zero-shot multiple choice by log-likelihood, as lm-evaluation-harness scores it.

Each choice is a (context, continuation) request; its score is the summed
log-probability of the continuation tokens. ``acc`` picks the highest score,
``acc_norm`` the highest score divided by the choice's length in characters
(lm-eval's definition). Prompts, choices and the tokenization of a pair
(whole string encoded, context tokens split off, trailing context spaces moved
to the continuation, no special tokens, EOS as an empty context) follow
lm-eval's task configs for HellaSwag, ARC, BoolQ, WinoGrande (partial
scoring: the contexts differ, the continuation is shared), OpenBookQA, PIQA.

Example:
  >>> docs = [Doc(contexts=("Question: 2+2?\\nAnswer:",), choices=("4", "5"), gold=0)]
  >>> score(loaded, docs, batch_size=8)["metrics"]
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxprune.evals import data, scoring
from jaxprune.errors import JaxpruneError

DELIMITER = " "


@dataclasses.dataclass(frozen=True)
class Doc:
  """One question: a shared context (or one per choice), the choices and the gold index."""

  contexts: tuple[str, ...]
  choices: tuple[str, ...]
  gold: int
  continuation: str | None = None  # partial scoring: the shared continuation

  def requests(self) -> list[tuple[str, str]]:
    if self.continuation is not None:
      return [(c, DELIMITER + self.continuation) for c in self.contexts]
    return [(self.contexts[0], DELIMITER + c) for c in self.choices]


# --------------------------------------------------------------------------- #
# Task formats (lm-eval's configs)
# --------------------------------------------------------------------------- #


def _hellaswag_text(text: str) -> str:
  text = text.strip().replace(" [title]", ". ")
  return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def _hellaswag(row: Mapping[str, Any]) -> Doc:
  ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
  query = _hellaswag_text(row["activity_label"] + ": " + ctx)
  return Doc((query,), tuple(_hellaswag_text(e) for e in row["endings"]), int(row["label"]))


def _arc(row: Mapping[str, Any]) -> Doc:
  choices = row["choices"]
  return Doc((f"Question: {row['question']}\nAnswer:",), tuple(choices["text"]),
             list(choices["label"]).index(row["answerKey"]))


def _boolq(row: Mapping[str, Any]) -> Doc:
  label = row["label"] if "label" in row else row["answer"]  # super_glue: label 0/1; google/boolq: answer bool
  return Doc((f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:",), ("no", "yes"), int(label))


def _winogrande(row: Mapping[str, Any]) -> Doc:
  sentence = row["sentence"]
  cut = sentence.index("_")
  options = (row["option1"], row["option2"])
  return Doc(tuple(sentence[:cut] + o for o in options), options, {"1": 0, "2": 1}[str(row["answer"])],
             continuation=sentence[cut + 1:].strip())


def _openbookqa(row: Mapping[str, Any]) -> Doc:
  choices = row["choices"]
  return Doc((row["question_stem"],), tuple(choices["text"]), list(choices["label"]).index(row["answerKey"].lstrip()))


def _piqa(row: Mapping[str, Any]) -> Doc:
  return Doc((f"Question: {row['goal']}\nAnswer:",), (row["sol1"], row["sol2"]), int(row["label"]))


@dataclasses.dataclass(frozen=True)
class Format:
  """How a task's rows become `Doc`s, which split to read and what to say when data is missing."""

  parse: Callable[[Mapping[str, Any]], Doc]
  fields: tuple[str, ...]
  splits: tuple[str, ...]
  source: str
  metrics: tuple[str, ...] = ("acc", "acc_norm")

  @property
  def layout(self) -> str:
    return f"{self.source} rows as JSONL/JSON/Parquet or a save_to_disk folder (fields {', '.join(self.fields)})"


FORMATS: dict[str, Format] = {
    "hellaswag": Format(_hellaswag, ("activity_label", "ctx_a", "ctx_b", "endings", "label"), ("validation",),
                        "HF Rowan/hellaswag validation"),
    "arc_easy": Format(_arc, ("question", "choices", "answerKey"), ("test",), "HF allenai/ai2_arc ARC-Easy test"),
    "arc_challenge": Format(_arc, ("question", "choices", "answerKey"), ("test",),
                            "HF allenai/ai2_arc ARC-Challenge test"),
    "boolq": Format(_boolq, ("passage", "question"), ("validation",), "HF super_glue/boolq validation",
                    metrics=("acc",)),
    "winogrande": Format(_winogrande, ("sentence", "option1", "option2", "answer"), ("validation",),
                         "HF winogrande winogrande_xl validation", metrics=("acc",)),
    "openbookqa": Format(_openbookqa, ("question_stem", "choices", "answerKey"), ("test",),
                         "HF allenai/openbookqa main test"),
    "piqa": Format(_piqa, ("goal", "sol1", "sol2", "label"), ("validation",), "HF piqa validation"),
}


def load_docs(task: str, path: str | None = None, limit: int | None = None) -> list[Doc]:
  fmt = FORMATS[task]
  rows = data.load_rows(task, path, fmt.layout, fmt.splits, fmt.fields)
  docs = []
  for n, row in enumerate(rows[:limit], start=1):
    try:
      doc = fmt.parse(row)
    except (KeyError, ValueError, TypeError, IndexError) as err:
      raise JaxpruneError(
          f"{task}: row {n} does not fit the format ({type(err).__name__}: {err}): give {fmt.layout}") from None
    if not 0 <= doc.gold < len(doc.choices):
      raise JaxpruneError(f"{task}: row {n} names answer {doc.gold}, but has {len(doc.choices)} choices"
                          f" (0 to {len(doc.choices) - 1}): fix or drop that row")
    docs.append(doc)
  return docs


# --------------------------------------------------------------------------- #
# Scoring
# --------------------------------------------------------------------------- #


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
  """lm-eval's split of a request into context and continuation tokens."""
  spaces = len(context) - len(context.rstrip())
  if spaces:
    context, continuation = context[:-spaces], context[-spaces:] + continuation
  whole = tokenizer.encode(context + continuation, add_special_tokens=False)
  head = tokenizer.encode(context, add_special_tokens=False)
  if not head:
    return [tokenizer.eos_token_id], tokenizer.encode(continuation, add_special_tokens=False)
  return head, whole[len(head):]


def loglikelihoods(model, pairs: Sequence[tuple[list[int], list[int]]], *, batch_size: int = 8,
                   max_positions: int | None = None,
                   on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Summed log-probability of each continuation given its context, and whether it is the greedy one.

  Rows are right-padded to one width for the whole call (one compilation);
  sequences longer than ``max_positions`` lose tokens from the left, as lm-eval.
  """
  seqs = []
  for ctx, cont in pairs:
    if not cont:
      raise JaxpruneError("a choice encodes to no tokens: every choice needs some text")
    whole = list(ctx) + list(cont)
    if max_positions is not None:
      whole = whole[-max_positions:]
    seqs.append((whole, max(1, len(whole) - len(cont))))
  width = max(32, math.ceil(max(len(s) for s, _ in seqs) / 32) * 32)
  tokens = np.zeros((len(seqs), width), np.int32)
  for i, (s, _) in enumerate(seqs):
    tokens[i, :len(s)] = s
  tree_def, params = scoring.split(model)
  lls, greedy = np.zeros(len(seqs)), np.zeros(len(seqs), bool)
  done = 0
  for batch, real in scoring.batches(tokens, batch_size):
    logprobs, argmax = scoring.next_token_logprobs(tree_def, params, batch)
    logprobs, argmax = np.asarray(logprobs, np.float64), np.asarray(argmax)
    for r in range(real):
      seq, start = seqs[done + r]
      span = slice(start - 1, len(seq) - 1)  # logprobs[t] scores token t + 1
      lls[done + r] = logprobs[r, span].sum()
      greedy[done + r] = argmax[r, span].all()
    done += real
    if on_batch is not None:
      on_batch(done)
  return lls, greedy


def accuracy(docs: Sequence[Doc], lls: np.ndarray) -> dict[str, Any]:
  """acc and acc_norm (score / choice length in characters) with lm-eval's standard errors."""
  hits, hits_norm, at = [], [], 0
  for doc in docs:
    scores = lls[at:at + len(doc.choices)]
    at += len(doc.choices)
    lengths = np.array([float(len(c)) for c in doc.choices])
    hits.append(float(np.argmax(scores) == doc.gold))
    hits_norm.append(float(np.argmax(scores / lengths) == doc.gold))

  def stderr(x: list[float]) -> float | None:
    return float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else None  # JSON has no NaN

  return {"acc": float(np.mean(hits)), "acc_norm": float(np.mean(hits_norm)),
          "acc_stderr": stderr(hits), "acc_norm_stderr": stderr(hits_norm)}


def score(loaded, docs: Sequence[Doc], *, batch_size: int = 8, metrics: Sequence[str] = ("acc", "acc_norm"),
          on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
  """Accuracy of ``loaded.model`` on ``docs``, with every choice's log-likelihood."""
  if not docs:
    raise JaxpruneError("no questions to score: check the data file and --limit")
  if loaded.tokenizer is None:
    raise JaxpruneError("the model has no tokenizer: multiple choice needs the model's tokenizer files")
  start = time.perf_counter()
  pairs = [encode_pair(loaded.tokenizer, c, x) for d in docs for c, x in d.requests()]
  lls, greedy = loglikelihoods(loaded.model, pairs, batch_size=batch_size,
                               max_positions=loaded.spec.max_positions, on_batch=on_batch)
  acc = accuracy(docs, lls)
  chosen = {k: v for k, v in acc.items() if k.removesuffix("_stderr") in metrics}
  return {"metrics": {m: chosen[m] for m in metrics}, "stderr": {k: v for k, v in chosen.items() if "stderr" in k},
          "num_examples": len(docs), "requests": len(pairs), "greedy_fraction": float(greedy.mean()),
          "loglikelihoods": [float(x) for x in lls], "seconds": time.perf_counter() - start}


def preflight(name: str, config) -> None:
  """The data file exists (before the model loads)."""
  data.locate(name, config.data_path(name), FORMATS[name].layout)


def run_task(loaded, name: str, config, progress) -> dict[str, Any]:
  """The ``--tasks`` entry point of every format in `FORMATS`."""
  docs = load_docs(name, config.data_path(name), config.limit)
  fmt = FORMATS[name]
  requests = sum(len(d.choices) for d in docs)
  return score(loaded, docs, batch_size=config.batch_size, metrics=fmt.metrics,
               on_batch=progress(name, requests))
