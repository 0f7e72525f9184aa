"""Benchmark `jaxprune.compare.jaccard_packed` on 7B-sized random packed masks.

Two runs of a Llama-7B-shaped model (32 layers x q,k,v,o 4096x4096, gate/up
11008x4096, down 4096x11008: 6.5G weights, 0.8 GB packed per run) compared
matrix by matrix. Reports the first call (with jit compilation of the three
shapes) and a warm call, and checks the result against numpy's bitwise_count.

  python scripts/bench_compare.py --out bench_compare.json
  python scripts/bench_compare.py --quick          # 4 small layers, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import numpy as np

from jaxprune import compare

PRESETS = {
    "7b": {"layers": 32, "hidden": 4096, "mlp": 11008},
    "quick": {"layers": 4, "hidden": 1024, "mlp": 2752},
}


def shapes(layers: int, hidden: int, mlp: int) -> dict[str, tuple[int, int]]:
  per_layer = {
      "self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, hidden),
      "self_attn.v_proj": (hidden, hidden), "self_attn.o_proj": (hidden, hidden),
      "mlp.gate_proj": (mlp, hidden), "mlp.up_proj": (mlp, hidden), "mlp.down_proj": (hidden, mlp),
  }
  return {f"model.layers.{l}.{p}.weight": s for l in range(layers) for p, s in per_layer.items()}


def random_packed(shape_map: dict[str, tuple[int, int]], seed: int) -> dict[str, np.ndarray]:
  """Uniform random bits: ~50% kept, like a 50% sparsity mask."""
  rng = np.random.default_rng(seed)
  return {n: rng.integers(0, 256, (o, -(-i // 8)), dtype=np.uint8) for n, (o, i) in shape_map.items()}


def numpy_reference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
  out = {}
  for n in a:
    inter = int(np.bitwise_count(a[n] & b[n]).sum(dtype=np.int64))
    union = int(np.bitwise_count(a[n] | b[n]).sum(dtype=np.int64))
    out[n] = compare.distance(inter, union)
  return out


def timed(fn, *args):
  start = time.perf_counter()
  result = fn(*args)
  return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small preset (4 layers, hidden 1024)")
  parser.add_argument("--out", help="write the results as JSON here")
  parser.add_argument("--repeats", type=int, default=3, help="warm calls to time (best is reported)")
  args = parser.parse_args(argv)

  preset = "quick" if args.quick else "7b"
  shape_map = shapes(**PRESETS[preset])
  weights = sum(o * i for o, i in shape_map.values())
  (a, b), gen_s = timed(lambda: (random_packed(shape_map, 0), random_packed(shape_map, 1)))
  packed_bytes = sum(x.nbytes for x in a.values())

  cold, cold_s = timed(compare.jaccard_packed, a, b)
  warm_s = min(timed(compare.jaccard_packed, a, b)[1] for _ in range(args.repeats))
  ref, numpy_s = timed(numpy_reference, a, b)
  max_abs_diff = max(abs(cold[n] - ref[n]) for n in cold)

  result = {
      "preset": preset, **PRESETS[preset], "matrices": len(shape_map), "weights": weights,
      "packed_bytes_per_run": packed_bytes, "generate_s": gen_s,
      "jax_first_call_s": cold_s, "jax_warm_s": warm_s,
      "jax_warm_gb_per_s": 2 * packed_bytes / warm_s / 1e9, "numpy_bitwise_count_s": numpy_s,
      "max_abs_diff_vs_numpy": max_abs_diff, "mean_distance": float(np.mean(list(cold.values()))),
      "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                  "jax": jax.__version__, "backend": jax.default_backend()},
  }
  rows = [
      ("preset", preset), ("layers x matrices", f"{PRESETS[preset]['layers']} x 7 = {len(shape_map)}"),
      ("weights per run", f"{weights / 1e9:.2f} G"), ("packed per run", f"{packed_bytes / 2**20:,.0f} MiB"),
      ("jaccard_packed, first call (with jit)", f"{cold_s:.3f} s"),
      (f"jaccard_packed, warm (best of {args.repeats})", f"{warm_s:.3f} s"),
      ("throughput (both runs read)", f"{result['jax_warm_gb_per_s']:.1f} GB/s"),
      ("numpy bitwise_count reference", f"{numpy_s:.3f} s"),
      ("max |jax - numpy|", f"{max_abs_diff:.1e}"),
      ("mean distance (random: ~0.667)", f"{result['mean_distance']:.4f}"),
      ("cpus / backend", f"{os.cpu_count()} / {jax.default_backend()}"),
  ]
  width = max(len(k) for k, _ in rows)
  for key, value in rows:
    print(f"{key:<{width}}  {value}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)
  return 0 if max_abs_diff == 0 else 1


if __name__ == "__main__":
  sys.exit(main())
