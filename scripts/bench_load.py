"""Benchmark: loading time and peak memory, jaxprune vs transformers, side by side.

Loads the embedded smollm2-135m (GGUF) and two HF safetensors folders made
from it once (float32 and bfloat16) with jaxprune's streaming converter
(parameters on the default device, and with ``params="host"`` in host memory)
and with transformers' own loader (in the folder's dtype), each load in a
fresh subprocess so that its peak RSS is its own. The goal is a peak RSS
growth during load of at most 1.3x the checkpoint's size (for GGUF the
dequantized float32 size is what must fit).

  python scripts/bench_load.py [--model smollm2-135m] [--out bench_load.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _worker(loader: str, source: str, warmup: str | None = None) -> dict:
  if loader.startswith("jaxprune"):
    import jax  # noqa: F401  (imports count as baseline, not as load)

    import transformers  # noqa: F401  (used for config and tokenizer)

    from jaxprune import converters
    import jaxprune.converters.gguf_io  # noqa: F401
  else:
    import torch
    import transformers  # noqa: F401
  from _bench_util import peak_rss_mib
  from transformers import AutoConfig

  AutoConfig.for_model("llama")  # both loaders: library code imported before the baseline
  if loader.startswith("jaxprune"):
    jax.devices()  # the backend's start-up is not loading
    if warmup:  # code paths (tokenizer libraries, penzai's builders) are imports too, not loading
      converters.load_model(warmup, params="host")
  baseline = peak_rss_mib()
  t0 = time.perf_counter()
  if loader.startswith("jaxprune"):
    loaded = converters.load_model(source, params="host" if loader == "jaxprune-host" else "device")
    n = loaded.spec.num_parameters
  else:
    from transformers import AutoModelForCausalLM

    path = Path(source)
    if path.suffix == ".gguf":
      model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    else:  # in the folder's own dtype, as jaxprune loads it
      model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    n = sum(p.numel() for p in model.parameters())
  seconds = time.perf_counter() - t0
  return {"seconds": seconds, "baseline_mib": baseline, "peak_mib": peak_rss_mib(), "parameters": n}


def _measure(loader: str, source: str) -> dict:
  from _bench_util import run_worker

  row = run_worker(__file__, ["--worker", loader, "--source", source], ROOT)
  row["load_growth_mib"] = row["peak_mib"] - row["baseline_mib"]
  return row


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--out", default=None)
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  parser.add_argument("--source", help=argparse.SUPPRESS)
  parser.add_argument("--warmup", help="a tiny model folder loaded before the baseline (jaxprune workers)")
  args = parser.parse_args()
  sys.path.insert(0, str(ROOT))
  sys.path.insert(0, str(ROOT / "scripts"))
  if args.worker:
    print(json.dumps(_worker(args.worker, args.source, args.warmup)))
    return

  from jaxprune import converters
  from jaxprune.converters import builtin

  gguf = str(builtin.path_of(args.model)) if builtin.is_builtin(args.model) else args.model
  work = Path(tempfile.mkdtemp(prefix="bench_load."))
  folders = {"hf-safetensors": (work / "hf", None), "hf-safetensors-bf16": (work / "hf-bf16", "bfloat16")}
  for folder, dtype in folders.values():  # children measure their own peak
    converters.export_hf(converters.load_model(args.model, dtype=dtype), folder)
  sources = {"gguf": (gguf, Path(gguf).stat().st_size)}
  sources.update({kind: (str(folder), sum(p.stat().st_size for p in folder.glob("*.safetensors")))
                  for kind, (folder, _) in folders.items()})
  rows = []
  for kind, (source, size) in sources.items():
    for loader in ("jaxprune", "jaxprune-host", "transformers"):
      row = _measure(loader, source)
      dense = row["parameters"] * 4 / 2**20
      row.update(kind=kind, loader=loader, checkpoint_mib=size / 2**20, float32_mib=dense,
                 growth_over_float32=row["load_growth_mib"] / dense,
                 growth_over_checkpoint=row["load_growth_mib"] / (size / 2**20))
      rows.append(row)
  print(f"\nLoading {args.model}: float32 weights = {rows[0]['float32_mib']:.0f} MiB\n")
  print(f"{'checkpoint':<20}{'loader':<15}{'file MiB':>9}{'load s':>8}{'peak MiB':>10}{'growth MiB':>12}"
        f"{'growth/f32':>12}{'growth/file':>12}")
  for r in rows:
    print(f"{r['kind']:<20}{r['loader']:<15}{r['checkpoint_mib']:>9.0f}{r['seconds']:>8.1f}{r['peak_mib']:>10.0f}"
          f"{r['load_growth_mib']:>12.0f}{r['growth_over_float32']:>12.2f}{r['growth_over_checkpoint']:>12.2f}")
  print("\ngrowth = peak RSS minus RSS after imports; goal: jaxprune growth <= 1.3x the checkpoint"
        " (for GGUF: its float32 size)")
  if args.out:
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
  main()
