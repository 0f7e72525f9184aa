"""Shared machinery of the reproduction scripts: cached prune runs and evaluations.

Each prune run is a normal `jaxprune prune` run directory under OUT/runs/, and
each evaluation a JSON next to it, so an interrupted reproduction resumes and
every number in the tables can be traced to a run.json and its options.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxprune.evals.codegen import SamplingConfig
from jaxprune.evals.tasks import EvalConfig

log = logging.getLogger("reproduce")

# Domains with no local data here fall back as `jaxprune corpora` does.
_FALLBACK = {"generic": "generic"}


@dataclasses.dataclass
class Experiment:
  """One reproduction: the model (loaded once), sizes and where results go."""

  model: str
  out: Path
  seeds: list[int]
  nsamples: int
  seqlen: int
  eval_windows: int
  limit: int
  max_new_tokens: int
  command: str
  cpu_count: int
  data: tuple[tuple[str, str], ...] = ()
  chat: bool = False
  gen_batch_size: int = 64
  runs_reused: int = 0
  runs_made: int = 0
  runs_declared: int = 0
  cached_only: bool = False  # tables from the cached cells only: nothing pruned or evaluated
  _loaded: Any = dataclasses.field(default=None, repr=False, compare=False)

  @property
  def loaded(self):
    """The model, loaded on first use (a run whose cells are all cached never loads it)."""
    if self._loaded is None:
      from jaxprune import converters

      self._loaded = converters.load_model(self.model)
    return self._loaded

  @classmethod
  def create(cls, args, command: str) -> "Experiment":
    out = Path(args.out or f"results/{args.model}")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "evals").mkdir(parents=True, exist_ok=True)
    return cls(model=args.model, out=out, seeds=list(args.seeds), nsamples=args.nsamples, seqlen=args.seqlen,
               eval_windows=args.eval_windows, limit=args.limit, max_new_tokens=args.max_new_tokens,
               command=command, cpu_count=os.cpu_count() or 1, data=parse_data(getattr(args, "data", None)),
               chat=args.chat, gen_batch_size=args.gen_batch_size)

  def record(self) -> dict[str, Any]:
    """The experiment's options for the results JSON (the loaded model is not an option)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.name not in ("_loaded", "runs_declared", "cached_only")}

  def timing(self, elapsed: float) -> str:
    """How long this invocation took, and how much of the work came from the cache."""
    untouched = max(0, self.runs_declared - self.runs_made - self.runs_reused)
    return (f"in {elapsed / 60:.0f} min on this machine ({self.cpu_count} CPU cores), pruning"
            f" {self.runs_made} sub-models and reusing {self.runs_reused} already in {self.out}/runs"
            + (f" ({untouched} more {'not made: --cached-only' if self.cached_only else 'not needed: their results were cached'})"
               if untouched else ""))

  def eval_settings(self, task: str) -> dict[str, Any]:
    """What changes a task's number; a cached result must have been made with the same."""
    if task.startswith("ppl:"):
      return {"seqlen": self.seqlen, "eval_windows": self.eval_windows}
    _, samples = sampled(task)
    sampling = {"num_samples": samples, "temperature": SAMPLED.temperature, "top_p": SAMPLED.top_p} if samples else {}
    return {"limit": self.limit, "max_new_tokens": self.max_new_tokens, **({"chat": True} if self.chat else {}),
            **sampling}


# A code task named TASK@N: N samples per problem at the paper's temperature and top-p (pass@1 and
# pass@10 from n samples, Chen et al.'s estimator), instead of one greedy completion.
SAMPLED = SamplingConfig()


def sampled(task: str) -> tuple[str, int]:
  """(task, samples per problem): ``humaneval-java@10`` -> (``humaneval-java``, 10); greedy tasks have 0."""
  base, _, n = task.partition("@")
  return base, int(n) if n else 0


