"""Benchmark: jaxprune's masked fine-tuning step against a straightforward PyTorch masked step.

Both sides train the same model (default: the embedded smollm2-135m) with the
same 50% masks and the same batches: only the prunable linears' weights are
trained, AdamW at the same learning rate, the gradient masked before the
optimizer and the weights projected onto the mask after it. The PyTorch side
is what one writes first: transformers' model, ``requires_grad`` only on those
weights, ``torch.optim.AdamW``, ``loss.backward()`` (no gradient
checkpointing). Each side runs in its own subprocess (peak RSS measured
separately); the first ``--warmup-steps`` steps (compilation, allocator
warm-up) are not timed.

  python scripts/bench_finetune.py                        # batch 8 x 256 tokens, 10 timed steps
  python scripts/bench_finetune.py --lora 16              # ours with a masked rank-16 update
  python scripts/bench_finetune.py --out bench_ft.json

The roofline: a training step needs at least ``6 x`` (multiply-adds of the
trainable linears) FLOPs per token (forward, input gradient, weight
gradient), plus the frozen head's forward and input gradient and the causal
attention's three passes; that divided by the machine's fastest float32
matmul (`_roofline.peak_matmul`, XLA's and PyTorch's, each measured in a fresh
process) bounds the tokens/s of any implementation.
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
QUICK_PEAK_SHAPES = ((256, 256, 256), (512, 512, 512))


def _masks(loaded, seed: int = 0) -> dict[str, np.ndarray]:
  """50% masks, exactly half of every row kept (the speed does not depend on which weights)."""
  rng = np.random.default_rng(seed)
  out = {}
  for linear in loaded.spec.linears:
    scores = rng.random(linear.shape)
    keep = np.argsort(scores, axis=1)[:, linear.in_features // 2:]
    mask = np.zeros(linear.shape, bool)
    np.put_along_axis(mask, keep, True, axis=1)
    out[linear.name] = mask
  return out


def train_flops_per_token(loaded, seqlen: int) -> dict[str, float]:
  """FLOPs per token no exact masked training step can skip (2 FLOPs per multiply-add)."""
  from _roofline import attention_key_count

  config = loaded.spec.hf_config.get("text_config", loaded.spec.hf_config)
  heads = int(config["num_attention_heads"])
  head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
  keys = attention_key_count(seqlen, config.get("sliding_window") or None)
  trainable = 6.0 * sum(l.out_features * l.in_features for l in loaded.spec.linears)
  head = 4.0 * loaded.spec.hidden_size * loaded.spec.vocab_size  # frozen: forward + input gradient
  attention = 3 * 2 * 2 * heads * head_dim * keys / seqlen * loaded.spec.num_layers
  return {"trainable": trainable, "head": head, "attention": attention, "total": trainable + head + attention}


def _timed(step_times: list[float], warmup: int, tokens_per_step: int) -> dict:
  steps = np.diff(np.asarray(step_times))[warmup - 1:] if warmup else np.diff(np.asarray(step_times))
  return {"timed_steps": int(steps.size), "step_s_median": float(np.median(steps)),
          "tokens_per_s": float(tokens_per_step / np.median(steps))}


def _worker_ours(args) -> dict:
  import jax

  from jaxprune import converters
  from jaxprune.pruning import masks as masks_lib
  from jaxprune.finetune import TrainConfig, train

  loaded = converters.load_model(args.model)
  masks = dict(np.load(args.masks_file))
  tokens = np.load(args.tokens)
  config = TrainConfig(steps=args.steps, lr=args.lr, batch=args.batch, seqlen=args.seqlen, warmup=0.0,
                       lora=args.lora)
  times = [time.perf_counter()]
  result = train(masks_lib.apply(loaded.model, masks), masks, tokens, config,
                 on_step=lambda done, total, loss: times.append(time.perf_counter()))
  from _bench_util import peak_rss_mib

  return {"losses": list(result.losses), "first_step_s": times[1] - times[0], "peak_rss_mib": peak_rss_mib(),
          "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
          **_timed(times[1:], args.warmup_steps, args.batch * args.seqlen),
          "flops_per_token": train_flops_per_token(loaded, args.seqlen)}


def _worker_torch(args) -> dict:
  import torch
  from transformers import AutoModelForCausalLM

  from jaxprune.converters import builtin

  torch.set_num_threads(os.cpu_count() or 1)
  if builtin.is_builtin(args.model):
    path = builtin.path_of(args.model)
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
  else:
    hf = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  hf = hf.to(device).train()
  masks = {k: torch.as_tensor(v, device=device) for k, v in np.load(args.masks_file).items()}
  params = dict(hf.named_parameters())
  for name, p in params.items():
    p.requires_grad_(name in masks)
  with torch.no_grad():
    for name, m in masks.items():
      params[name].mul_(m)
  trained = [params[name] for name in masks]
  opt = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0)
  tokens = torch.as_tensor(np.load(args.tokens), dtype=torch.long, device=device)
  times, losses = [time.perf_counter()], []
  for i in range(args.steps):
    batch = tokens[i * args.batch:(i + 1) * args.batch]
    loss = hf(input_ids=batch, labels=batch).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trained, 1.0)
    with torch.no_grad():
      for name, m in masks.items():
        params[name].grad.mul_(m)
    opt.step()
    with torch.no_grad():
      for name, m in masks.items():
        params[name].mul_(m)
    losses.append(float(loss))
    times.append(time.perf_counter())
  from _bench_util import peak_rss_mib

  return {"losses": losses, "first_step_s": times[1] - times[0], "peak_rss_mib": peak_rss_mib(),
          "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
          **_timed(times[1:], args.warmup_steps, args.batch * args.seqlen)}


def _worker_peak(args) -> dict:
  from _roofline import isa_peak_gflops, peak_matmul

  shapes = QUICK_PEAK_SHAPES if args.quick_peak else None
  if args.worker == "peak-torch":
    return {"torch": peak_matmul("torch", *([shapes] if shapes else []))}
  return {"jax": peak_matmul("jax", *([shapes] if shapes else [])), "isa_peak_gflops": isa_peak_gflops()}


WORKERS = {"ours": _worker_ours, "torch": _worker_torch, "peak": _worker_peak, "peak-torch": _worker_peak}


def _run(kind: str, args, tmp: Path) -> dict:
  from _bench_util import run_worker

  flags = ["--worker", kind, "--model", args.model, "--masks-file", str(tmp / "masks.npz"),
           "--tokens", str(tmp / "tokens.npy"), "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps),
           "--batch", str(args.batch), "--seqlen", str(args.seqlen), "--lr", str(args.lr), "--lora", str(args.lora)]
  return run_worker(__file__, flags + (["--quick-peak"] if args.quick_peak else []), ROOT)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seqlen", type=int, default=256)
  parser.add_argument("--steps", type=int, default=12, help="steps per side, warm-up steps included")
  parser.add_argument("--warmup-steps", type=int, default=2, help="first steps left out of the timing")
  parser.add_argument("--lr", type=float, default=5e-5)
  parser.add_argument("--lora", type=int, default=0, help="ours: a masked rank-LORA update instead of full training")
  parser.add_argument("--calib", default="python", help="where the batches come from (its calibration side)")
  parser.add_argument("--no-roofline", action="store_true", help="skip the matmul-peak measurement")
  parser.add_argument("--quick-peak", action="store_true", help=argparse.SUPPRESS)  # small shapes, for tests
  parser.add_argument("--out", default=None, help="write the results as JSON here")
  parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
  parser.add_argument("--masks-file", help=argparse.SUPPRESS)
  parser.add_argument("--tokens", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  sys.path.insert(0, str(ROOT))  # the worker is started as a script: the repository's packages and helpers
  sys.path.insert(0, str(ROOT / "scripts"))
  if args.worker:
    print(json.dumps(WORKERS[args.worker](args)))
    return {}
  if args.steps <= args.warmup_steps:
    sys.exit(f"--steps {args.steps} must exceed --warmup-steps {args.warmup_steps}")
  from jaxprune import converters
  from jaxprune import calibration

  loaded = converters.load_model(args.model)
  with tempfile.TemporaryDirectory() as tmp_name:
    tmp = Path(tmp_name)
    np.savez(tmp / "masks.npz", **_masks(loaded))
    np.save(tmp / "tokens.npy", calibration.sample(args.calib, loaded.tokenizer, args.steps * args.batch,
                                                   args.seqlen, 0))
    ours, ref = _run("ours", args, tmp), _run("torch", args, tmp)
    peak = None if args.no_roofline else {**_run("peak", args, tmp), **_run("peak-torch", args, tmp)}
  report = {"model": args.model, "batch": args.batch, "seqlen": args.seqlen, "steps": args.steps,
            "warmup_steps": args.warmup_steps, "lora": args.lora, "jaxprune": ours, "pytorch": ref,
            "speedup": ours["tokens_per_s"] / ref["tokens_per_s"], "cpu_count": os.cpu_count(),
            "load_average_at_end": os.getloadavg()}
  if peak is not None:
    best = max(max(peak["jax"].values()), max(peak["torch"].values()))
    flops = ours["flops_per_token"]["total"]
    report["roofline"] = {"matmul_gflops": {fw: peak[fw] for fw in ("jax", "torch")}, "peak_gflops": best,
                          "isa_peak_gflops": peak["isa_peak_gflops"], "max_tokens_per_s": best * 1e9 / flops,
                          "jaxprune_of_roofline": ours["tokens_per_s"] * flops / (best * 1e9),
                          "pytorch_of_roofline": ref["tokens_per_s"] * flops / (best * 1e9)}
  _print(report)
  if args.out:
    Path(args.out).write_text(json.dumps(report, indent=2))
  return report


def _print(r: dict) -> None:
  print(f"{'side':<10} {'tokens/s':>10} {'step s':>8} {'first step s':>13} {'peak RSS MiB':>13}  device")
  for side in ("jaxprune", "pytorch"):
    s = r[side]
    print(f"{side:<10} {s['tokens_per_s']:>10.1f} {s['step_s_median']:>8.3f} {s['first_step_s']:>13.1f}"
          f" {s['peak_rss_mib']:>13.0f}  {s['device']}")
  print(f"jaxprune / pytorch: {r['speedup']:.2f}x (batch {r['batch']} x {r['seqlen']} tokens,"
        f" {r['jaxprune']['timed_steps']} timed steps; load average at the end {r['load_average_at_end'][0]:.1f})")
  if "roofline" in r:
    f = r["roofline"]
    print(f"roofline: fastest float32 matmul {f['peak_gflops']:.0f} GFLOP/s,"
          f" {r['jaxprune']['flops_per_token']['total'] / 1e9:.2f} GFLOP per token"
          f" -> at most {f['max_tokens_per_s']:.0f} tokens/s; jaxprune at {f['jaxprune_of_roofline']:.0%},"
          f" pytorch at {f['pytorch_of_roofline']:.0%}")


if __name__ == "__main__":
  main()
