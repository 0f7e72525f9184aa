"""The evaluation task registry and the driver behind ``jaxprune eval``.

A task name maps to a function ``(loaded, name, config, progress) -> dict``
that returns ``{"metrics": {...}, ...}``; ``loaded.model`` is already the
model to evaluate (masks applied). Exact names live in `TASKS`, families of
names (``ppl:<source>``) in `PREFIXES`; later tasks register the same way.

Example:
  >>> report = evaluate(EvalConfig(model="smollm2-135m", tasks=("ppl:python", "humaneval"), limit=5))
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jaxprune.evals.codegen import SamplingConfig
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)

Progress = Callable[[str, int], Callable[[int], None]]
"""Makes a progress reporter: (description, total) -> update(done so far)."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """One ``jaxprune eval`` run: the model, the tasks and every option that changes a number.

  Attributes:
    model: HF folder, .gguf file or built-in name.
    tasks: task names (see `names`).
    masks: a run directory of `jaxprune prune` to apply (None: dense model).
    out: the JSON to write (None: return only).
    dtype: parameter dtype (None: the checkpoint's).
    seqlen: tokens per perplexity window.
    max_windows: perplexity windows per source at most.
    batch_size: rows per compiled call of scoring tasks (perplexity, choices).
    limit: problems/examples per task at most (quick looks).
    data: (task, path) pairs: local data files of tasks that need them.
    greedy: HumanEval greedy pass@1 instead of sampling.
    num_samples, temperature, top_p: HumanEval sampling (the paper's n=20, 0.8, 0.95).
    max_new_tokens: generated tokens per completion at most.
    gen_batch_size: rows per compiled generation call.
    chat: wrap generation prompts in the chat template (instruct models).
    seed: seed of sampling.
    samples: keep what generation tasks wrote in the report: every code
      completion with its status and output tail (layout: `codegen.score`),
      the completions of gsm8k and the translations of METEOR.
  """

  model: str
  tasks: tuple[str, ...]
  masks: str | None = None
  out: str | None = None
  dtype: str | None = None
  seqlen: int = 512
  max_windows: int = 64
  batch_size: int = 4
  limit: int | None = None
  data: tuple[tuple[str, str], ...] = ()
  greedy: bool = False
  num_samples: int = SamplingConfig.num_samples
  temperature: float = SamplingConfig.temperature
  top_p: float = SamplingConfig.top_p
  max_new_tokens: int = SamplingConfig.max_new_tokens
  gen_batch_size: int = 64
  chat: bool = False
  seed: int = 0
  samples: bool = True

  def data_path(self, task: str) -> str | None:
    return dict(self.data).get(task)

  def generation(self):
    """The `GenerateConfig` of a run; sampling options are set per call by the task."""
    from jaxprune.evals import generate

    return generate.GenerateConfig(batch_size=self.gen_batch_size, chat=self.chat, seed=self.seed,
                                   max_new_tokens=self.max_new_tokens)


Task = Callable[[Any, str, EvalConfig, Progress], dict[str, Any]]
Preflight = Callable[[str, EvalConfig], None]
TASKS: dict[str, Task] = {}
PREFIXES: dict[str, Task] = {}
PREFLIGHTS: dict[str, Preflight] = {}


def register(name: str, fn: Task, preflight: Preflight | None = None) -> None:
  """Add a task; a name ending in ``:`` registers every name with that prefix.

  ``preflight(name, config)`` checks the task's data before the model loads,
  so a missing file fails the run at once, not after the tasks before it.
  """
  (PREFIXES if name.endswith(":") else TASKS)[name] = fn
  if preflight is not None:
    PREFLIGHTS[name] = preflight


def names() -> str:
  return ", ".join([*TASKS, *(f"{p}<source>" for p in PREFIXES)])


def task_for(name: str) -> Task:
  if name in TASKS:
    return TASKS[name]
  for prefix, fn in PREFIXES.items():
    if name.startswith(prefix) and len(name) > len(prefix):
      return fn
  raise JaxpruneError(f"unknown task {name!r}: choose from {names()}")


def _no_progress(_description: str, _total: int) -> Callable[[int], None]:
  return lambda _done: None


# --------------------------------------------------------------------------- #
# The tasks: each in its own module, as ``run_task(loaded, name, config, progress)``
# and optionally ``preflight(name, config)``, imported when it runs
# --------------------------------------------------------------------------- #


def _lazy(module: str, function: str = "run_task") -> Callable[..., Any]:
  """A function of another module, imported when it runs (keeps ``jaxprune --help`` fast)."""

  def run(*args):
    import importlib

    return getattr(importlib.import_module(module), function)(*args)

  return run


register("ppl:", _lazy("jaxprune.evals.perplexity"))
_code = (_lazy("jaxprune.evals.humaneval"), _lazy("jaxprune.evals.humaneval", "preflight"))
for _name in ("humaneval", "humaneval-java", "humaneval-cpp", "humaneval-js"):
  register(_name, *_code)
for _name in ("hellaswag", "arc_easy", "arc_challenge", "boolq", "winogrande", "openbookqa", "piqa"):
  register(_name, _lazy("jaxprune.evals.multiple_choice"), _lazy("jaxprune.evals.multiple_choice", "preflight"))
register("gsm8k", _lazy("jaxprune.evals.gsm8k"), _lazy("jaxprune.evals.gsm8k", "preflight"))
for _name in ("meteor-en-fr", "meteor-fr-en"):
  register(_name, _lazy("jaxprune.evals.meteor"), _lazy("jaxprune.evals.meteor", "preflight"))


# --------------------------------------------------------------------------- #
# Driver
# --------------------------------------------------------------------------- #


def apply_run(loaded, run_dir: str | None) -> tuple[Any, dict[str, Any] | None]:
  """``loaded`` with a prune run's masks (and SparseGPT weights) applied, and the run's summary."""
  if run_dir is None:
    return loaded, None
  from jaxprune import runs

  pruned, _, record = runs.with_run(loaded, run_dir)
  summary = {"run": str(run_dir), "sparsity": record.get("sparsity", {}).get("__total__"),
             "options": record.get("options"), "calibration": record.get("calibration"),
             "sparsegpt_weights": (Path(run_dir) / "weights").exists() and "finetune" not in record,
             "finetune": {k: record["finetune"][k] for k in ("base_run", "steps", "mode")} if "finetune" in record else None}
  return pruned, summary


def run_tasks(loaded, config: EvalConfig, progress: Progress = _no_progress) -> dict[str, dict[str, Any]]:
  """Every task of ``config`` on ``loaded.model``: {task: report with metrics and seconds}."""
  results = {}
  for name in config.tasks:
    start = time.perf_counter()
    report = task_for(name)(loaded, name, config, progress)
    report["seconds"] = round(time.perf_counter() - start, 3)
    log.info("%s: %s (%.1f s)", name, report.get("metrics"), report["seconds"])
    results[name] = report
  return results


def check(config: EvalConfig) -> None:
  """Fail on bad options before the slow model load."""
  if not config.tasks:
    raise JaxpruneError(f"no tasks given: pass --tasks with one or more of {names()}")
  for name in config.tasks:
    task_for(name)
  unknown = [t for t, _ in config.data if t not in (*config.tasks, "wordnet")]
  if unknown:
    raise JaxpruneError(f"--data names task {unknown[0]!r}, which is not in --tasks: add it or drop the --data")
  if config.seqlen < 2 or config.max_windows < 1 or config.batch_size < 1:
    raise JaxpruneError(
        f"seqlen={config.seqlen}, max_windows={config.max_windows}, batch_size={config.batch_size}:"
        " need seqlen >= 2 and the others >= 1")
  if config.limit is not None and config.limit < 1:
    raise JaxpruneError(f"--limit {config.limit} must be at least 1")
  if config.masks is not None and not (Path(config.masks) / "run.json").is_file():
    raise JaxpruneError(
        f"--masks {config.masks} is not a finished jaxprune run (no run.json): pass a directory written by"
        " `jaxprune prune`")
  if config.out is not None:
    from jaxprune import outputs

    outputs.claim_file(config.out, inputs=(config.model, config.masks, *(p for _, p in config.data)),
                       is_ours=lambda doc: isinstance(doc, dict) and {"tasks", "config", "versions"} <= set(doc))
  if config.dtype is not None:
    from jaxprune.converters.loading import parameter_dtype

    parameter_dtype(config.dtype)
  for name in config.tasks:
    if name in PREFLIGHTS:
      PREFLIGHTS[name](name, config)


def evaluate(config: EvalConfig, progress: Progress = _no_progress) -> dict[str, Any]:
  """Load the model, apply the masks, run the tasks, write ``config.out``: the ``jaxprune eval`` call."""
  from jaxprune import converters
  from jaxprune import runs, store

  check(config)
  start = time.perf_counter()
  loaded = converters.load_model(config.model, dtype=config.dtype)
  if config.seqlen > loaded.spec.max_positions and any(t.startswith("ppl:") for t in config.tasks):
    raise JaxpruneError(
        f"--seqlen {config.seqlen} exceeds the model's context of {loaded.spec.max_positions}:"
        f" use --seqlen {loaded.spec.max_positions} or less")
  loaded, masks = apply_run(loaded, config.masks)
  load_s = time.perf_counter() - start
  results = run_tasks(loaded, config, progress)
  report = {
      "model": loaded.model_id,
      "masks": masks,
      "tasks": results,
      "config": dataclasses.asdict(config),
      "versions": runs.versions(),
      "timings": {"load_s": round(load_s, 3), "total_s": round(time.perf_counter() - start, 3),
                  **{f"{name}_s": r["seconds"] for name, r in results.items()}},
  }
  if config.out is not None:
    store.write_json_atomic(Path(config.out).expanduser(), report)
  return report


def table(report: Mapping[str, Any]) -> str:
  """A short text table of every task's metrics."""
  lines = [f"{'task':<24} {'metric':<22} {'value':>10} {'seconds':>9}"]
  for name, result in report["tasks"].items():
    for metric, value in result.get("metrics", {}).items():
      lines.append(f"{name:<24} {metric:<22} {value:>10.4f} {result.get('seconds', 0):>9.1f}")
  return "\n".join(lines)


_FAILURES = ("failed", "compile_error", "timeout", "error")
_SHOWN_IDS = 5


def failure_lines(report: Mapping[str, Any]) -> list[str]:
  """Where the failures of each code task are, then where its completions are kept.

  One line per task with ``per_problem`` results, e.g. ``humaneval: 23/32
  passed; failed 6 (HumanEval/3, HumanEval/10, …), timeout 1 (HumanEval/39)``.
  Counts are of samples; the ids (the first five, in problem order) are the
  problems with a sample of that status. No code task, no lines.
  """
  lines = []
  for name, result in report["tasks"].items():
    per_problem = result.get("per_problem")
    if per_problem is None:
      continue
    total = sum(e["num_samples"] for e in per_problem.values())
    passed = sum(e["correct"] for e in per_problem.values())
    found = {s for e in per_problem.values() for s in e["statuses"]} - {"passed"}
    parts = []
    for status in [*_FAILURES, *sorted(found - set(_FAILURES))]:
      ids = [t for t, e in per_problem.items() if e["statuses"].get(status)]
      if ids:
        count = sum(per_problem[t]["statuses"][status] for t in ids)
        shown = ", ".join(ids[:_SHOWN_IDS]) + (", …" if len(ids) > _SHOWN_IDS else "")
        parts.append(f"{status.replace('_', ' ')} {count} ({shown})")
    what = "passed" if total == len(per_problem) else "samples passed"
    lines.append(f"{name}: {passed}/{total} {what}" + (f"; {', '.join(parts)}" if parts else ""))
  if not lines:
    return lines
  config = report.get("config", {})
  out = config.get("out")
  if not config.get("samples", True):
    lines.append("completions not kept (--no-samples)")
  elif out is None:
    lines.append("completions not written: pass --out FILE.json to keep them")
  else:
    lines.append(f"completions, statuses and output tails: {out}, at tasks.<task>.per_problem.<task id>.samples")
  return lines