def parse_args(description: str, argv: list[str] | None, *extra: tuple[tuple[str, ...], dict],
               defaults: dict[str, Any] | None = None) -> argparse.Namespace:
  """The options every reproduction shares: the 2-core preset as defaults, ``--full`` for the paper's sizes.

  ``defaults`` replaces defaults (a preset); flags given explicitly still win.
  """
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--out", default=None, help="default: results/<model>")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--nsamples", type=int, default=32)
  parser.add_argument("--seqlen", type=int, default=256)
  parser.add_argument("--eval-windows", type=int, default=16)
  parser.add_argument("--limit", "--humaneval-limit", type=int, default=20, help="problems or examples per task")
  parser.add_argument("--max-new-tokens", type=int, default=128)
  parser.add_argument("--chat", action="store_true", help="code tasks prompt in the chat template (instruct models)")
  parser.add_argument("--gen-batch-size", type=int, default=EvalConfig.gen_batch_size,
                      help="rows per compiled generation call (default %(default)s)")
  parser.add_argument("--full", action="store_true", help="the paper's 128 x 2048 calibration, all 164 problems")
  for flags, options in extra:
    parser.add_argument(*flags, **options)
  parser.set_defaults(**(defaults or {}))
  args = parser.parse_args(argv)
  if args.full:
    args.nsamples, args.seqlen, args.limit, args.max_new_tokens = 128, 2048, 164, 512
  return args


def parse_data(items: list[str] | None) -> tuple[tuple[str, str], ...]:
  """``TASK=PATH`` arguments as `EvalConfig.data` pairs."""
  pairs = tuple(tuple(item.split("=", 1)) for item in items or ())
  bad = [item for item, pair in zip(items or (), pairs) if len(pair) != 2 or not all(pair)]
  if bad:
    raise SystemExit(f"--data {bad[0]!r}: give TASK=PATH, e.g. gsm8k=~/data/gsm8k/test.jsonl")
  return pairs  # type: ignore[return-value]


def _mismatch(what: str, path: Path, cached: dict, wanted: dict) -> None:
  diff = {k: (cached.get(k), v) for k, v in wanted.items() if cached.get(k) != v}
  if diff:
    key, (was, now) = next(iter(diff.items()))
    raise SystemExit(f"{path}: cached {what} was made with {key}={was}, this run asks {key}={now}:"
                     " choose another --out or delete it")


def prune_cached(exp: Experiment, name: str, domain: str | None, seed: int, **options) -> Path:
  """The run directory of one sub-model, pruned now unless already finished."""
  from jaxprune import calibration, pruning, runs

  run_dir = exp.out / "runs" / name
  config = pruning.PruneConfig(sparsity=0.5, **options)
  if (run_dir / "run.json").exists():
    record = json.loads((run_dir / "run.json").read_text())
    calib = record.get("calibration") or {}
    wanted = {"source": domain}
    if domain is not None:
      wanted.update(nsamples=exp.nsamples, seqlen=exp.seqlen, seed=seed)
    _mismatch("prune run", run_dir, calib, wanted)
    # The micro-batch and attention chunk change only the summation order, not what is computed.
    options = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("microbatch", "attention_chunk")}
    _mismatch("prune run", run_dir, record.get("options", {}), options)
    if _arrays_present(run_dir, config):
      exp.runs_reused += 1
      return run_dir
    # git keeps a run's run.json, not its masks: a fresh checkout prunes the run again.
    log.info("%s: masks are not in this checkout (only run.json is committed); pruning it again", run_dir)
  exp.runs_made += 1
  tokens, info = None, {"source": None}
  if domain is not None:
    tokens = calibration.sample(domain, exp.loaded.tokenizer, exp.nsamples, exp.seqlen, seed)
    info = {"source": domain, "nsamples": exp.nsamples, "seqlen": exp.seqlen, "seed": seed,
            "provenance": calibration.describe(domain)}
  log.info("pruning %s", name)
  # Replace only a finished record without arrays; an interrupted run resumes from its state.
  rerun = runs.RunConfig(out=run_dir, overwrite=(run_dir / "run.json").exists())
  runs.prune_run(exp.loaded, tokens, config, rerun, calibration=info)
  return run_dir


