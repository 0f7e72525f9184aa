"""Reproduce the shape of the paper's domain experiment (Table III, Fig. 2) with the data on this machine.

Four domains (code, math, translation, commonsense reasoning) each have a
calibration set and an evaluation: the domain's task metric and the perplexity
of its held-out text. One Wanda 50% sub-model per calibration set and seed,
plus `generic`, is evaluated on every domain. A cell whose calibration text or
evaluation data is not on this machine is marked absent with the reason, never
filled in: put the data where the reason says and rerun to fill it.

  python scripts/reproduce_domains.py                       # 2-core preset (see --help)
  python scripts/reproduce_domains.py --full                # the paper's 128 x 2048 calibration
  python scripts/reproduce_domains.py --model gemma3-270m --out results/gemma3-270m

Prune runs and evaluations are cached under OUT/runs and OUT/evals, shared with
reproduce_languages.py (same names for the same runs; a cached result made with
other settings is refused, not reused). Outputs: OUT/domains.md, OUT/domains.json
and OUT/domains.png.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import string
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from _reproduce import Experiment, evaluate_cached, parse_args, parse_data, prune_cached  # noqa: E402

log = logging.getLogger("reproduce")

MULTIPLE_CHOICE = ("hellaswag", "arc_easy", "arc_challenge", "boolq", "winogrande", "openbookqa", "piqa")


@dataclasses.dataclass(frozen=True)
class Domain:
  """A domain of the table: its calibration set, its task(s) and the text of its perplexity."""

  name: str
  calibration: str
  tasks: tuple[str, ...]
  metric: str
  label: str

  @property
  def ppl(self) -> str:
    return f"ppl:{self.calibration}"


DOMAINS = (
    Domain("code", "python", ("humaneval",), "pass@1", "HumanEval pass@1"),
    Domain("math", "math", ("gsm8k",), "exact_match", "GSM8K exact match"),
    Domain("translation", "translation", ("meteor-en-fr",), "meteor", "METEOR en→fr"),
    Domain("csr", "csr", MULTIPLE_CHOICE, "acc", "accuracy (mean of tasks)"),
)
GENERIC = "generic"


@dataclasses.dataclass(frozen=True)
class Plan:
  """What this machine has: calibration sets and tasks present, and why the others are absent."""

  calibration_absent: dict[str, str]
  tasks_present: dict[str, tuple[str, ...]]
  task_absent: dict[str, str]

  def rows(self) -> list[str]:
    return [s for s in (*(d.calibration for d in DOMAINS), GENERIC) if s not in self.calibration_absent]

  def tasks(self) -> tuple[str, ...]:
    ppl = tuple(d.ppl for d in DOMAINS if d.calibration not in self.calibration_absent)
    return ppl + tuple(t for d in DOMAINS for t in self.tasks_present[d.name])


def make_plan(model: str, data: tuple[tuple[str, str], ...] = ()) -> Plan:
  """Check every calibration set and task's data before anything slow runs."""
  from jaxprune.evals import tasks as eval_tasks
  from jaxprune import calibration
  from jaxprune.errors import JaxpruneError

  calibration_absent = {}
  for source in (*(d.calibration for d in DOMAINS), GENERIC):
    info = calibration.describe(source)
    if not info.get("ready"):
      calibration_absent[source] = info.get("fix", "not on this machine")
  tasks_present, task_absent = {}, {}
  for domain in DOMAINS:
    present, reasons = [], []
    for task in domain.tasks:
      try:
        given = tuple((t, p) for t, p in data if t in (task, "wordnet"))
        eval_tasks.check(eval_tasks.EvalConfig(model=model, tasks=(task,), data=given))
      except JaxpruneError as err:
        reasons.append(str(err))
      else:
        present.append(task)
    tasks_present[domain.name] = tuple(present)
    if not present:
      task_absent[domain.name] = reasons[0] if len(reasons) == 1 else (
          f"none of {', '.join(domain.tasks)} has local data; e.g. {reasons[0]}")
  return Plan(calibration_absent, tasks_present, task_absent)


