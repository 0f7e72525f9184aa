"""Computed (not measured) memory per device of a Wanda prune of Llama-2 7B / 13B / 70B shapes (or others).

The arithmetic of docs/cluster.md: what `jaxprune prune` keeps on each device
with ``--params host`` (two blocks' weights: the one being pruned and the next
one's transfer) or ``--params device`` (the whole model on the first device,
plus the replicated block), the calibration activations split over ``data``,
and one micro-batch's transients (one 128-query chunk of attention scores and
the MLP intermediates), with each block's weights split over ``model``.

  python scripts/memory_arithmetic.py [--nsamples 128 --seqlen 2048] [--models ...] [--json out.json]

The code models of the Table IV recipes (README, Findings):
  python scripts/memory_arithmetic.py --models qwen2.5-coder-1.5b codellama-7b --nsamples 128 --seqlen 512
"""

from __future__ import annotations

import argparse
import json
import math

# Configs (hidden, MLP, heads, KV heads, layers, vocabulary), from each model's config.json. Each is
# counted with its own output matrix, as the Llama checkpoints and the packaged Qwen GGUFs carry one.
SHAPES = {
    "llama-2-7b": (4096, 11008, 32, 32, 32, 32000),
    "llama-2-13b": (5120, 13824, 40, 40, 40, 32000),
    "llama-2-70b": (8192, 28672, 64, 8, 80, 32000),
    "qwen2.5-coder-0.5b": (896, 4864, 14, 2, 24, 151936),
    "qwen2.5-coder-1.5b": (1536, 8960, 12, 2, 28, 151936),
    "codellama-7b": (4096, 11008, 32, 32, 32, 32016),
}
LLAMA_2 = ("llama-2-7b", "llama-2-13b", "llama-2-70b")
DEVICES = {"H100 80 GB": 80e9, "TPU v5e 16 GB": 16e9}
GB = 1e9
PARAM_BYTES = 2  # bfloat16
F32 = 4


def per_device(shape, nsamples: int, seqlen: int, data: int, model: int, params: str, microbatch: int = 8,
               chunk: int = 128) -> dict[str, float]:
  """Bytes per device, by item, for one mesh (data x model)."""
  hidden, mlp, heads, kv, layers, vocab = shape
  head_dim = hidden // heads
  block = 2 * hidden * heads * head_dim + 2 * hidden * kv * head_dim + 3 * hidden * mlp + 2 * hidden
  whole = layers * block + 2 * vocab * hidden + hidden
  m = min(math.ceil(nsamples / data), math.ceil(microbatch / data))  # sequences per device per step
  items = {
      "model (--params device)": whole * PARAM_BYTES if params == "device" else 0,
      "block weights": (2 if params == "host" else 1) * block * PARAM_BYTES / model,
      "activations (inputs + outputs)": 2 * nsamples * seqlen * hidden * F32 / data,
      "attention scores, one chunk": m * heads / model * min(chunk, seqlen) * seqlen * F32 * 2,
      "MLP intermediates": m * seqlen * mlp / model * F32 * 3,
  }
  items["total"] = sum(items.values())
  return items


# (devices, data, model, --params): one device, and 8 devices three ways.
LAYOUTS = ((1, 1, 1, "host"), (1, 1, 1, "device"), (8, 8, 1, "host"), (8, 4, 2, "host"), (8, 8, 1, "device"))


def table(nsamples: int, seqlen: int, models: tuple[str, ...] = LLAMA_2) -> list[dict]:
  rows = []
  for name in models:
    shape = SHAPES[name]
    for devices, data, model, params in LAYOUTS:
      items = per_device(shape, nsamples, seqlen, data, model, params)
      rows.append({"model": name, "devices": devices, "mesh": f"data={data},model={model}", "params": params,
                   "gb": {k: round(v / GB, 2) for k, v in items.items()},
                   # 10% of the device left to XLA's workspace
                   "fits": {d: items["total"] <= 0.9 * capacity for d, capacity in DEVICES.items()},
                   "host_gb_per_process": round(_whole(shape) * PARAM_BYTES / GB, 1) if params == "host" else 0.0})
  return rows


def generation(shape, batch: int, length: int, cache_bytes: int) -> dict[str, float]:
  """Bytes on one device while HumanEval completions are generated: the weights (bfloat16), the KV cache of
  ``batch`` rows of ``length`` positions (longest prompt + new tokens) and one step's logits (float32)."""
  hidden, _, heads, kv, layers, vocab = shape
  items = {"weights": _whole(shape) * PARAM_BYTES,
           "KV cache": batch * length * layers * 2 * kv * (hidden // heads) * cache_bytes,
           "logits": batch * vocab * F32}
  items["total"] = sum(items.values())
  return items


def _whole(shape) -> int:
  return int(per_device(shape, 1, 1, 1, 1, "device")["model (--params device)"] / PARAM_BYTES)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--nsamples", type=int, default=128)
  p.add_argument("--seqlen", type=int, default=2048)
  p.add_argument("--models", nargs="+", default=list(LLAMA_2), choices=list(SHAPES))
  p.add_argument("--gen-batch", type=int, default=64, help="rows per generation batch (eval --gen-batch-size)")
  p.add_argument("--gen-length", type=int, default=1024 + 512,
                 help="cache positions: longest prompt + new tokens (HumanEval chat prompts: under 1024)")
  p.add_argument("--json", default=None)
  args = p.parse_args()
  rows = table(args.nsamples, args.seqlen, tuple(args.models))
  names = list(DEVICES)
  print(f"| model | devices | mesh | --params | block weights (2 with host) | activations | transients | model | **GB per device**"
        f" | fits {names[0]} | fits {names[1]} | host GB per process |")
  print("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |")
  for r in rows:
    g = r["gb"]
    transients = g["attention scores, one chunk"] + g["MLP intermediates"]
    print(f"| {r['model']} | {r['devices']} | {r['mesh']} | {r['params']} | {g['block weights']:.2f} |"
          f" {g['activations (inputs + outputs)']:.2f} | {transients:.2f} | {g['model (--params device)']:.1f} |"
          f" **{g['total']:.1f}** | {'yes' if r['fits'][names[0]] else 'no'} |"
          f" {'yes' if r['fits'][names[1]] else 'no'} | {r['host_gb_per_process']} |")
  print(f"\nGenerating (HumanEval): {args.gen_batch} rows x {args.gen_length} cache positions on one device, GB")
  print("| model | weights (bf16) | KV cache f32 (bf16) | **total f32 (bf16)** | fits H100 80 GB f32 (bf16) |")
  print("| --- | ---: | ---: | ---: | --- |")
  gen = {}
  for name in args.models:
    f32, bf16 = (generation(SHAPES[name], args.gen_batch, args.gen_length, b) for b in (F32, PARAM_BYTES))
    gen[name] = {"float32 cache": {k: round(v / GB, 2) for k, v in f32.items()},
                 "bfloat16 cache": {k: round(v / GB, 2) for k, v in bf16.items()}}
    fits = lambda items: "yes" if items["total"] <= 0.9 * DEVICES["H100 80 GB"] else "no"  # noqa: E731
    print(f"| {name} | {f32['weights'] / GB:.1f} | {f32['KV cache'] / GB:.1f} ({bf16['KV cache'] / GB:.1f}) |"
          f" **{f32['total'] / GB:.1f} ({bf16['total'] / GB:.1f})** | {fits(f32)} ({fits(bf16)}) |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"prune": rows, "generation": {"batch": args.gen_batch, "length": args.gen_length, "gb": gen}},
                f, indent=2)


if __name__ == "__main__":
  main()
