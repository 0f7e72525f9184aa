"""HumanEval in Java, C++ and JavaScript by MultiPL-E's method (Cassano et al., 2023).

Each HumanEval problem's signature, docstring and literal test assertions
are translated (`evals.translate` reads the Python; the classes here write the
target language) into a prompt in MultiPL-E's layout and a test harness; the
program is compiled and run in `evals.sandbox`, where compile errors and
timeouts count as failures (their statuses are ``compile_error`` and
``timeout``). Problems without a faithful translation are
listed with the reason. MultiPL-E's own JSONL files load with
``problems(path)`` when a user has them.

Choices that differ from MultiPL-E: Python floats become ``double`` (MultiPL-E
used ``float``, which fails exact comparisons of values such as 2.2); types are
inferred from the test values where HumanEval has no annotations (MultiPL-E
annotated them by hand); docstrings are kept verbatim, with their doctests
translated. Java gets a small ``org.javatuples.Pair`` of our own in place of
the javatuples jar, so MultiPL-E's Java prompts compile too.
"""

from __future__ import annotations

import json
import logging
import os

from evals import translate as tr
from evals.codegen import Problem
from evals.multipl_targets import Cpp, Java, JavaScript, Target
from evals.translate import Untranslatable
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)

LANGUAGES = ("java", "cpp", "js")
__all__ = ["Cpp", "Java", "JavaScript", "LANGUAGES", "Target", "language", "load_multipl_e", "translate", "translate_all"]


def translate(target: Target, problem: Problem) -> Problem:
  """``problem`` (HumanEval, Python) posed in ``target``'s language, or `Untranslatable`."""
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


def translate_all(target: Target, problems: list[Problem] | None = None) -> tuple[list[Problem], dict[str, str]]:
  """Every HumanEval problem ``target`` can pose, and the others with the reason."""
  from evals import humaneval

  done, excluded = [], {}
  for problem in problems if problems is not None else humaneval.load_problems():
    try:
      done.append(translate(target, problem))
    except Untranslatable as err:
      excluded[problem.task_id] = str(err)
  log.info("humaneval-%s: %d problems translated, %d excluded", target.name, len(done), len(excluded))
  return done, excluded


_TARGETS = {"java": Java, "cpp": Cpp, "js": JavaScript}


def language(name: str) -> Target:
  """The target for ``java``, ``cpp`` or ``js``."""
  if name not in _TARGETS:
    raise JaxpruneError(f"unknown HumanEval language {name!r}: use one of {', '.join(LANGUAGES)}")
  return _TARGETS[name]()


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
