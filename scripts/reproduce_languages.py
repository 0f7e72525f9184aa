"""Reproduce the paper's language experiment (Table IV, Fig. 4) on a small model.

For each calibration domain (python, java, cpp, javascript, english, generic)
and seed, prune at 50% unstructured with Wanda; also 2:4 Wanda, SparseGPT and
magnitude baselines. Evaluate every sub-model and the dense model on held-out
perplexity in five domains and on HumanEval in four languages; compare masks
within a language (across seeds) and across languages.

  python scripts/reproduce_languages.py                      # 2-core preset (see --help)
  python scripts/reproduce_languages.py --full               # the paper's 128 x 2048 calibration
  python scripts/reproduce_languages.py --model gemma3-270m --out results/gemma3-270m

Every prune run and every evaluation is cached under OUT/runs/, so an
interrupted reproduction continues where it stopped. Outputs: OUT/languages.md
(tables: mean +- spread over seeds, relative increase over dense, diagonal in
bold), OUT/languages.json, OUT/*.png and OUT/compare/ (the compare report of
the seed-0 sub-models).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from _reproduce import (  # noqa: E402
    Experiment,
    evaluate_cached,
    mask_distances,
    parse_args,
    prune_cached,
)

CALIB = ("python", "java", "cpp", "javascript", "english", "generic")
EVAL = ("python", "java", "cpp", "javascript", "english")
HUMANEVAL = ("humaneval", "humaneval-java", "humaneval-cpp", "humaneval-js")
log = logging.getLogger("reproduce")


def _fmt(values: list[float]) -> str:
  if not values:
    return "–"
  if len(values) == 1:
    return f"{values[0]:.2f}"
  return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def _markdown(exp: Experiment, results: dict, distances: dict, elapsed: float) -> str:
  dense = results["dense"]
  lines = [
      f"# Language-specific sub-models of {exp.model}",
      "",
      f"Made by `{exp.command}` {exp.timing(elapsed)}. Calibration: {exp.nsamples} x {exp.seqlen} tokens per run;"
      f" evaluation: {exp.eval_windows} held-out windows of {exp.seqlen} tokens per domain"
      f" (files disjoint from the calibration files); seeds {', '.join(map(str, exp.seeds))}.",
      "",
      "## Held-out perplexity (Wanda, 50% unstructured; mean ± std over seeds)",
      "",
      "Rows: calibration domain; columns: evaluation domain. **Bold**: the calibration"
      " language evaluated on itself (the diagonal); the best row of each column is marked ▲.",
      "",
      "| calibration | " + " | ".join(EVAL) + " |",
      "|---|" + "---|" * len(EVAL),
      "| dense | " + " | ".join(f"{dense['ppl'][d]:.2f}" for d in EVAL) + " |",
  ]
  best = {d: min(CALIB, key=lambda c: np.mean(results["wanda"][c]["ppl"][d])) for d in EVAL}
  for c in CALIB:
    cells = []
    for d in EVAL:
      cell = _fmt(results["wanda"][c]["ppl"][d])
      cell = f"**{cell}**" if c == d else cell
      cells.append(cell + (" ▲" if best[d] == c else ""))
    lines.append(f"| {c} | " + " | ".join(cells) + " |")
  lines += ["", "Relative perplexity increase over dense (mean over seeds):", "",
            "| calibration | " + " | ".join(EVAL) + " |", "|---|" + "---|" * len(EVAL)]
  for c in CALIB:
    cells = []
    for d in EVAL:
      rel = np.mean(results["wanda"][c]["ppl"][d]) / dense["ppl"][d] - 1
      cells.append(f"**{rel:+.1%}**" if c == d else f"{rel:+.1%}")
    lines.append(f"| {c} | " + " | ".join(cells) + " |")

  lines += ["", "## Baselines (seed 0): method effect next to the calibration effect", "",
            "| sub-model | " + " | ".join(EVAL) + " |", "|---|" + "---|" * len(EVAL)]
  for name, row in results["baselines"].items():
    lines.append(f"| {name} | " + " | ".join(f"{row['ppl'][d]:.2f}" for d in EVAL) + " |")

  lines += ["", f"## HumanEval greedy pass@1 (first {exp.limit} problems per language,"
            f" {exp.max_new_tokens} new tokens)", "",
            "| model | " + " | ".join(HUMANEVAL) + " |", "|---|" + "---|" * len(HUMANEVAL)]
  for name, row in results["humaneval"].items():
    lines.append(f"| {name} | " + " | ".join(
        f"{row[t]['pass@1']:.3f} ({row[t]['problems']})" if t in row else "–" for t in HUMANEVAL) + " |")

  lines += ["", "## Mask overlap (Jaccard distance of kept weights, mean over all prunable matrices)", "",
            f"- within a language, across seeds: {distances['within_mean']:.4f}"
            f" ({distances['within_pairs']} pairs)",
            f"- across languages, same seed: {distances['across_mean']:.4f} ({distances['across_pairs']} pairs)",
            "", "| pair | distance |", "|---|---|"]
  for pair, value in sorted(distances["pairs"].items(), key=lambda kv: kv[1]):
    lines.append(f"| {pair} | {value:.4f} |")
  lines += ["", "Per-layer curves: `layers_within_vs_across.png`; full report: `compare/index.html`."]
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  args = parse_args(__doc__.split("\n")[0], argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  exp = Experiment.create(args, " ".join(["python", "scripts/reproduce_languages.py", *argv]))
  start = time.perf_counter()

  results: dict = {"dense": {}, "wanda": {}, "baselines": {}, "humaneval": {}}
  ppl_tasks = tuple(f"ppl:{d}" for d in EVAL)
  dense = evaluate_cached(exp, None, "dense", ppl_tasks + HUMANEVAL)
  results["dense"] = {"ppl": {d: dense[f"ppl:{d}"] for d in EVAL}}
  results["humaneval"]["dense"] = {t: dense[t] for t in HUMANEVAL}

  wanda_runs: dict[str, list[Path]] = {}
  for c in CALIB:
    per_seed = []
    for seed in args.seeds:
      run = prune_cached(exp, f"wanda50-{c}-s{seed}", c, seed)
      wanda_runs.setdefault(c, []).append(run)
      tasks = ppl_tasks + (HUMANEVAL if seed == args.seeds[0] else ())
      ev = evaluate_cached(exp, run, f"wanda50-{c}-s{seed}", tasks)
      per_seed.append(ev)
      if seed == args.seeds[0]:
        results["humaneval"][f"wanda50-{c}"] = {t: ev[t] for t in HUMANEVAL}
    results["wanda"][c] = {"ppl": {d: [ev[f"ppl:{d}"] for ev in per_seed] for d in EVAL}}

  baselines = [("wanda 2:4", dict(pattern="2:4"), CALIB), ("sparsegpt 50%", dict(method="sparsegpt"), CALIB),
               ("magnitude 50%", dict(method="magnitude"), (None,))]
  for label, options, domains in baselines:
    for c in domains:
      name = f"{label.replace(' ', '-').replace(':', 'of').replace('%', '')}-{c or 'none'}-s{args.seeds[0]}"
      run = prune_cached(exp, name, c, args.seeds[0], **options)
      ev = evaluate_cached(exp, run, name, ppl_tasks)
      results["baselines"][f"{label} · {c or 'no calibration'}"] = {"ppl": {d: ev[f"ppl:{d}"] for d in EVAL}}

  distances = mask_distances(exp, wanda_runs)
  elapsed = time.perf_counter() - start
  payload = {"experiment": exp.record(), "results": results, "distances": distances,
             "elapsed_s": elapsed}
  (exp.out / "languages.json").write_text(json.dumps(payload, indent=2, default=str))
  (exp.out / "languages.md").write_text(_markdown(exp, results, distances, elapsed))
  print((exp.out / "languages.md").read_text())


if __name__ == "__main__":
  main()
