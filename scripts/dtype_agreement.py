"""Mask agreement of a bfloat16 (or float16) prune with the float32 prune of the same model.

Runs ``jaxprune prune`` once per dtype (each in its own process, so run.json's
peak host RSS is its own) with the same calibration tokens, then compares the
masks weight by weight. Statistics and scores are float32 in both runs; only
the parameters (and so every activation computed from them) differ.

  python scripts/dtype_agreement.py [--model smollm2-135m] [--nsamples 32 --seqlen 256] \
      [--dtype bfloat16] [--out results/smollm2-135m/dtype_agreement.json] [--cpu-shared]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _prune(args, dtype: str, run_dir: Path) -> list[str]:
  command = [sys.executable, "-m", "jaxprune.cli", "prune", "--model", args.model, "--calib", args.calib,
             "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--dtype", dtype,
             "--out", str(run_dir), "--overwrite"]
  if not (run_dir / "run.json").exists() or args.rerun:
    subprocess.run(command, check=True, cwd=ROOT)
  return command


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="smollm2-135m")
  p.add_argument("--calib", default="python")
  p.add_argument("--nsamples", type=int, default=32)
  p.add_argument("--seqlen", type=int, default=256)
  p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
  p.add_argument("--runs", default=None, help="folder of the two run directories (default: beside --out)")
  p.add_argument("--out", default="results/smollm2-135m/dtype_agreement.json")
  p.add_argument("--rerun", action="store_true", help="prune again even if the runs exist")
  p.add_argument("--cpu-shared", action="store_true", help="record that other jobs shared the CPU")
  args = p.parse_args()
  sys.path.insert(0, str(ROOT))
  import numpy as np

  from jaxprune import store

  out = Path(args.out)
  folder = Path(args.runs) if args.runs else out.parent / "runs"
  tag = f"{args.calib}-{args.nsamples}x{args.seqlen}"
  dirs = {d: folder / f"wanda50-{tag}-{d}" for d in ("float32", args.dtype)}
  commands = {d: _prune(args, d, path) for d, path in dirs.items()}
  loaded = {d: store.load_run(path) for d, path in dirs.items()}
  full, half = loaded["float32"][0], loaded[args.dtype][0]
  per_matrix = {n: float(np.mean(half[n] == m)) for n, m in full.items()}
  differing = int(sum(np.sum(half[n] != m) for n, m in full.items()))
  total = int(sum(m.size for m in full.values()))
  report = {
      "model": args.model, "dtype": args.dtype,
      "calibration": {"source": args.calib, "nsamples": args.nsamples, "seqlen": args.seqlen},
      "agreement": 1 - differing / total, "differing_weights": differing, "weights": total,
      "lowest_matrix": min(per_matrix, key=per_matrix.get), "lowest_matrix_agreement": min(per_matrix.values()),
      "per_matrix": per_matrix,
      "runs": {d: {"dir": str(path), "command": " ".join(commands[d][1:]),
                   **{k: loaded[d][1].get(k) for k in ("dtypes", "params", "memory", "timings")}}
               for d, path in dirs.items()},
      "cpu_shared": args.cpu_shared,
  }
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=2) + "\n")
  print(f"{args.model}: {args.dtype} vs float32 masks agree on {report['agreement']:.4%} of {total:,} weights"
        f" ({differing:,} differ; lowest {report['lowest_matrix']}: {report['lowest_matrix_agreement']:.4%})")


if __name__ == "__main__":
  main()
