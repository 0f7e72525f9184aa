"""Time and measured peak device memory of a Wanda prune of a random-init Llama-2-shaped model.

No downloads: the weights are random bfloat16 arrays, generated tensor by tensor
into jaxprune's own loader (`converters.loading.bind` with an in-memory
source), so the model is built exactly as ``jaxprune prune --model FOLDER``
would build it, with ``--params host`` or ``--params device``. The tokens are
random. Prints one JSON line: seconds, run.json's ``memory`` entry (peak device
bytes per device, peak parameter bytes, peak host RSS) and the mesh.

  python scripts/bench_memory.py --shape llama-2-7b --params host --nsamples 128 --seqlen 2048
  python scripts/bench_memory.py --shape llama-2-70b --layers 4 --params host --mesh data=4,model=2
  python scripts/bench_memory.py --shape tiny --layers 12 --nsamples 8 --seqlen 64   # a CPU check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memory_arithmetic import SHAPES  # scripts/ is on the path of a script

ALL_SHAPES = {**SHAPES, "tiny": (64, 160, 4, 2, 12, 512)}


class RandomSource:
  """A `converters.sources.TensorSource` of seeded random tensors in a given dtype."""

  def __init__(self, shapes: dict[str, tuple[int, ...]], dtype, seed: int = 0):
    self._shapes, self._dtype, self._seed = shapes, np.dtype(dtype), seed

  def names(self) -> list[str]:
    return sorted(self._shapes)

  def shape(self, name: str) -> tuple[int, ...]:
    return self._shapes[name]

  def get(self, name: str) -> np.ndarray:
    rng = np.random.default_rng([self._seed, sorted(self._shapes).index(name)])
    shape = self._shapes[name]
    if len(shape) == 1:  # norm scales
      return np.ones(shape, self._dtype)
    scale = np.float32(shape[-1] ** -0.5)  # unit-variance outputs, as an initializer would give
    return (rng.standard_normal(shape, np.float32) * scale).astype(self._dtype)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--shape", choices=sorted(ALL_SHAPES), default="llama-2-7b")
  p.add_argument("--layers", type=int, default=None, help="decoder blocks (default: the real model's)")
  p.add_argument("--nsamples", type=int, default=128)
  p.add_argument("--seqlen", type=int, default=2048)
  p.add_argument("--params", choices=["host", "device"], default="host")
  p.add_argument("--mesh", default=None, help="data=D,model=M (default: every device on data)")
  p.add_argument("--microbatch", type=int, default=None)
  p.add_argument("--out", default=None, help="append the JSON line to this file")
  args = p.parse_args()

  import jax
  import ml_dtypes
  from transformers import LlamaConfig

  from jaxprune import converters
  from jaxprune.converters import families
  from jaxprune.converters.loading import bind
  from jaxprune import pruning

  hidden, mlp, heads, kv, layers, vocab = ALL_SHAPES[args.shape]
  config = LlamaConfig(hidden_size=hidden, intermediate_size=mlp, num_attention_heads=heads,
                       num_key_value_heads=kv, num_hidden_layers=args.layers or layers, vocab_size=vocab,
                       max_position_embeddings=max(4096, args.seqlen), dtype="bfloat16")
  shapes = {name: families.hf_shape(layout) for name, layout in families.layouts(config).items()}
  source = RandomSource(shapes, ml_dtypes.bfloat16)
  t0 = time.perf_counter()
  model, count = bind(config, source, dtype="bfloat16", params=args.params)
  load_s = time.perf_counter() - t0
  loaded = converters.LoadedModel(model, None, families.model_spec(config, num_parameters=count), config,
                                  f"random {args.shape}", "random")
  tokens = np.random.default_rng(0).integers(0, vocab, (args.nsamples, args.seqlen), dtype=np.int32)
  mesh = pruning.MeshConfig.parse(args.mesh).build()
  t0 = time.perf_counter()
  result = pruning.prune(loaded, tokens, pruning.PruneConfig(microbatch=args.microbatch), mesh=mesh)
  seconds = time.perf_counter() - t0
  row = {"shape": args.shape, "layers": config.num_hidden_layers, "parameters": count, "params": result.params,
         "dtypes": result.dtypes, "tokens": [args.nsamples, args.seqlen], "mesh": result.mesh,
         "microbatch": result.microbatch, "devices": [str(d) for d in jax.devices()],
         "load_seconds": round(load_s, 2), "prune_seconds": round(seconds, 2),
         "timings": {k: round(v, 2) for k, v in result.timings.items()}, "memory": result.memory}
  line = json.dumps(row)
  print(line)
  if args.out:
    with open(args.out, "a") as f:
      f.write(line + "\n")


if __name__ == "__main__":
  main()
