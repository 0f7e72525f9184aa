"""Reproduce the paper's language experiment (Table IV, Fig. 4) on a small model.

For each calibration domain (python, java, cpp, javascript, english, generic)
and seed, prune at 50% unstructured with Wanda; also 2:4 Wanda, SparseGPT and
magnitude baselines. Evaluate every sub-model and the dense model on held-out
perplexity in five domains and on HumanEval in four languages; compare masks
within a language (across seeds) and across languages.

  python scripts/reproduce_languages.py                      # 2-core preset (see --help)
  python scripts/reproduce_languages.py --full               # the paper's 128 x 2048 calibration
  python scripts/reproduce_languages.py --model gemma3-270m --out results/gemma3-270m
  python scripts/reproduce_languages.py --model qwen2.5-coder-0.5b --table4   # Table IV on a code model

``--table4`` is the paper's Table IV measured on a model that can code: Wanda
50% calibrated on python, java, cpp, javascript and english (128 sequences of
512 tokens, seeds 0-2 for perplexity), SparseGPT 50% on the same calibrations
(seed 0), greedy pass@1 on all HumanEval problems in four languages with chat
prompting (dense and seed-0 Wanda sub-models; SparseGPT sub-models on their own
language and Python), and for each language column a paired exact McNemar
test of the diagonal sub-model against each other one over the same problems.

Every prune run and every evaluation is cached under OUT/runs/, so an
interrupted reproduction continues where it stopped. Outputs: OUT/languages.md
(tables: mean +- spread over seeds, relative increase over dense, diagonal in
bold), OUT/languages.json, OUT/*.png and OUT/compare/ (the compare report of
the seed-0 sub-models).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from _distances import mask_distances_cached  # noqa: E402
from _paired import paired_test, pooled_test, problem_ids  # noqa: E402
from _reproduce import Experiment, compute_line, evaluate_cached, lazy_run, parse_args, recorded_seconds  # noqa: E402

CALIB = ("python", "java", "cpp", "javascript", "english", "generic")
EVAL = ("python", "java", "cpp", "javascript", "english")
HUMANEVAL = ("humaneval", "humaneval-java", "humaneval-cpp", "humaneval-js")
LANGUAGE_OF = dict(zip(HUMANEVAL, ("python", "java", "cpp", "javascript")))
BASELINES = {"wanda-2of4": ("wanda 2:4", {"pattern": "2:4"}), "sparsegpt": ("sparsegpt 50%", {"method": "sparsegpt"}),
             "magnitude": ("magnitude 50%", {"method": "magnitude"})}
TABLE4 = {"calib": ["python", "java", "cpp", "javascript", "english"], "baselines": ["sparsegpt"],
          "baseline_humaneval": "own", "nsamples": 128, "seqlen": 512, "limit": 164, "max_new_tokens": 512,
          "chat": True}
# The paper's Table IV (CodeLlama-13B, Wanda 50%), as far as we have it: HE-Java pass@1 of the Java
# sub-model against the range of the other sub-models.
PAPER_TABLE4 = "HE-Java: 60.1% for the Java sub-model, 55.2-56.1% for the other sub-models (CodeLlama-13B, Wanda 50%)"
log = logging.getLogger("reproduce")


def _fmt(values: list[float]) -> str:
  if not values:
    return "–"
  if len(values) == 1:
    return f"{values[0]:.2f}"
  return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def _num(value: float | None, spec: str = ".2f") -> str:
  return "–" if value is None else format(value, spec)


def _markdown(exp: Experiment, results: dict, distances: dict | None, elapsed: float, complete: dict,
              compute: dict) -> str:
  dense = results["dense"]
  lines = [
      f"# Language-specific sub-models of {exp.model}",
      "",
      f"Made by `{exp.command}` {exp.timing(elapsed)}. Calibration: {exp.nsamples} x {exp.seqlen} tokens per run;"
      f" evaluation: {exp.eval_windows} held-out windows of {exp.seqlen} tokens per domain"
      f" (files disjoint from the calibration files); seeds {', '.join(map(str, exp.seeds))}.",
      "",
      compute_line(compute),
  ]
  if not complete["all"]:
    baselines = (f" (dense and Wanda), {complete['baseline_cells']} of {complete['baseline_cells_wanted']}"
                 " baseline cells" if complete["baseline_cells_wanted"] else "")
    lines += ["", f"**Partial**: {complete['code_cells']} of {complete['code_cells_wanted']} HumanEval cells and"
              f" {complete['ppl_cells']} of {complete['ppl_cells_wanted']} perplexity cells{baselines} are in (–"
              " marks the others); rerun the command to continue from the cached cells."]
  lines += [
      "",
      "## Held-out perplexity (Wanda, 50% unstructured; mean ± std over seeds)",
      "",
      "Rows: calibration domain; columns: evaluation domain. **Bold**: the calibration"
      " language evaluated on itself (the diagonal); the best row of each column is marked ▲.",
      "",
      "| calibration | " + " | ".join(EVAL) + " |",
      "|---|" + "---|" * len(EVAL),
      "| dense | " + " | ".join(_num(dense["ppl"].get(d)) for d in EVAL) + " |",
  ]
  calib = list(results["wanda"])
  best = {}
  for d in EVAL:
    have = [c for c in calib if results["wanda"][c]["ppl"][d]]
    best[d] = min(have, key=lambda c: np.mean(results["wanda"][c]["ppl"][d])) if have else None
  for c in calib:
    cells = []
    for d in EVAL:
      cell = _fmt(results["wanda"][c]["ppl"][d])
      cell = f"**{cell}**" if c == d else cell
      cells.append(cell + (" ▲" if best[d] == c else ""))
    lines.append(f"| {c} | " + " | ".join(cells) + " |")
  lines += ["", "Relative perplexity increase over dense (mean over seeds):", "",
            "| calibration | " + " | ".join(EVAL) + " |", "|---|" + "---|" * len(EVAL)]
  for c in calib:
    cells = []
    for d in EVAL:
      values = results["wanda"][c]["ppl"][d]
      rel = np.mean(values) / dense["ppl"][d] - 1 if values and d in dense["ppl"] else None
      cell = _num(rel, "+.1%")
      cells.append(f"**{cell}**" if c == d else cell)
    lines.append(f"| {c} | " + " | ".join(cells) + " |")

  lines += ["", "## Baselines (seed 0): method effect next to the calibration effect", "",
            "| sub-model | " + " | ".join(EVAL) + " |", "|---|" + "---|" * len(EVAL)]
  for name, row in results["baselines"].items():
    lines.append(f"| {name} | " + " | ".join(_num(row["ppl"].get(d)) for d in EVAL) + " |")

  lines += humaneval_tables(exp, results)
  lines += ["", "## Mask overlap (Jaccard distance of kept weights, mean over all prunable matrices)", ""]
  if distances is None:
    lines += ["Not computed yet: it needs every sub-model's masks (a run without --cached-only makes them)."]
    return "\n".join(lines) + "\n"
  if "partial" in distances:
    lines += [f"**Partial**: {distances['partial']} pairs are made (rerun without --cached-only to continue).", ""]
  lines += [f"- within a language, across seeds: {distances['within_mean']:.4f}"
            f" ({distances['within_pairs']} pairs)",
            f"- across languages, same seed: {distances['across_mean']:.4f} ({distances['across_pairs']} pairs)",
            "", "| pair | distance |", "|---|---|"]
  for pair, value in sorted(distances["pairs"].items(), key=lambda kv: kv[1]):
    lines.append(f"| {pair} | {value:.4f} |")
  lines += ["", "Per-layer curves: `layers_within_vs_across.png`; full report: `compare/index.html`."]
  return "\n".join(lines) + "\n"


def _cell(entry: dict | None) -> str:
  if not entry:
    return "–"
  solved = len(entry["solved"]) if "solved" in entry else round(entry["pass@1"] * entry["problems"])
  return f"{100 * entry['pass@1']:.1f} ({solved}/{entry['problems']})"


def _paired_table(caption: str, headers: tuple[str, str, str, str], tests: dict[str, dict[str, dict]]) -> list[str]:
  """``tests[outer][inner]`` (`paired_test` results) as a markdown table; headers: outer, inner, only a, only b."""
  outer, inner, only_a, only_b = headers
  lines = ["", caption, "", f"| {outer} | {inner} | difference, points | {only_a} | {only_b} | p |",
           "|---|---|---|---|---|---|"]
  for a, row in tests.items():
    for b, r in row.items():
      lines.append(f"| {a} | {b} | {100 * r['difference']:+.1f} | {r['only_a']} | {r['only_b']} | {r['p']:.3f} |")
  return lines


def humaneval_tables(exp: Experiment, results: dict) -> list[str]:
  """The pass@1 tables: calibration x language, the drop against dense, the paired tests of each diagonal."""
  he = results["humaneval"]
  prompting = "chat prompting" if exp.chat else "the raw prompt"
  lines = ["", f"## HumanEval greedy pass@1, % (solved/problems; first {exp.limit} problems per language,"
           f" {exp.max_new_tokens} new tokens, {prompting})", "",
           "Rows: dense, then the Wanda 50% sub-model of each calibration (seed 0). **Bold**: the diagonal"
           " (the sub-model of the column's language); ▲: the best sub-model of each column.", "",
           "| model | " + " | ".join(HUMANEVAL) + " |", "|---|" + "---|" * len(HUMANEVAL)]
  subs = [m for m in he if m != "dense"]
  best = {}
  for t in HUMANEVAL:
    have = [m for m in subs if t in he[m]]
    best[t] = max(have, key=lambda m: he[m][t]["pass@1"]) if have else None
  for model, row in he.items():
    cells = []
    for t in HUMANEVAL:
      cell = _cell(row.get(t))
      cell = f"**{cell}**" if model == f"wanda50-{LANGUAGE_OF[t]}" else cell
      cells.append(cell + (" ▲" if model != "dense" and best[t] == model else ""))
    lines.append(f"| {model} | " + " | ".join(cells) + " |")
  lines += ["", "Drop against dense, points of pass@1:", "", "| sub-model | " + " | ".join(HUMANEVAL) + " |",
            "|---|" + "---|" * len(HUMANEVAL)]
  for model in subs:
    lines.append(f"| {model} | " + " | ".join(
        _num(100 * (he[model][t]["pass@1"] - he["dense"][t]["pass@1"]) if t in he[model] and t in he["dense"]
             else None, "+.1f") for t in HUMANEVAL) + " |")
  tests = results.get("paired", {})
  if any(tests.values()):
    lines += _paired_table("Does the diagonal sub-model beat the others beyond chance? McNemar's exact test over"
                           " the same problems (two-sided; only-diag / only-other: problems solved by one of the two"
                           " only):", ("column", "diagonal vs", "only diagonal", "only other"), tests)
  pooled = results.get("pooled")
  if pooled:
    lo, hi = pooled["ci95"]
    lines += ["", f"Pooled over {len(pooled['columns'])} columns ({pooled['problems']} problems; sub-models"
              f" {', '.join(pooled['models'])}): the diagonal sub-model"
              f" solves {100 * pooled['advantage']:+.1f} points more than the mean of the other sub-models"
              f" (95% bootstrap interval {100 * lo:+.1f} to {100 * hi:+.1f}); randomization test, one-sided"
              f" p = {pooled['p']:.4f} ({pooled['resamples']:,} shuffles of each problem's results among the"
              f" sub-models, one per problem for all its translations; the interval resamples problems); the diagonal is the best sub-model (ties included) in {pooled['diagonal_best']} of"
              f" {len(pooled['columns'])} columns."]
  base = {name: row["humaneval"] for name, row in results["baselines"].items() if row.get("humaneval")}
  if base:
    lines += ["", "Baselines on HumanEval (seed 0):", "", "| sub-model | " + " | ".join(HUMANEVAL) + " |",
              "|---|" + "---|" * len(HUMANEVAL)]
    for name, row in base.items():
      lines.append(f"| {name} | " + " | ".join(_cell(row.get(t)) for t in HUMANEVAL) + " |")
    versus = {name: row["vs_wanda"] for name, row in results["baselines"].items() if row.get("vs_wanda")}
    if versus:
      lines += _paired_table("Each baseline against the Wanda 50% sub-model of the same calibration, McNemar's"
                             " exact test over the same problems (two-sided):",
                             ("baseline", "column", "only baseline", "only Wanda"), versus)
  if any(results.get("sampled", {}).values()):
    lines += ["", "## HumanEval pass@1 and pass@10 from sampling (T=0.8, top-p 0.95; the paper's metric)", "",
              "| model | " + " | ".join(HUMANEVAL) + " |", "|---|" + "---|" * len(HUMANEVAL)]
    for model, row in results["sampled"].items():
      cells = []
      for t in HUMANEVAL:
        entry = next((v for k, v in row.items() if k.partition("@")[0] == t), None)
        cells.append(f"{100 * entry['pass@1']:.1f} / {100 * entry['pass@10']:.1f}"
                     if entry and "pass@10" in entry else "–")
      lines.append(f"| {model} | " + " | ".join(cells) + " |")
  lines += ["", f"The paper's Table IV, for its shape: {PAPER_TABLE4}."]
  return lines


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  extra = ((("--calib",), dict(nargs="+", default=list(CALIB), help="calibration domains of the Wanda sub-models")),
           (("--baselines",), dict(nargs="*", default=list(BASELINES), choices=list(BASELINES),
                                   help="baseline sub-models (seed 0)")),
           (("--baseline-humaneval",), dict(default="none", choices=["none", "own", "all"],
                                            help="HumanEval of baselines: none, own language and Python, or all four")),
           (("--sampled",), dict(type=int, default=0, metavar="N",
                                 help="also pass@1 and pass@10 from N samples per problem (T=0.8, top-p 0.95) of"
                                      " dense and each diagonal sub-model (a GPU's work: N x the greedy cells)")),
           (("--prune-first",), dict(action="store_true",
                                     help="prune every first-seed sub-model before evaluating any (their masks are"
                                          " then ready for a sub-model library while the cells run)")),
           (("--cached-only",), dict(action="store_true",
                                     help="write the tables from the cached cells only (prunes and evaluates nothing)")),
           (("--table4",), dict(action="store_true", help="the Table IV preset on a code model (see above)")))
  args = parse_args(__doc__.split("\n")[0], argv, *extra, defaults=TABLE4 if "--table4" in argv else None)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  exp = Experiment.create(args, " ".join(["python", "scripts/reproduce_languages.py", *argv]))
  start = time.perf_counter()
  calib = tuple(args.calib)
  compute = not args.cached_only
  exp.cached_only = args.cached_only

  def cells(run, name: str, tasks: tuple[str, ...]) -> dict:
    return evaluate_cached(exp, run, name, tasks, compute=compute)

  results: dict = {"dense": {}, "wanda": {}, "baselines": {}, "humaneval": {}, "paired": {}, "sampled": {}}
  ppl_tasks = tuple(f"ppl:{d}" for d in EVAL)
  dense = cells(None, "dense", ppl_tasks + HUMANEVAL)
  results["dense"] = {"ppl": {d: dense[f"ppl:{d}"] for d in EVAL if f"ppl:{d}" in dense}}
  results["humaneval"]["dense"] = {t: dense[t] for t in HUMANEVAL if t in dense}

  wanda_runs: dict[str, list] = {c: [] for c in calib}
  wanda_names: dict[str, list[str]] = {c: [] for c in calib}
  per_seed: dict[str, list] = {c: [] for c in calib}
  # Seed by seed, so the first seed's sub-models (the only ones with code cells) come first: an
  # interrupted run has the whole pass@1 matrix before the extra seeds' perplexities.
  # each pruned only if a cell or the distances need it
  seed_runs = {seed: {c: lazy_run(exp, f"wanda50-{c}-s{seed}", c, seed) for c in calib} for seed in args.seeds}
  if args.prune_first and compute:
    for run in seed_runs[args.seeds[0]].values():
      run()
  for seed in args.seeds:
    for c in calib:
      run = seed_runs[seed][c]
      wanda_runs[c].append(run)
      wanda_names[c].append(f"wanda50-{c}-s{seed}")
      ev = cells(run, f"wanda50-{c}-s{seed}", (HUMANEVAL if seed == args.seeds[0] else ()) + ppl_tasks)
      per_seed[c].append(ev)
      if seed == args.seeds[0]:
        results["humaneval"][f"wanda50-{c}"] = {t: ev[t] for t in HUMANEVAL if t in ev}
  for c in calib:
    results["wanda"][c] = {"ppl": {d: [ev[f"ppl:{d}"] for ev in per_seed[c] if f"ppl:{d}" in ev] for d in EVAL}}
  for t in HUMANEVAL:
    diagonal = results["humaneval"].get(f"wanda50-{LANGUAGE_OF[t]}", {}).get(t)
    if diagonal is not None:
      tests = {other: paired_test(diagonal, row[t]) for other, row in results["humaneval"].items()
               if other not in ("dense", f"wanda50-{LANGUAGE_OF[t]}") and t in row}
      results["paired"][t] = {k: v for k, v in tests.items() if v is not None}
  results["pooled"] = pooled_test(results["humaneval"], {t: problem_ids(t, exp.limit) for t in HUMANEVAL},
                                  LANGUAGE_OF)

  # The distances before the baselines: they need every Wanda run's masks (never committed), so they
  # are best made in one go, before hours of baselines end a session and take the masks with them.
  distances = mask_distances_cached(exp, wanda_runs, wanda_names, compute=compute)

  baseline_names: list[str] = []
  baseline_wanted = 0
  for key in args.baselines:
    label, options = BASELINES[key]
    for c in ((None,) if key == "magnitude" else calib):
      name = f"{label.replace(' ', '-').replace(':', 'of').replace('%', '')}-{c or 'none'}-s{args.seeds[0]}"
      baseline_names.append(name)
      run = lazy_run(exp, name, c, args.seeds[0], **options)
      own = [t for t in HUMANEVAL if LANGUAGE_OF[t] == c]
      he = {"none": (), "own": tuple(dict.fromkeys(own + ["humaneval"])) if own else (), "all": HUMANEVAL}
      tasks = ppl_tasks + he[args.baseline_humaneval]
      ev = cells(run, name, tasks)
      baseline_wanted += len(tasks)
      cells_he = {t: ev[t] for t in he[args.baseline_humaneval] if t in ev}
      wanda_he = results["humaneval"].get(f"wanda50-{c}", {})
      results["baselines"][f"{label} · {c or 'no calibration'}"] = {
          "ppl": {d: ev[f"ppl:{d}"] for d in EVAL if f"ppl:{d}" in ev},
          "humaneval": cells_he,
          # the method effect beyond chance: this baseline against the Wanda sub-model of its calibration
          "vs_wanda": {t: r for t in cells_he if t in wanda_he
                       and (r := paired_test(cells_he[t], wanda_he[t])) is not None}}

  if args.sampled:  # pass@10 as the paper reports it: dense and the diagonal cells
    runs_of = {c: wanda_runs[c][0] for c in calib}
    for t in HUMANEVAL:
      task = f"{t}@{args.sampled}"
      results["sampled"].setdefault("dense", {}).update(cells(None, "dense", (task,)))
      if LANGUAGE_OF[t] in runs_of:
        name = f"wanda50-{LANGUAGE_OF[t]}"
        results["sampled"].setdefault(name, {}).update(cells(runs_of[LANGUAGE_OF[t]], f"{name}-s{args.seeds[0]}", (task,)))

  elapsed = time.perf_counter() - start
  compute_time = recorded_seconds(exp, [n for names in wanda_names.values() for n in names] + baseline_names)
  payload = {"experiment": exp.record(), "results": results, "distances": distances, "elapsed_s": elapsed,
             "compute": compute_time, "complete": _complete(results, calib, args, baseline_wanted)}
  from jaxprune.store import write_json_atomic

  write_json_atomic(exp.out / "languages.json", payload)
  markdown = _markdown(exp, results, distances, elapsed, payload["complete"], compute_time)
  (exp.out / "languages.md.tmp").write_text(markdown)
  (exp.out / "languages.md.tmp").replace(exp.out / "languages.md")
  print(markdown)


def _complete(results: dict, calib: tuple[str, ...], args, baseline_wanted: int) -> dict[str, Any]:
  """How many of the cells this run asks for are in the tables (all of them once the run has finished)."""
  he = results["humaneval"]
  code = sum(len(row) for row in he.values())
  ppl = sum(len(v) for c in calib for v in results["wanda"][c]["ppl"].values()) + len(results["dense"]["ppl"])
  wanted_code = len(HUMANEVAL) * (1 + len(calib))
  wanted_ppl = len(EVAL) * (1 + len(calib) * len(args.seeds))
  baseline = sum(len(row["ppl"]) + len(row["humaneval"]) for row in results["baselines"].values())
  return {"code_cells": code, "code_cells_wanted": wanted_code, "ppl_cells": ppl, "ppl_cells_wanted": wanted_ppl,
          "baseline_cells": baseline, "baseline_cells_wanted": baseline_wanted,
          "all": code == wanted_code and ppl == wanted_ppl and baseline == baseline_wanted}


if __name__ == "__main__":
  main()
