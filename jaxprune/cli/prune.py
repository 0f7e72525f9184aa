"""`jaxprune prune`: flags -> `PruneConfig` and calibration tokens -> `runs.prune_run`."""

from __future__ import annotations

import argparse
import sys

from jaxprune.cli.common import DEFAULT_MODEL, add_distributed, distributed_config, progress


def add(sub) -> None:
  from jaxprune.pruning import methods
  from jaxprune.pruning import PruneConfig

  d = PruneConfig()  # the flags' defaults are the config's
  p = sub.add_parser("prune", help="prune a model with domain calibration data (Wanda by default)")
  p.add_argument("--model", default=DEFAULT_MODEL, help="HF folder, .gguf file or built-in name (default: %(default)s)")
  p.add_argument("--calib", default=None,
                 help="calibration domain (python, java, cpp, javascript, english, ...), hf:NAME, or a text file/folder"
                 f" (default: {CALIBRATION_DEFAULTS['calib']})")
  p.add_argument("--calib-tokens", default=None,
                 help="explicit calibration tokens: a .npy int array [n, seqlen] (instead of --calib, --nsamples, --seqlen)")
  p.add_argument("--sparsity", type=float, default=d.sparsity, help="fraction of weights pruned (unstructured)")
  p.add_argument("--pattern", default=d.pattern, help="unstructured, or N:M such as 2:4 or 4:8")
  p.add_argument("--method", default=d.method,
                 help="; ".join(f"{m.name}: {m.doc}" if m.doc else m.name for m in methods.REGISTRY.values())
                 + " (default: %(default)s)")
  p.add_argument("--nsamples", type=int, default=None,
                 help=f"calibration sequences (default: {CALIBRATION_DEFAULTS['nsamples']})")
  p.add_argument("--seqlen", type=int, default=None,
                 help=f"tokens per calibration sequence (default: {CALIBRATION_DEFAULTS['seqlen']})")
  p.add_argument("--seed", type=int, default=0, help="seed of the calibration sample")
  p.add_argument("--no-sequential", dest="sequential", action="store_false", default=d.sequential,
                 help="take every statistic from the dense model in one pass")
  p.add_argument("--allocation", default=d.allocation, choices=["uniform", "owl"],
                 help="per-block sparsity: uniform, or OWL's outlier-weighted allocation")
  p.add_argument("--owl-m", type=float, default=d.owl_m, help="OWL outlier threshold M (default: %(default)s)")
  p.add_argument("--owl-lambda", type=float, default=d.owl_lambda,
                 help="OWL band: block sparsity within s +- lambda (default: %(default)s)")
  p.add_argument("--per-row", action="store_true", default=d.per_row,
                 help="magnitude: one threshold per row, not per matrix")
  p.add_argument("--microbatch", type=int, default=d.microbatch,
                 help="sequences per compiled step (bounds memory); default: 8 on accelerators, on CPUs sized to the caches")
  p.add_argument("--attention-chunk", type=int, default=d.attention_chunk,
                 help="queries per chunk of causal attention in the calibration passes (0: unchunked; default: %(default)s)")
  p.add_argument("--dtype", default=None, help="parameter dtype (float32, bfloat16, float16); default: the checkpoint's")
  p.add_argument("--params", default=None, choices=["host", "device"],
                 help="where the model's parameters live: host (host memory, one block at a time on the devices)"
                 " or device; default: host unless the default device is the CPU")
  p.add_argument("--mesh", default=None, metavar="data=D,model=M",
                 help="device mesh: calibration batches split over data, each block's weights over model"
                 " (heads, MLP neurons); default: every device on data")
  p.add_argument("--out", required=True, help="run directory to write (masks + run.json)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
  add_distributed(p)
  p.set_defaults(func=run)


CALIBRATION_DEFAULTS = {"calib": "python", "nsamples": 128, "seqlen": 512}
"""What --calib, --nsamples and --seqlen mean when not given (and --calib-tokens is not either)."""


def _calibration_flags(args) -> argparse.Namespace:
  """``args`` with the defaults of --calib, --nsamples, --seqlen filled in; refuses --calib-tokens beside them."""
  from jaxprune.errors import JaxpruneError

  given = [name for name in CALIBRATION_DEFAULTS if getattr(args, name) is not None]
  if args.calib_tokens and given:
    flags = ", ".join(f"--{name}" for name in given)
    raise JaxpruneError(f"--calib-tokens gives the calibration sequences (its array's shape sets their number and"
                        f" length): drop {flags}, or drop --calib-tokens")
  if args.calib_tokens:
    return args
  filled = {name: default if getattr(args, name) is None else getattr(args, name)
            for name, default in CALIBRATION_DEFAULTS.items()}
  return argparse.Namespace(**{**vars(args), **filled})


def _calibration_tokens(args, loaded):
  """(tokens [n, seqlen], provenance) from --calib-tokens or --calib."""
  import numpy as np

  from jaxprune import calibration
  from jaxprune.errors import JaxpruneError

  if args.calib_tokens:
    try:
      tokens = np.load(args.calib_tokens)
    except (OSError, ValueError) as err:
      raise JaxpruneError(f"--calib-tokens {args.calib_tokens} is not a readable .npy file ({err})") from None
    return tokens, {"source": "tokens-file", "path": str(args.calib_tokens)}
  if args.nsamples < 1:
    raise JaxpruneError(f"--nsamples {args.nsamples} must be at least 1")
  if args.seqlen < 2:
    raise JaxpruneError(f"--seqlen {args.seqlen} must be at least 2")
  if args.seqlen > loaded.spec.max_positions:
    raise JaxpruneError(
        f"--seqlen {args.seqlen} exceeds the model's context of {loaded.spec.max_positions}:"
        f" use --seqlen {loaded.spec.max_positions} or less"
    )
  if loaded.tokenizer is None:
    raise JaxpruneError(f"{args.model} has no tokenizer files: pass --calib-tokens FILE.npy instead")
  tokens = calibration.sample(args.calib, loaded.tokenizer, args.nsamples, args.seqlen, args.seed)
  info = {"source": args.calib, "nsamples": args.nsamples, "seqlen": args.seqlen, "seed": args.seed}
  try:
    info["provenance"] = calibration.describe(args.calib)
  except JaxpruneError:
    pass
  return tokens, info


def _default_params() -> str:
  """--params when not given: host memory unless the default device is the CPU (where both are host memory)."""
  import jax

  return "device" if jax.default_backend() == "cpu" else "host"


def run(args) -> int:
  from jaxprune import converters
  from jaxprune import pruning, runs
  from jaxprune.pruning import methods

  config = pruning.PruneConfig(
      sparsity=args.sparsity, pattern=args.pattern, method=args.method, sequential=args.sequential,
      microbatch=args.microbatch, attention_chunk=args.attention_chunk, per_row=args.per_row, allocation=args.allocation,
      owl_m=args.owl_m, owl_lambda=args.owl_lambda,
  )
  config.validate()  # fail on bad options before the slow model load
  args = _calibration_flags(args)
  from jaxprune.converters.loading import parameter_dtype
  from jaxprune import outputs

  parameter_dtype(args.dtype)
  mesh = pruning.MeshConfig.parse(args.mesh)
  inputs = (args.model, args.calib_tokens, args.calib)
  outputs.claim_dir(args.out, "run", overwrite=args.overwrite, inputs=inputs)  # checked again when writing
  dist = distributed_config(args)
  if dist is not None:  # before any JAX computation
    from jaxprune import distributed

    dist.validate()
    if not distributed.is_worker():  # turns JAX's abort on a dead peer into one error line
      return distributed.supervise([sys.executable, "-m", "jaxprune.cli", *args.argv], dist)
    distributed.initialize(dist)
  mesh = mesh.build()  # too few devices: one line before the slow model load
  loaded = converters.load_model(args.model, dtype=args.dtype, params=args.params or _default_params())
  if methods.get(args.method).needs_calibration:
    tokens, info = _calibration_tokens(args, loaded)
  else:
    tokens, info = None, {"source": None}
  bar = progress(loaded.spec.num_layers, "blocks")
  def resuming(done: int, total: int) -> None:
    print(f"resuming after block {done} of {total} (an interrupted run of the same command)", file=sys.stderr)
    bar.update(done - bar.n)

  result = runs.prune_run(loaded, tokens, config,
                          runs.RunConfig(out=args.out, overwrite=args.overwrite, inputs=inputs),
                          calibration=info, mesh=mesh, on_block=lambda done, total, _: bar.update(done - bar.n),
                          on_resume=resuming)
  bar.close()
  print(f"pruned {len(result.masks)} matrices of {args.model} to {result.report['__total__']:.2%} sparsity"
        f" ({config.method}, {config.pattern}); masks and run.json in {args.out}")
  return 0