def _domain_values(domain: Domain, plan: Plan, ev: dict[str, Any]) -> dict[str, float | None]:
  present = plan.tasks_present[domain.name]
  task = float(np.mean([ev[t][domain.metric] for t in present])) if present else None
  ppl = ev.get(domain.ppl) if domain.calibration not in plan.calibration_absent else None
  return {"task": task, "ppl": ppl}


def _fmt(values: list[float] | None, digits: int) -> str:
  if not values:
    return "–"
  if len(values) == 1:
    return f"{values[0]:.{digits}f}"
  return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


class _Notes:
  """Footnote letters for the reasons cells are absent."""

  def __init__(self) -> None:
    self.reasons: dict[str, str] = {}

  def mark(self, reason: str) -> str:
    if reason not in self.reasons:
      self.reasons[reason] = string.ascii_lowercase[len(self.reasons)]
    return f"absent ({self.reasons[reason]})"

  def lines(self) -> list[str]:
    return [f"- ({letter}) {reason}" for reason, letter in self.reasons.items()]


def _row_label(source: str, provenance: dict[str, Any]) -> str:
  domain = next((d.name for d in DOMAINS if d.calibration == source), None)
  what = f"{domain} (`{source}`)" if domain else f"`{source}`"
  return what + (f" = {provenance['fallback']}" if "fallback" in provenance else "")


def _table(kind: str, results: dict, plan: Plan, provenance: dict, notes: _Notes, digits: int) -> list[str]:
  lines = ["| calibration | " + " | ".join(f"{d.name}: {d.label if kind == 'task' else 'ppl'}" for d in DOMAINS)
           + " |", "|---|" + "---|" * len(DOMAINS)]
  all_rows = ["dense", *(d.calibration for d in DOMAINS), GENERIC]
  for source in all_rows:
    label = "dense" if source == "dense" else _row_label(source, provenance.get(source, {}))
    cells = []
    for domain in DOMAINS:
      missing = (plan.task_absent.get(domain.name) if kind == "task"
                 else plan.calibration_absent.get(domain.calibration))
      if missing:
        cells.append(notes.mark(missing))
      elif source in plan.calibration_absent:
        cells.append(notes.mark(plan.calibration_absent[source]))
      else:
        cell = _fmt(results[source][domain.name][kind], digits)
        cells.append(f"**{cell}**" if source == domain.calibration else cell)
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return lines


def _relative(results: dict, plan: Plan) -> dict[str, dict[str, dict[str, float | None]]]:
  """Per calibration row and domain: task metric as a fraction of dense, perplexity increase over dense."""
  out: dict[str, dict[str, dict[str, float | None]]] = {}
  for source in plan.rows():
    out[source] = {}
    for domain in DOMAINS:
      dense, row = results["dense"][domain.name], results[source][domain.name]
      task = (float(np.mean(row["task"])) / dense["task"][0]) if row["task"] and dense["task"] and dense["task"][0] else None
      ppl = (float(np.mean(row["ppl"])) / dense["ppl"][0] - 1) if row["ppl"] and dense["ppl"] else None
      out[source][domain.name] = {"task_retained": task, "ppl_increase": ppl}
  return out