def _arrays_present(run_dir: Path, config) -> bool:
  """Whether a finished run's Orbax arrays are here (masks; a weight-updating method's weights too)."""
  from jaxprune.pruning import methods

  needed = ["masks"] + (["weights"] if methods.get(config.method).updates_weights else [])
  return all((run_dir / name).is_dir() for name in needed)


def _summary(task: str, report: dict[str, Any]) -> Any:
  """A perplexity as a number; any other task's metrics with how many problems or examples it had.

  Code tasks also list the problems solved (any sample correct), for paired tests between sub-models.
  """
  if task.startswith("ppl:"):
    return report["metrics"]["ppl"]
  if "pass@1" in report["metrics"]:
    per_problem = report.get("per_problem", {})
    return {**{k: v for k, v in report["metrics"].items() if k.startswith("pass@")}, "problems": len(per_problem),
            "solved": sorted(k for k, v in per_problem.items() if v.get("correct"))}
  return {**report["metrics"], "examples": report.get("num_examples")}


def _write_json(path: Path, payload: Any) -> None:
  """``payload`` as JSON at ``path`` (its folder made if needed), never half-written."""
  from jaxprune import store

  path.parent.mkdir(parents=True, exist_ok=True)
  store.write_json_atomic(path, payload)


def _report_fits(exp: Experiment, report: dict[str, Any], task: str) -> bool:
  """Whether a code task's report was made as ``task`` asks (greedily, or TASK@N's sampling) with this
  experiment's prompting, tokens and problems."""
  sampling, config = report.get("sampling", {}), report.get("config", {})
  limit = config.get("limit")
  _, samples = sampled(task)
  wanted = (samples, SAMPLED.temperature, SAMPLED.top_p) if samples else (1, 0.0, 1.0)
  return ((sampling.get("num_samples"), sampling.get("temperature"), sampling.get("top_p", 1.0)) == wanted
          and sampling.get("max_new_tokens") == exp.max_new_tokens and bool(config.get("chat")) == exp.chat
          and (limit == exp.limit or (limit is None and exp.limit >= report.get("num_problems", 0)
                                      + len(report.get("excluded", {})))))


def lazy_run(exp: Experiment, name: str, domain: str | None, seed: int, **options) -> Callable[[], Path]:
  """`prune_cached` of one sub-model, called only when something needs its masks (once)."""
  exp.runs_declared += 1
  return functools.cache(lambda: prune_cached(exp, name, domain, seed, **options))


