"""How fast *any* exact Wanda implementation can be on this machine.

A prune is two forward passes per decoder block over the calibration tokens
(statistics from the dense block, then the pruned block's outputs for the
next). Its time is bounded below by the arithmetic it cannot skip divided by
the fastest matrix multiplication the machine sustains. Both numbers are
computed here: `min_flops` from the model's shapes, `peak_matmul` measured with
each framework's own kernels (XLA's and PyTorch's), so a speed-up goal can be
checked against what the hardware allows before anyone tunes for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# Matmul shapes [m, k, n] timed for the peak: big squares and the linears of
# SmolLM2 / a 7B Llama at a micro-batch of tokens.
PEAK_SHAPES = ((2048, 2048, 2048), (4096, 4096, 4096), (512, 576, 1536), (512, 1536, 576), (4096, 4096, 11008))


def attention_key_count(seqlen: int, window: int | None) -> int:
  """Keys all queries of one causal sequence must see: sum_t min(t + 1, window)."""
  if not window or window >= seqlen:
    return seqlen * (seqlen + 1) // 2
  return window * (window + 1) // 2 + (seqlen - window) * window


def min_flops(linears: Sequence[tuple[int, str, int, int]], hf_config: Mapping[str, Any],
              n: int, seqlen: int) -> dict[str, float]:
  """Multiply-add FLOPs an exact sequential Wanda prune cannot avoid.

  Args:
    linears: (block, HF name, out_features, in_features) of every prunable linear.
    hf_config: the model's HF config (heads, head_dim, sliding window).
    n, seqlen: calibration sequences and tokens per sequence.

  Returns:
    ``statistics_pass``: every block's dense forward without its last linear
    (``down_proj``: its output feeds no statistic); ``pruned_pass``: every
    block but the last (its outputs feed nothing); ``total``. Attention counts
    only the causal (and sliding-window) part of the scores; norms, softmax and
    activations are left out, so the bound is optimistic.
  """
  tokens = n * seqlen
  heads = int(hf_config.get("num_attention_heads") or 0)
  head_dim = int(hf_config.get("head_dim") or hf_config["hidden_size"] // heads)
  window = hf_config.get("sliding_window")
  keys = attention_key_count(seqlen, window if window else None)
  attention = 2 * 2 * heads * head_dim * keys * n  # q.k and p.v, 2 FLOPs a multiply-add
  blocks: dict[int, dict[str, int]] = {}
  for block, name, out_f, in_f in linears:
    blocks.setdefault(block, {})[name] = 2 * out_f * in_f * tokens
  last = max(blocks)
  statistics = sum(attention + sum(f for name, f in fl.items() if "down_proj" not in name) for fl in blocks.values())
  pruned = sum(attention + sum(fl.values()) for b, fl in blocks.items() if b != last)
  return {"statistics_pass": float(statistics), "pruned_pass": float(pruned), "total": float(statistics + pruned)}


def _best_rate(run: Callable[[], None], flops: float, repeats: int) -> float:
  run()  # compile / warm the caches
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - t0)
  return flops / best


def peak_matmul(framework: str, shapes: Sequence[tuple[int, int, int]] = PEAK_SHAPES,
                repeats: int = 5) -> dict[str, float]:
  """Best float32 matmul GFLOP/s of ``jax`` or ``torch`` per shape, on all cores."""
  rates = {}
  if framework == "jax":
    import jax
    import jax.numpy as jnp

    matmul = jax.jit(lambda a, b: a @ b)
    for m, k, n in shapes:
      a = jax.random.normal(jax.random.key(0), (m, k), jnp.float32)
      b = jax.random.normal(jax.random.key(1), (k, n), jnp.float32)
      rates[f"{m}x{k}x{n}"] = _best_rate(lambda: matmul(a, b).block_until_ready(), 2.0 * m * k * n, repeats) / 1e9
  else:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    generator = torch.Generator().manual_seed(0)
    for m, k, n in shapes:
      a = torch.randn(m, k, generator=generator)
      b = torch.randn(k, n, generator=generator)
      with torch.no_grad():
        rates[f"{m}x{k}x{n}"] = _best_rate(lambda: torch.mm(a, b), 2.0 * m * k * n, repeats) / 1e9
  return rates


def isa_peak_gflops() -> float | None:
  """Nominal float32 peak from /proc/cpuinfo: cores x MHz x FLOP/cycle (2 FMA pipes).

  The clock is the one the kernel reports (under a hypervisor, usually the
  base clock; boost can be higher), so this is a reference point, not a bound.
  """
  try:
    info = open("/proc/cpuinfo").read()
  except OSError:
    return None
  mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
  flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
  lanes = 16 if " avx512f" in flags else 8 if " avx2" in flags else 4
  if not mhz:
    return None
  return len(mhz) * (sum(mhz) / len(mhz)) * 1e6 * lanes * 2 * 2 / 1e9
