"""Which pruning method keeps the most quality, and does it keep language specificity?

On one model (default smollm2-135m): magnitude, Wanda, Wanda+OWL, RIA and
SparseGPT at 50% unstructured and 2:4, each calibrated on `python` and on
`java` (magnitude needs no calibration; OWL allocates unstructured sparsity
only), evaluated by held-out perplexity on the four code languages.

  python scripts/compare_methods.py [--model smollm2-135m] [--out results/smollm2-135m]

Runs are shared with scripts/reproduce_languages.py (same names under
OUT/runs/); writes OUT/methods.md and OUT/methods.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from _reproduce import Experiment, evaluate_cached, prune_cached  # noqa: E402

EVAL = ("python", "java", "cpp", "javascript")
CALIB = ("python", "java")
METHODS = {
    # label: (run-name stem, options, patterns)
    "magnitude": ("magnitude", dict(method="magnitude"), ("50", "2of4")),
    "wanda": ("wanda", dict(method="wanda"), ("50", "2of4")),
    "wanda+owl": ("owl", dict(method="wanda", allocation="owl"), ("50",)),
    "ria": ("ria", dict(method="ria"), ("50", "2of4")),
    "sparsegpt": ("sparsegpt", dict(method="sparsegpt"), ("50", "2of4")),
}


def run_name(stem: str, pattern: str, domain: str | None, seed: int) -> str:
  """Names shared with reproduce_languages.py, so identical runs are reused."""
  if stem == "wanda" and pattern == "50":
    return f"wanda50-{domain}-s{seed}"
  return f"{stem}-{pattern}-{domain or 'none'}-s{seed}"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--out", default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--nsamples", type=int, default=32)
  parser.add_argument("--seqlen", type=int, default=256)
  parser.add_argument("--eval-windows", type=int, default=16)
  args = parser.parse_args()
  args.seeds, args.limit, args.max_new_tokens = [args.seed], 0, 0
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  exp = Experiment.create(args, " ".join(["python", "scripts/compare_methods.py", *sys.argv[1:]]))
  start = time.perf_counter()
  tasks = tuple(f"ppl:{d}" for d in EVAL)
  dense = evaluate_cached(exp, None, "dense", tasks)
  rows = []
  for label, (stem, options, patterns) in METHODS.items():
    for pattern in patterns:
      domains = (None,) if stem == "magnitude" else CALIB
      for domain in domains:
        name = run_name(stem, pattern, domain, args.seed)
        opts = dict(options, pattern="2:4" if pattern == "2of4" else "unstructured")
        run = prune_cached(exp, name, domain, args.seed, **opts)
        ppl = evaluate_cached(exp, run, name, tasks)
        rows.append({"method": label, "pattern": "2:4" if pattern == "2of4" else "50%",
                     "calibration": domain or "none", "run": name, "ppl": {d: ppl[f"ppl:{d}"] for d in EVAL}})
  elapsed = time.perf_counter() - start

  lines = [f"# Pruning methods on {exp.model}", "",
           f"Made by `{exp.command}` in {elapsed / 60:.0f} min ({exp.cpu_count} CPU cores; runs and evaluations"
           " already made by scripts/reproduce_languages.py are reused from OUT/runs and OUT/evals); calibration"
           f" {exp.nsamples} x {exp.seqlen} tokens, seed {args.seed}; held-out perplexity on {exp.eval_windows}"
           f" windows of {exp.seqlen} tokens per language.", "",
           "| method | pattern | calibration | " + " | ".join(EVAL) + " | mean ratio to dense |",
           "|---|---|---|" + "---|" * (len(EVAL) + 1),
           "| dense | – | – | " + " | ".join(f"{dense[f'ppl:{d}']:.2f}" for d in EVAL) + " | 1.00 |"]
  for r in rows:
    ratio = np.mean([r["ppl"][d] / dense[f"ppl:{d}"] for d in EVAL])
    cells = [f"**{r['ppl'][d]:.2f}**" if d == r["calibration"] else f"{r['ppl'][d]:.2f}" for d in EVAL]
    lines.append(f"| {r['method']} | {r['pattern']} | {r['calibration']} | " + " | ".join(cells) + f" | {ratio:.2f} |")
  lines += ["", "Language specificity: perplexity on python minus on java, python-calibrated vs java-calibrated"
            " (negative = the calibration language is favoured):", "",
            "| method | pattern | Δ python (py-calib − java-calib) | Δ java (java-calib − py-calib) |", "|---|---|---|---|"]
  for label in METHODS:
    for pattern in ("50%", "2:4"):
      by = {r["calibration"]: r for r in rows if r["method"] == label and r["pattern"] == pattern}
      if "python" in by and "java" in by:
        dp = by["python"]["ppl"]["python"] - by["java"]["ppl"]["python"]
        dj = by["java"]["ppl"]["java"] - by["python"]["ppl"]["java"]
        lines.append(f"| {label} | {pattern} | {dp:+.3f} | {dj:+.3f} |")
  (exp.out / "methods.md").write_text("\n".join(lines) + "\n")
  (exp.out / "methods.json").write_text(json.dumps(
      {"experiment": exp.record(), "dense": dense, "rows": rows, "elapsed_s": elapsed},
      indent=2, default=str))
  print((exp.out / "methods.md").read_text())


if __name__ == "__main__":
  main()
