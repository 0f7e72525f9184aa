"""Benchmark `jaxprune serve`: requests/s and latency at several concurrencies, sub-model switch and routing time.

The server runs in this process (uvicorn in a thread, on a free localhost
port) over the library, and the official `openai` client sends greedy
completions of HumanEval prompts (the first ``--requests`` problems of the
four languages in turn) to one sub-model, ``--concurrency`` requests in
flight at a time. A warm-up request per prompt width compiles first; its
time is reported apart. Then, in the same process:

* switch: seconds to derive each sub-model from the base (the mask applied),
  alternating between sub-models ``--switches`` times;
* routing: milliseconds per request of each router on the same prompts
  (perplexity: one prefill per sub-model, switches excluded);
* the roofline beside each concurrency: the decoded tokens/s no server can
  pass with that many rows per decode step on this machine, the fewer of
  compute (XLA's best float32 matmul rate over 2 FLOPs per weight per token)
  and memory (the rows' tokens per read of every matmul weight at the
  measured read bandwidth), as in scripts/bench_generate.py. It counts decode
  only (no prefill, HTTP or scheduling), so it is an upper bound.

  python scripts/bench_serve.py --lib LIB --out results/qwen2.5-coder-0.5b/router/bench_serve.json
  python scripts/bench_serve.py --lib LIB --requests 8 --max-tokens 16 --out /tmp/bench.json   # a quick look
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_util import peak_rss_mib  # noqa: E402

TASKS = ("humaneval", "humaneval-java", "humaneval-cpp", "humaneval-js")


def workload(count: int) -> list[str]:
  """``count`` HumanEval prompts, the four languages in turn."""
  from jaxprune.evals import humaneval

  per_task = [humaneval.language(t).problems()[0] for t in TASKS]
  return [per_task[i % len(TASKS)][i // len(TASKS)].prompt for i in range(count)]


def percentiles(seconds: list[float]) -> dict[str, float]:
  a = np.asarray(seconds)
  return {"p50_s": float(np.percentile(a, 50)), "p95_s": float(np.percentile(a, 95)), "mean_s": float(a.mean())}


def load(client, model: str, prompts: list[str], concurrency: int, max_tokens: int) -> dict[str, Any]:
  """Send every prompt with at most ``concurrency`` in flight; throughput and latency."""

  def one(prompt: str) -> tuple[float, int]:
    started = time.perf_counter()
    resp = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0)
    return time.perf_counter() - started, resp.usage.completion_tokens

  started = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
    done = list(pool.map(one, prompts))
  wall = time.perf_counter() - started
  tokens = sum(t for _, t in done)
  return {"concurrency": concurrency, "requests": len(prompts), "wall_s": wall,
          "requests_per_s": len(prompts) / wall, "tokens": tokens, "tokens_per_s": tokens / wall,
          **percentiles([s for s, _ in done])}


def switch_times(models, names: tuple[str, ...], count: int) -> dict[str, Any]:
  if len(names) < 2:
    return {"switches": 0, "note": "one sub-model: nothing to switch"}
  models.model(names[0])
  before = len(models.switches)
  for i in range(count):
    models.model(names[(i + 1) % len(names)])
  return {"switches": count, **percentiles(models.switches[before:])}


def routing_times(models, prompts: list[str], route_config) -> dict[str, Any]:
  out = {}
  for router in ("classifier", "perplexity"):
    config = dataclasses.replace(route_config, router=router)
    models.route_many(prompts[:2], config)  # compile the prefill widths first
    routes = models.route_many(prompts, config)
    ms = [r.seconds * 1e3 for r in routes]
    out[router] = {"requests": len(routes), "ms_p50": float(np.percentile(ms, 50)),
                   "ms_p95": float(np.percentile(ms, 95)), "fallback": sum(r.fallback for r in routes)}
  return out


def roofline(models, concurrencies: list[int], batch_size: int) -> dict[str, Any]:
  """Decoded tokens/s limits per concurrency (rows per step: the concurrency, at most the batch size)."""
  import _roofline
  import jax
  from bench_generate import matmul_weights, read_bandwidth_gbs

  from jaxprune.runs import parameter_dtype

  weights = matmul_weights(models.loaded)
  itemsize = jax.numpy.dtype(parameter_dtype(models.loaded.model)).itemsize
  peak = max(_roofline.peak_matmul("jax", repeats=3).values())
  bandwidth = read_bandwidth_gbs()
  rows = {}
  for c in concurrencies:
    batch = min(c, batch_size)
    compute = peak * 1e9 / (2.0 * weights)
    memory = batch * bandwidth * 1e9 / (itemsize * weights)
    rows[str(c)] = {"rows_per_step": batch, "compute_tokens_per_s": compute, "memory_tokens_per_s": memory,
                    "tokens_per_s": min(compute, memory)}
  return {"matmul_weights": weights, "bytes_per_weight": itemsize, "peak_gflops": peak,
          "read_bandwidth_gbs": bandwidth, "by_concurrency": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
  from jaxprune.library import engine

  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--lib", required=True, help="library folder (jaxprune library build)")
  p.add_argument("--model", default=None, help="sub-model the load goes to (default: the library's first)")
  p.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
  p.add_argument("--concurrency", default="1,4", help="requests in flight, comma-separated")
  p.add_argument("--max-tokens", type=int, default=64, help="tokens generated per request")
  p.add_argument("--batch-size", type=int, default=engine.ServeConfig.batch_size,
                 help="the server's rows per generation batch at most (%(default)s)")
  p.add_argument("--min-rows", type=int, default=engine.ServeConfig.min_rows,
                 help="the server's rows per batch at least, room for requests that join (%(default)s)")
  p.add_argument("--switches", type=int, default=8)
  p.add_argument("--out", required=True, help="JSON to write")
  args = p.parse_args(argv)

  import openai

  from jaxprune import runs, store
  from jaxprune.library import server
  from jaxprune.library import models as models_lib

  models = models_lib.SubModels.load(args.lib)
  target = args.model or models.names[0]
  prompts = workload(args.requests)
  result: dict[str, Any] = {"command": " ".join(["python", "scripts/bench_serve.py", *(sys.argv[1:] if argv is None
                                                                                      else argv)]),
                            "library": args.lib, "base": models.lib.manifest["base"], "model": target,
                            "max_tokens": args.max_tokens, "batch_size": args.batch_size, "min_rows": args.min_rows,
                            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
  config = engine.ServeConfig(path=args.lib, port=0, batch_size=args.batch_size, min_rows=args.min_rows,
                              timeout_s=3600)
  with server.running(models, config) as (url, app):
    client = openai.OpenAI(base_url=url, api_key="-", max_retries=0, timeout=3600)
    started = time.perf_counter()
    for prompt in prompts:  # compiles every prompt width once
      client.completions.create(model=target, prompt=prompt, max_tokens=args.max_tokens, temperature=0)
    result["warmup_s"] = time.perf_counter() - started
    result["load"] = []
    for c in args.concurrency.split(","):
      before = dict(app.state.engine.stats)
      row = load(client, target, prompts, int(c), args.max_tokens)
      after = app.state.engine.stats
      row.update({key: after[key] - before[key] for key in ("batches", "compile_s", "rows_padded")})
      row["rows_per_batch"] = row["requests"] / row["batches"] if row["batches"] else None
      # generation is one thread: time it spent compiling new batch shapes is time no row decoded
      row["tokens_per_s_without_compile"] = row["tokens"] / max(row["wall_s"] - row["compile_s"], 1e-9)
      result["load"].append(row)
    result["engine"] = dict(app.state.engine.stats)
  result["switch"] = switch_times(models, models.names, args.switches)
  result["routing"] = routing_times(models, prompts, models_lib.route_config(models.lib))
  result["roofline"] = roofline(models, [int(c) for c in args.concurrency.split(",")], args.batch_size)
  result["peak_rss_mib"] = peak_rss_mib()
  result["versions"] = runs.versions()
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  store.write_json_atomic(Path(args.out), result)
  print(f"{'concurrency':>11} {'req/s':>7} {'tok/s':>7} {'p50 s':>7} {'p95 s':>7} {'rows/batch':>10}"
        f" {'compile s':>9} {'tok/s w/o compile':>17} {'roofline tok/s':>15}")
  for row in result["load"]:
    limit = result["roofline"]["by_concurrency"][str(row["concurrency"])]["tokens_per_s"]
    print(f"{row['concurrency']:>11} {row['requests_per_s']:>7.2f} {row['tokens_per_s']:>7.1f} {row['p50_s']:>7.2f}"
          f" {row['p95_s']:>7.2f} {row['rows_per_batch']:>10.2f} {row['compile_s']:>9.1f}"
          f" {row['tokens_per_s_without_compile']:>17.1f} {limit:>15.1f}")
  if result["switch"].get("switches"):
    print(f"sub-model switch: p50 {result['switch']['p50_s']:.2f} s, p95 {result['switch']['p95_s']:.2f} s")
  for router, r in result["routing"].items():
    print(f"routing ({router}): p50 {r['ms_p50']:.1f} ms, p95 {r['ms_p95']:.1f} ms per request")
  print(f"wrote {args.out}")
  return result


if __name__ == "__main__":
  main()