def evaluate_cached(exp: Experiment, run: Path | Callable[[], Path] | None, name: str,
                    tasks: tuple[str, ...], *, compute: bool = True) -> dict[str, Any]:
  """{task: ppl or {pass@1, problems, solved}} of a sub-model (dense when ``run`` is None).

  ``run`` may be a `lazy_run`: the sub-model is pruned only if a task is not cached yet,
  so a fresh checkout with every cell committed re-evaluates nothing and prunes nothing.
  ``compute=False``: only the cached tasks (nothing is pruned or evaluated).
  """
  from jaxprune.evals import tasks as eval_tasks

  path = exp.out / "evals" / f"{name}.json"
  cached = json.loads(path.read_text()) if path.exists() else {}
  settings = cached.setdefault("_settings", {})
  for task in tasks:
    if task in cached and task in settings:  # entries older than the settings record are trusted
      _mismatch(f"{task} result", path, settings[task], exp.eval_settings(task))
  for task in tasks:  # a code cell whose full report is here (e.g. committed without its summary) is reused
    report_path = exp.out / "evals" / name / f"{task}.json"
    report = json.loads(report_path.read_text()) if task not in cached and report_path.exists() else None
    if report is not None and _report_fits(exp, report, task):
      cached[task], settings[task] = _summary(task, report), exp.eval_settings(task)
      _write_json(path, cached)
  todo = tuple(t for t in tasks if t not in cached)
  if not compute:
    return {t: cached[t] for t in tasks if t in cached}
  if todo:
    run_dir = run() if callable(run) else run
    loaded, _ = eval_tasks.apply_run(exp.loaded, str(run_dir) if run_dir else None)
    log.info("evaluating %s on %s", name, ", ".join(todo))
    for task in todo:  # one task at a time: each finished cell is saved before the next starts
      base, samples = sampled(task)
      config = eval_tasks.EvalConfig(
          model=exp.model, tasks=(base,), seqlen=exp.seqlen, max_windows=exp.eval_windows, batch_size=8,
          data=exp.data, greedy=not samples, num_samples=samples or SAMPLED.num_samples, limit=exp.limit,
          max_new_tokens=exp.max_new_tokens, gen_batch_size=exp.gen_batch_size, chat=exp.chat)
      started = time.perf_counter()
      report = eval_tasks.run_tasks(loaded, config)[base]
      cached.setdefault("_seconds", {})[task] = round(time.perf_counter() - started, 1)
      if "per_problem" in report:  # every completion, status and output tail: the cell's evidence
        _write_json(exp.out / "evals" / name / f"{task}.json", report)
      cached[task] = _summary(task, report)
      settings[task] = exp.eval_settings(task)
      _write_json(path, cached)
  return cached


def recorded_seconds(exp: Experiment, names: list[str]) -> dict[str, Any]:
  """The compute time the cached units of these sub-models (and dense) record, each its latest making.

  Prunes: run.json's timings; code cells: their reports' seconds; perplexity cells: ``_seconds`` in
  the sub-model's evaluations (cells cached before it was recorded are counted as untimed).
  """
  prune = [json.loads(p.read_text()).get("timings", {}).get("total") for n in names
           if (p := exp.out / "runs" / n / "run.json").exists()]
  code, ppl, untimed = [], [], 0
  for name in ("dense", *names):
    path = exp.out / "evals" / f"{name}.json"
    cached = json.loads(path.read_text()) if path.exists() else {}
    for task in (t for t in cached if not t.startswith("_")):
      report = exp.out / "evals" / name / f"{task}.json"
      if report.exists():
        code.append(json.loads(report.read_text())["seconds"])
      elif task in cached.get("_seconds", {}):
        ppl.append(cached["_seconds"][task])
      else:
        untimed += 1
  prune = [s for s in prune if s is not None]
  return {"prune_s": sum(prune), "prunes": len(prune), "code_s": sum(code), "code_cells": len(code),
          "ppl_s": sum(ppl), "ppl_cells_timed": len(ppl), "untimed_cells": untimed,
          "total_s": sum(prune) + sum(code) + sum(ppl)}


def compute_line(compute: dict) -> str:
  """The compute the cached results record, with the untimed perplexity cells at the timed ones' mean."""
  hours = lambda seconds: f"{seconds / 3600:.1f} h"  # noqa: E731
  line = (f"Compute time recorded by the cached results (each unit's latest making, summed over every run of this"
          f" command): {hours(compute['total_s'])}: {compute['prunes']} prunes {hours(compute['prune_s'])},"
          f" {compute['code_cells']} HumanEval cells {hours(compute['code_s'])},"
          f" {compute['ppl_cells_timed']} perplexity cells {hours(compute['ppl_s'])}")
  if compute["untimed_cells"] and compute["ppl_cells_timed"]:
    each = compute["ppl_s"] / compute["ppl_cells_timed"]
    line += (f"; {compute['untimed_cells']} perplexity cells made before their time was recorded, at the timed"
             f" cells' mean ({each / 60:.1f} min), add about {hours(each * compute['untimed_cells'])}")
  elif compute["untimed_cells"]:
    line += f"; {compute['untimed_cells']} perplexity cells made before their time was recorded are not counted"
  return line + "."
