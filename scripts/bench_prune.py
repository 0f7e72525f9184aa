"""Benchmark: jaxprune's Wanda vs a PyTorch port of the official code, side by side.

Both prune the same model (default: the embedded smollm2-135m) with the same
calibration tokens, each in its own subprocess so that peak RSS is measured
separately; the reference is upstream's algorithm (forward hooks on nn.Linear,
samples one at a time) from tests/reference_wanda.py, run on transformers'
own load of the same checkpoint.

  python scripts/bench_prune.py                 # 128 x 512 tokens (the paper's nsamples)
  python scripts/bench_prune.py --quick         # 16 x 256 tokens
  python scripts/bench_prune.py --out bench.json
  python scripts/bench_prune.py --quick --dtype float64   # mask agreement without float32 rounding
  python scripts/bench_prune.py --repeats 2 --unchunked   # alternate the sides twice; also penzai's attention
  python scripts/bench_prune.py --random llama-7b --layers 4 --seqlen 2048   # on a GPU: 7B shapes

With ``--random CONFIG`` both sides prune a random-init Llama of that shape
(saved once as an HF folder) on random tokens: speed depends only on shapes,
so a few layers of a 7B config time a 7B model's per-block cost without its
weights. Each side uses its framework's accelerator when there is one (JAX's
default backend; torch.cuda), in full float32 (no TF32) on both.

Prints a table (wall time, peak RSS, calibration tokens/s, ratio, mask
agreement) and writes it as JSON. A third worker measures the machine's
fastest float32 matmul in both frameworks; with the FLOPs an exact prune
cannot avoid (`_roofline.min_flops`) that bounds the prune time of any
implementation, and so the largest speed-up over the reference this machine
allows (``--no-roofline`` skips it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# Llama shapes for --random (vocabulary and context as the real models have).
RANDOM_CONFIGS = {
    "tiny": dict(hidden_size=64, intermediate_size=160, num_attention_heads=4, num_key_value_heads=2,
                 vocab_size=512, max_position_embeddings=4096),
    "llama-7b": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                     vocab_size=32000, max_position_embeddings=4096),
}


def _random_model(name: str, layers: int, folder: Path) -> str:
  """Save a random-init Llama of a named shape as an HF folder (seeded, so both sides read the same weights)."""
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM

  torch.manual_seed(0)
  config = LlamaConfig(num_hidden_layers=layers, **RANDOM_CONFIGS[name])
  with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
    model = LlamaForCausalLM(config)
  model.save_pretrained(folder)
  return str(folder)


def _accelerator_peak_mib(framework: str) -> float | None:
  """Peak accelerator memory of this process, or None on CPU."""
  if framework == "jax":
    import jax

    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    return stats["peak_bytes_in_use"] / 2**20 if stats else None
  import torch

  return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def _worker_ours(model: str, tokens_path: str, out: str, dtype: str, attention_chunk: int | None = None) -> dict:
  import jax

  jax.config.update("jax_enable_x64", dtype == "float64")
  jax.config.update("jax_default_matmul_precision", "highest")  # no TF32 on GPUs: the reference has none
  from jaxprune import converters
  from jaxprune import pruning

  t0 = time.perf_counter()
  loaded = converters.load_model(model, dtype=dtype, activation_dtype=jax.numpy.dtype(dtype))
  t1 = time.perf_counter()
  tokens = np.load(tokens_path)
  chunk = pruning.PruneConfig().attention_chunk if attention_chunk is None else attention_chunk
  result = pruning.prune(loaded, tokens, config=pruning.PruneConfig(sparsity=0.5, attention_chunk=chunk))
  t2 = time.perf_counter()
  np.savez(out, **{k: np.packbits(v, axis=-1) for k, v in result.masks.items()})
  from _bench_util import peak_rss_mib
  from _roofline import min_flops

  config = loaded.spec.hf_config.get("text_config", loaded.spec.hf_config)
  linears = [(l.block, l.name, l.out_features, l.in_features) for l in loaded.spec.linears]
  return {"load_s": t1 - t0, "prune_s": t2 - t1, "phases": result.timings, "peak_rss_mib": peak_rss_mib(),
          "device": jax.devices()[0].device_kind, "peak_device_mib": _accelerator_peak_mib("jax"),
          "microbatch": result.microbatch, "attention_chunk": chunk, "min_flops": min_flops(linears, config, *tokens.shape)}


def _worker_peak(dtype: str) -> dict:
  """Best matmul GFLOP/s of each framework, each in a fresh process of its own."""
  from _roofline import isa_peak_gflops, peak_matmul

  del dtype
  return {"jax": peak_matmul("jax"), "isa_peak_gflops": isa_peak_gflops()}


def _worker_peak_torch(dtype: str) -> dict:
  from _roofline import peak_matmul

  del dtype
  return {"torch": peak_matmul("torch")}


def _worker_reference(model: str, tokens_path: str, out: str, dtype: str) -> dict:
  import torch
  from transformers import AutoModelForCausalLM

  from jaxprune.converters import builtin
  from tests.reference_wanda import prune_wanda

  torch.set_num_threads(os.cpu_count() or 1)
  t0 = time.perf_counter()
  if builtin.is_builtin(model):
    path = builtin.path_of(model)
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=getattr(torch, dtype)).eval()
  else:
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).eval()
  device = "cuda" if torch.cuda.is_available() else "cpu"
  hf = hf.to(device)
  t1 = time.perf_counter()
  masks, _ = prune_wanda(hf, np.load(tokens_path), 0.5)  # returns host arrays: the device is done
  t2 = time.perf_counter()
  np.savez(out, **{k: np.packbits(v, axis=-1) for k, v in masks.items()})
  from _bench_util import peak_rss_mib

  return {"load_s": t1 - t0, "prune_s": t2 - t1, "peak_rss_mib": peak_rss_mib(),
          "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
          "peak_device_mib": _accelerator_peak_mib("torch")}


def _run_worker(kind: str, model: str, tokens_path: str, masks_out: str, dtype: str) -> dict:
  from _bench_util import run_worker

  return run_worker(__file__, ["--worker", kind, "--model", model, "--tokens", tokens_path,
                               "--masks-out", masks_out, "--dtype", dtype], ROOT)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--nsamples", type=int, default=128)
  parser.add_argument("--seqlen", type=int, default=512)
  parser.add_argument("--calib", default="python")
  parser.add_argument("--quick", action="store_true", help="16 x 256 tokens")
  parser.add_argument("--random", choices=sorted(RANDOM_CONFIGS), help="a random-init Llama of this shape, random tokens")
  parser.add_argument("--layers", type=int, default=4, help="decoder layers of the --random model")
  parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                      help="weights and activations of both sides (float64: agreement without float32 rounding)")
  parser.add_argument("--out", default=None, help="write the table as JSON here")
  parser.add_argument("--no-roofline", action="store_true", help="skip the matmul-peak measurement")
  parser.add_argument("--repeats", type=int, default=1,
                      help="run the sides alternately this many times and keep each side's fastest (noisy machines)")
  parser.add_argument("--unchunked", action="store_true",
                      help="also time jaxprune with penzai's attention unchanged (--attention-chunk 0)")
  parser.add_argument("--worker", choices=["ours", "ours-unchunked", "reference", "peak", "peak-torch"],
                      help=argparse.SUPPRESS)
  parser.add_argument("--tokens", help=argparse.SUPPRESS)
  parser.add_argument("--masks-out", help=argparse.SUPPRESS)
  args = parser.parse_args()
  sys.path.insert(0, str(ROOT))
  sys.path.insert(0, str(ROOT / "scripts"))

  if args.worker in ("peak", "peak-torch"):
    print(json.dumps((_worker_peak if args.worker == "peak" else _worker_peak_torch)(args.dtype)))
    return
  if args.worker == "ours-unchunked":
    print(json.dumps(_worker_ours(args.model, args.tokens, args.masks_out, args.dtype, attention_chunk=0)))
    return
  if args.worker:
    fn = _worker_ours if args.worker == "ours" else _worker_reference
    print(json.dumps(fn(args.model, args.tokens, args.masks_out, args.dtype)))
    return

  if args.quick:
    args.nsamples, args.seqlen = 16, 256
  from jaxprune import converters
  from jaxprune import calibration

  tmp = Path(tempfile.mkdtemp(prefix="bench_prune."))
  if args.random:
    args.model = _random_model(args.random, args.layers, tmp / "model")
    vocab = RANDOM_CONFIGS[args.random]["vocab_size"]
    tokens = np.random.default_rng(0).integers(0, vocab, (args.nsamples, args.seqlen), dtype=np.int32)
    args.calib = "random tokens"
  else:
    loaded = converters.load_model(args.model)
    tokens = calibration.sample(args.calib, loaded.tokenizer, args.nsamples, args.seqlen, seed=0)
    del loaded
  np.save(tmp / "tokens.npy", tokens)

  kinds = {"ours": "ours", "reference": "ref"} | ({"ours-unchunked": "unchunked"} if args.unchunked else {})
  fastest: dict[str, dict] = {}
  for _ in range(max(1, args.repeats)):  # alternate the sides, so drifting machine speed hits both
    for kind, stem in kinds.items():
      row = _run_worker(kind, args.model, str(tmp / "tokens.npy"), str(tmp / f"{stem}.npz"), args.dtype)
      if kind not in fastest or row["prune_s"] < fastest[kind]["prune_s"]:
        fastest[kind] = row
  ours, ref = fastest["ours"], fastest["reference"]
  unchunked = fastest.get("ours-unchunked")
  roofline = None if args.no_roofline else _roofline_table(ours, ref)
  a, b = np.load(tmp / "ours.npz"), np.load(tmp / "ref.npz")
  same = sum(int(np.array_equal(a[k], b[k])) for k in b.files)
  differ = [k for k in b.files if not np.array_equal(a[k], b[k])]
  first_block = min((int(k.split(".")[2]) for k in differ), default=None)
  total_bits = sum(np.unpackbits(b[k]).size for k in b.files)
  differing = sum(int(np.unpackbits(a[k] ^ b[k]).sum()) for k in b.files)
  n_tok = args.nsamples * args.seqlen
  table = {
      "model": f"random {args.random}, {args.layers} layers" if args.random else args.model,
      "calibration": f"{args.calib} {args.nsamples} x {args.seqlen}",
      "dtype": args.dtype,
      "cpu_count": os.cpu_count(),
      "jaxprune": {**ours, "tokens_per_s": n_tok / ours["prune_s"]},
      "reference_pytorch": {**ref, "tokens_per_s": n_tok / ref["prune_s"]},
      "repeats": max(1, args.repeats),
      "speedup_prune": ref["prune_s"] / ours["prune_s"],
      "identical_matrices": f"{same}/{len(b.files)}",
      "differing_weights_fraction": differing / total_bits,
      "first_block_with_a_difference": first_block,
      "roofline": roofline,
  }
  if unchunked:
    c = np.load(tmp / "unchunked.npz")
    table["jaxprune_unchunked_attention"] = {**unchunked, "tokens_per_s": n_tok / unchunked["prune_s"]}
    table["speedup_of_chunked_attention"] = unchunked["prune_s"] / ours["prune_s"]
    table["unchunked_identical_to_chunked"] = f"{sum(int(np.array_equal(a[k], c[k])) for k in a.files)}/{len(a.files)}"
  print(f"\nWanda on {table['model']}, calibration {table['calibration']}, {args.dtype}, {os.cpu_count()} CPU cores\n")
  print(f"{'':<22}{'prune s':>10}{'load s':>9}{'peak RSS MiB':>14}{'device MiB':>12}{'calib tok/s':>13}  device")
  rows = [("jaxprune (JAX)", table["jaxprune"]), ("official (PyTorch)", table["reference_pytorch"])]
  if unchunked:
    rows.insert(1, ("jaxprune, unchunked", table["jaxprune_unchunked_attention"]))
  for name, row in rows:
    device_mib = f"{row['peak_device_mib']:.0f}" if row["peak_device_mib"] is not None else "–"
    print(f"{name:<22}{row['prune_s']:>10.1f}{row['load_s']:>9.1f}{row['peak_rss_mib']:>14.0f}{device_mib:>12}"
          f"{row['tokens_per_s']:>13.0f}  {row['device']}")
  print(f"\nspeed-up (prune time): {table['speedup_prune']:.2f}x;"
        f" identical masks: {table['identical_matrices']} matrices,"
        f" {table['differing_weights_fraction']:.2e} of weights differ"
        + (f" (from block {first_block} on)" if first_block is not None else ""))
  if unchunked:
    print(f"chunked attention's speed-up over penzai's: {table['speedup_of_chunked_attention']:.2f}x;"
          f" identical masks {table['unchunked_identical_to_chunked']}")
  if args.repeats > 1:
    print(f"(each side's fastest of {args.repeats} alternating runs)")
  if roofline:
    _print_roofline(roofline)
  if args.out:
    Path(args.out).write_text(json.dumps(table, indent=2))


def _roofline_table(ours: dict, ref: dict) -> dict:
  """Peak matmul rates, the FLOP floor and what they allow, for the table."""
  peak = _run_worker("peak", "", "", "", "float32")
  peak.update(_run_worker("peak-torch", "", "", "", "float32"))
  best = {fw: max(peak[fw].values()) for fw in ("jax", "torch")}
  peak_gflops = max(best.values())
  flops = ours["min_flops"]["total"]
  floor_s = flops / (peak_gflops * 1e9)
  return {
      "matmul_gflops": {fw: peak[fw] for fw in ("jax", "torch")},
      "peak_gflops": peak_gflops,
      "isa_peak_gflops": peak["isa_peak_gflops"],
      "min_flops": ours["min_flops"],
      "floor_s": floor_s,
      "jaxprune_gflops": flops / ours["prune_s"] / 1e9,
      "reference_gflops": flops / ref["prune_s"] / 1e9,
      "max_speedup_over_reference": ref["prune_s"] / floor_s,
  }


def _print_roofline(r: dict) -> None:
  fw = {k: max(v.values()) for k, v in r["matmul_gflops"].items()}
  isa = f"; nominal ISA peak {r['isa_peak_gflops']:.0f}" if r["isa_peak_gflops"] else ""
  print(f"\nroofline: fastest float32 matmul {fw['jax']:.0f} GFLOP/s (XLA), {fw['torch']:.0f} (PyTorch){isa};"
        f" an exact prune needs at least {r['min_flops']['total'] / 1e12:.2f} TFLOP"
        f" -> no implementation beats {r['floor_s']:.1f} s here")
  print(f"  useful GFLOP/s: jaxprune {r['jaxprune_gflops']:.0f} ({r['jaxprune_gflops'] / r['peak_gflops']:.0%} of peak),"
        f" reference {r['reference_gflops']:.0f} ({r['reference_gflops'] / r['peak_gflops']:.0%});"
        f" the most any implementation could gain over the reference: {r['max_speedup_over_reference']:.2f}x")


if __name__ == "__main__":
  main()
