"""Benchmark `evals.generate` against transformers' `generate`, with the roofline, in one run.

Both sides decode greedily the same prompts (the first HumanEval prompts,
left-padded into one batch) for exactly ``--new-tokens`` tokens (no EOS, no
stop strings), in float32 on this machine's CPU, one batch size after the
other. "tok/s" counts generated tokens over the whole call (prefill
included); "decode tok/s" over the time after the prefill (ours: measured
inside `generate_ids`; transformers: its call minus a call that generates one
token). Our first call (jit compilation) is reported separately. "agree" is the fraction
of rows whose tokens equal transformers'.

The roofline of a batch of B rows is the fewer decoded tokens/s of two limits measured
in the same run: compute, the fastest float32 matmul of XLA or PyTorch divided
by the FLOPs a token needs (2 x every matmul weight: the linears of every
block and the lm_head; embedding look-ups and attention left out, so the limit
is optimistic), and memory, B tokens per read of all those weights at the
measured read bandwidth. Beside it, "XLA mm": the tokens/s a decode step would
reach if it were only its matmuls, each timed with XLA at this batch's shapes
(what XLA's CPU matmuls allow at decode shapes, below the large-square peak).

  python scripts/bench_generate.py --model qwen2.5-coder-0.5b --out results/qwen2.5-coder-0.5b/bench_generate.json
  python scripts/bench_generate.py --quick          # SmolLM2, batch 1 and 4, 32 tokens (~2 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

PRESETS = {
    "full": {"batches": (1, 16, 64), "new_tokens": 64},
    "quick": {"batches": (1, 4), "new_tokens": 32},
}


def humaneval_prompts(batch: int) -> list[str]:
  from jaxprune.evals import humaneval

  problems = humaneval.load_problems()
  return [problems[i % len(problems)].prompt for i in range(batch)]


def bench_ours(loaded, prompts: list[str], new_tokens: int) -> tuple[dict, list[list[int]]]:
  from jaxprune.evals import generate as gen

  config = gen.GenerateConfig(max_new_tokens=new_tokens, batch_size=len(prompts), chunk=16)
  ids = gen.encode_prompts(loaded.tokenizer, prompts)
  start = time.perf_counter()
  gen.generate_ids(loaded.model, ids, config)  # compiles
  first = time.perf_counter() - start
  stats: dict[str, float] = {}
  start = time.perf_counter()
  out = gen.generate_ids(loaded.model, ids, config, stats=stats)  # no EOS ids: always new_tokens tokens
  seconds = time.perf_counter() - start
  tokens = sum(len(o[0]) for o in out)
  return {"impl": "jaxprune (penzai, KV cache, jit)", "batch": len(prompts), "new_tokens": new_tokens,
          "prompt_tokens": sum(map(len, ids)), "seconds": seconds, "tokens_per_s": tokens / seconds,
          "prefill_s": stats["prefill_s"], "decode_s": stats["decode_s"],
          "decode_tokens_per_s": tokens / stats["decode_s"], "first_call_s": first}, [o[0] for o in out]


def bench_transformers(model, tokenizer, prompts: list[str], new_tokens: int) -> tuple[dict, list[list[int]]]:
  import torch

  enc = tokenizer(prompts, return_tensors="pt", padding=True)
  kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                pad_token_id=tokenizer.pad_token_id)
  with torch.inference_mode():
    model.generate(**enc, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
    start = time.perf_counter()
    model.generate(**enc, **{**kwargs, "max_new_tokens": 1, "min_new_tokens": 1})  # the prefill alone
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    out = model.generate(**enc, **kwargs)
    seconds = time.perf_counter() - start
  rows = out[:, enc["input_ids"].shape[1]:].tolist()
  tokens = len(prompts) * new_tokens
  return {"impl": f"transformers {__import__('transformers').__version__} (torch {torch.__version__})",
          "batch": len(prompts), "new_tokens": new_tokens, "prompt_tokens": int(enc["attention_mask"].sum()),
          "seconds": seconds, "tokens_per_s": tokens / seconds, "prefill_s": prefill,
          "decode_s": seconds - prefill, "decode_tokens_per_s": tokens / (seconds - prefill),
          "first_call_s": None}, rows


def agreement(ours: list[list[int]], ref: list[list[int]], eos: list[int]) -> float:
  """Rows whose tokens agree up to our first EOS (``min_new_tokens`` makes transformers avoid EOS)."""
  same = []
  for x, y in zip(ours, ref):
    k = next((i for i, t in enumerate(x) if t in eos), len(x))
    same.append(x[:k] == y[:k])
  return float(np.mean(same))


def matmul_weights(loaded) -> int:
  """Weights a decoded token multiplies by: every prunable linear and the lm_head (tied or not)."""
  spec = loaded.spec
  linears = sum(int(np.prod(m.shape)) for m in spec.linears)
  return linears + int(loaded.config.vocab_size) * int(loaded.config.hidden_size)


def read_bandwidth_gbs(gib: int = 1, repeats: int = 5) -> float:
  """Best GB/s of a jitted sum over ``gib`` GiB of float32 (the weights' read rate from memory)."""
  import jax
  import jax.numpy as jnp

  data = jnp.ones((gib << 28,), jnp.float32)
  total = jax.jit(jnp.sum)
  total(data).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    total(data).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return data.nbytes / best / 1e9


def decode_matmuls_tokens_per_s(loaded, batch: int, repeats: int = 5) -> dict[str, Any]:
  """What XLA's matmuls alone allow at ``batch`` rows: tokens/s if a decode step were only its matmuls.

  Times, in float32 on this machine, ``[batch, in] @ [in, out]`` for every
  distinct (in, out) of the model's linears and its lm_head (best of
  ``repeats``), and sums them as often as a decode step runs each. Unlike the
  roofline's peak (large squares) this is the speed XLA reaches at the shapes
  decoding actually has; a decode at this rate is bound by matmul efficiency.
  """
  import collections

  import jax
  import jax.numpy as jnp

  shapes = collections.Counter((m.shape[1], m.shape[0]) for m in loaded.spec.linears)
  shapes[(int(loaded.config.hidden_size), int(loaded.config.vocab_size))] += 1
  matmul = jax.jit(lambda x, w: x @ w)
  seconds, rates = 0.0, {}
  for (k, n), count in sorted(shapes.items()):
    x, w = jnp.ones((batch, k), jnp.float32), jnp.full((k, n), 0.01, jnp.float32)
    matmul(x, w).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
      start = time.perf_counter()
      matmul(x, w).block_until_ready()
      best = min(best, time.perf_counter() - start)
    seconds += count * best
    rates[f"{batch}x{k}x{n}"] = 2 * batch * k * n / best / 1e9
  return {"tokens_per_s": batch / seconds, "step_s": seconds, "gflops_by_shape": rates}


def roofline(weights: int, batch: int, peak_gflops: float, bandwidth_gbs: float) -> dict[str, float]:
  compute = peak_gflops * 1e9 / (2.0 * weights)
  memory = batch * bandwidth_gbs * 1e9 / (4.0 * weights)
  return {"compute_tokens_per_s": compute, "memory_tokens_per_s": memory, "tokens_per_s": min(compute, memory)}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m", help="built-in name or GGUF file (default %(default)s)")
  parser.add_argument("--quick", action="store_true", help="batch 1 and 4, 32 new tokens")
  parser.add_argument("--batches", default=None, help="comma-separated batch sizes (overrides the preset)")
  parser.add_argument("--new-tokens", type=int, default=None, help="tokens generated per row")
  parser.add_argument("--out", default=None, help="JSON file for the results")
  args = parser.parse_args(argv)
  preset = dict(PRESETS["quick" if args.quick else "full"])
  if args.batches:
    preset["batches"] = tuple(int(b) for b in args.batches.split(","))
  if args.new_tokens:
    preset["new_tokens"] = args.new_tokens

  import jax
  import torch
  from transformers import AutoModelForCausalLM, AutoTokenizer

  import _roofline
  from jaxprune import converters
  from jaxprune.converters import builtin
  from jaxprune.evals import generate as gen

  loaded = converters.load_model(args.model)
  path = builtin.path_of(args.model) if builtin.is_builtin(args.model) else Path(args.model)
  tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, padding_side="left")
  model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()

  peaks = {fw: _roofline.peak_matmul(fw, repeats=3) for fw in ("jax", "torch")}
  peak = max(max(rates.values()) for rates in peaks.values())
  bandwidth = read_bandwidth_gbs()
  weights = matmul_weights(loaded)
  rows = []
  for batch in preset["batches"]:
    prompts = humaneval_prompts(batch)
    ours, ours_tokens = bench_ours(loaded, prompts, preset["new_tokens"])
    ref, ref_tokens = bench_transformers(model, tokenizer, prompts, preset["new_tokens"])
    limit = roofline(weights, batch, peak, bandwidth)
    bound = decode_matmuls_tokens_per_s(loaded, batch)
    ours["agrees_with_transformers"] = agreement(ours_tokens, ref_tokens, gen.eos_ids_of(loaded))
    ours["speedup"] = ours["tokens_per_s"] / ref["tokens_per_s"]
    for row in (ours, ref):
      row["roofline"] = limit
      row["fraction_of_roofline"] = row["decode_tokens_per_s"] / limit["tokens_per_s"]
      row["xla_decode_matmuls"] = bound
      row["fraction_of_xla_matmuls"] = row["decode_tokens_per_s"] / bound["tokens_per_s"]
    rows += [ours, ref]

  print(f"model {args.model}: {weights / 1e6:.0f}M matmul weights per token; float32 matmul peak {peak:.0f} GFLOP/s,"
        f" read bandwidth {bandwidth:.1f} GB/s")
  print("decode tok/s: generated tokens over the time after the prefill; 'of roof': decode tok/s over the roofline;"
        " 'XLA mm': tok/s if a decode step were only its matmuls, timed at this batch")
  print(f"{'implementation':<40} {'batch':>5} {'s':>7} {'prefill s':>9} {'tok/s':>6} {'decode tok/s':>12}"
        f" {'roofline':>8} {'of roof':>7} {'XLA mm':>7} {'of mm':>6} {'1st call s':>10} {'agree':>6}")
  for r in rows:
    first = f"{r['first_call_s']:.1f}" if r["first_call_s"] is not None else "-"
    agree = f"{r['agrees_with_transformers']:.2f}" if "agrees_with_transformers" in r else "-"
    print(f"{r['impl'][:40]:<40} {r['batch']:>5} {r['seconds']:>7.2f} {r['prefill_s']:>9.2f} {r['tokens_per_s']:>6.1f}"
          f" {r['decode_tokens_per_s']:>12.1f} {r['roofline']['tokens_per_s']:>8.1f} {r['fraction_of_roofline']:>7.0%}"
          f" {r['xla_decode_matmuls']['tokens_per_s']:>7.1f} {r['fraction_of_xla_matmuls']:>6.0%} {first:>10} {agree:>6}")
  if args.out:
    result = {
        "command": "python scripts/bench_generate.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model, "preset": "quick" if args.quick else "full", **preset, "rows": rows,
        "matmul_weights": weights, "peak_matmul_gflops": peaks, "read_bandwidth_gbs": bandwidth,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "jax_backend": jax.default_backend(),
                    "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