def _markdown(exp: Experiment, plan: Plan, results: dict, relative: dict, provenance: dict, elapsed: float) -> str:
  notes = _Notes()
  lines = [
      f"# Domain-specific sub-models of {exp.model} (the shape of the paper's Table III)",
      "",
      f"Made by `{exp.command}` {exp.timing(elapsed)}."
      f" Wanda 50% unstructured; calibration {exp.nsamples} x {exp.seqlen} tokens per run, seeds"
      f" {', '.join(map(str, exp.seeds))} (mean ± std over seeds). Task metrics on the first {exp.limit}"
      f" problems or examples of each task ({exp.max_new_tokens} new tokens at most; HumanEval greedy,"
      f" METEOR best of 5 samples); perplexity on {exp.eval_windows} held-out windows of {exp.seqlen} tokens"
      " of the domain's text (files disjoint from the calibration files). **Bold**: a domain's own calibration.",
      "",
      "Tasks used: " + "; ".join(f"{d.name}: {', '.join(plan.tasks_present[d.name]) or 'none present'}"
                                 for d in DOMAINS) + ".",
      "",
      "## Task metric (higher is better)",
      "",
      *_table("task", results, plan, provenance, notes, 3),
      "",
      "## Held-out perplexity of each domain's text (lower is better)",
      "",
      *_table("ppl", results, plan, provenance, notes, 2),
      "",
      "## Relative to dense (Fig. 2 shape): perplexity increase; task metric retained where dense is above 0",
      "",
      "| calibration | " + " | ".join(d.name for d in DOMAINS) + " |",
      "|---|" + "---|" * len(DOMAINS),
  ]
  for source, row in relative.items():
    cells = []
    for domain in DOMAINS:
      value = row[domain.name]
      parts = []
      if value["ppl_increase"] is not None:
        parts.append(f"ppl {value['ppl_increase']:+.1%}")
      if value["task_retained"] is not None:
        parts.append(f"task x{value['task_retained']:.2f}")
      cell = ", ".join(parts) or "–"
      cells.append(f"**{cell}**" if source == domain.calibration else cell)
    lines.append(f"| {_row_label(source, provenance.get(source, {}))} | " + " | ".join(cells) + " |")
  lines += ["", "Absent cells (put the data where it says and rerun; cached runs are reused):", "", *notes.lines(),
            "", "Plot: `domains.png`."]
  return "\n".join(lines) + "\n"


def _plot(exp: Experiment, relative: dict, path: Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  domains = [d for d in DOMAINS if any(r[d.name]["ppl_increase"] is not None for r in relative.values())]
  fig, ax = plt.subplots(figsize=(7, 4))
  width = 0.8 / max(len(relative), 1)
  for i, (source, row) in enumerate(relative.items()):
    xs = [j + i * width for j in range(len(domains))]
    ax.bar(xs, [100 * (row[d.name]["ppl_increase"] or 0) for d in domains], width, label=f"calibration: {source}")
  ax.set_xticks([j + width * (len(relative) - 1) / 2 for j in range(len(domains))], [d.name for d in domains])
  ax.set_ylabel("held-out perplexity increase over dense (%)")
  ax.set_title(f"{exp.model}: Wanda 50% by calibration domain")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  args = parse_args(__doc__.split("\n")[0], argv, (("--data",), dict(
      action="append", metavar="TASK=PATH",
      help="a task's local data file (gsm8k, hellaswag, ...), as for `jaxprune eval --data`")))
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  from jaxprune import calibration

  plan = make_plan(args.model, parse_data(args.data))
  for source, reason in plan.calibration_absent.items():
    log.info("calibration %s absent: %s", source, reason)
  for domain, reason in plan.task_absent.items():
    log.info("%s tasks absent: %s", domain, reason)
  exp = Experiment.create(args, " ".join(["python", "scripts/reproduce_domains.py", *argv]))
  start = time.perf_counter()
  tasks = plan.tasks()
  provenance = {s: calibration.describe(s) for s in plan.rows()}

  dense = evaluate_cached(exp, None, "dense", tasks)
  results: dict[str, Any] = {"dense": {d.name: {k: None if v is None else [v] for k, v in
                                                 _domain_values(d, plan, dense).items()} for d in DOMAINS}}
  for source in plan.rows():
    per_seed = []
    for seed in args.seeds:
      name = f"wanda50-{source}-s{seed}"
      per_seed.append(evaluate_cached(exp, prune_cached(exp, name, source, seed), name, tasks))
    results[source] = {}
    for domain in DOMAINS:
      values = [_domain_values(domain, plan, ev) for ev in per_seed]
      results[source][domain.name] = {k: None if values[0][k] is None else [v[k] for v in values]
                                      for k in ("task", "ppl")}

  relative = _relative(results, plan)
  elapsed = time.perf_counter() - start
  payload = {"experiment": exp.record(), "plan": dataclasses.asdict(plan), "results": results,
             "relative": relative, "calibration": provenance, "elapsed_s": elapsed}
  (exp.out / "domains.json").write_text(json.dumps(payload, indent=2, default=str))
  _plot(exp, relative, exp.out / "domains.png")
  (exp.out / "domains.md").write_text(_markdown(exp, plan, results, relative, provenance, elapsed))
  print((exp.out / "domains.md").read_text())


if __name__ == "__main__":
  main()
