"""The `jaxprune` command: parses flags and makes one library call per command.

Each subcommand has an ``_add_<name>`` function that declares its flags and a
``_run_<name>`` function that turns them into a frozen config and calls the
library. Errors in user input (`JaxpruneError`) print as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from jaxprune import cli_library, failures
from jaxprune.errors import JaxpruneError

DEFAULT_MODEL = "smollm2-135m"


# --------------------------------------------------------------------------- #
# info
# --------------------------------------------------------------------------- #


def _add_info(sub) -> None:
  p = sub.add_parser("info", help="architecture, parameter count and prunable matrices of a model")
  p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="HF folder, .gguf file or built-in name")
  p.add_argument("--json", action="store_true", help="print JSON instead of a table")
  p.set_defaults(func=_run_info)


def _run_info(args) -> int:
  import converters

  info = converters.describe(args.model)
  if args.json:
    print(json.dumps(info, indent=2))
  else:
    print(converters.format_description(info))
  return 0


# --------------------------------------------------------------------------- #
# models
# --------------------------------------------------------------------------- #


def _add_models(sub) -> None:
  p = sub.add_parser("models", help="the built-in models: family, size, licence, installed or how to install")
  p.add_argument("--json", action="store_true", help="print JSON instead of a table")
  p.set_defaults(func=_run_models)


def _run_models(args) -> int:
  from converters import builtin

  rows = builtin.listing()
  if args.json:
    print(json.dumps(rows, indent=2))
    return 0
  print(f"{'name':<20} {'family':<8} {'params':>7}  {'installed':<9}  licence")
  for r in rows:
    print(f"{r['name']:<20} {r['family']:<8} {r['parameters'] / 1e6:>6.0f}M  {'yes' if r['installed'] else 'no':<9}"
          f"  {r['licence']}  ({r['description']})")
  for r in rows:
    if not r["installed"]:
      print(f"install {r['name']}: {r['install']}")
  return 0


# --------------------------------------------------------------------------- #
# compare
# --------------------------------------------------------------------------- #


def _add_compare(sub) -> None:
  p = sub.add_parser("compare", help="Jaccard distances, plots and mask pictures of two or more prune runs")
  p.add_argument("runs", nargs="+", metavar="RUN", help="run directories written by `jaxprune prune` (two or more)")
  p.add_argument("--out", required=True, help="report directory to create (index.html, CSV, JSON, PNG, HTML)")
  p.add_argument("--matrix", default=None, help="HF name of the matrix to picture (default: q_proj of the middle layer)")
  p.add_argument("--max-cells", type=int, default=128, help="cells per axis of the mask pictures (sets downsampling)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing report directory")
  p.set_defaults(func=_run_compare)


def _run_compare(args) -> int:
  from jaxprune import compare_report

  out = compare_report.write_report(compare_report.CompareConfig(
      runs=tuple(args.runs), out=args.out, matrix=args.matrix,
      overwrite=args.overwrite, max_cells=args.max_cells,
  ))
  print(out / "index.html")
  return 0


# --------------------------------------------------------------------------- #
# corpora
# --------------------------------------------------------------------------- #


def _add_corpora(sub) -> None:
  p = sub.add_parser("corpora", help="list the calibration domains, or fetch their text from Debian/npm")
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--cache-dir", default=None, help="corpora cache (default $JAXPRUNE_CACHE or ~/.cache/jaxprune/corpora)")
  action = p.add_subparsers(dest="action", required=True)
  lst = action.add_parser("list", parents=[common], help="each domain: source, size, readiness and licence")
  lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
  fetch = action.add_parser("fetch", parents=[common], help="fetch what the domains need (all when none are named); idempotent")
  fetch.add_argument("domains", nargs="*", metavar="DOMAIN", help="e.g. python java cpp javascript english")
  p.set_defaults(func=_run_corpora)


def _run_corpora(args) -> int:
  from jaxprune import calibration, corpora

  if args.action == "fetch":
    corpora.fetch(args.domains, cache_dir=args.cache_dir, report=lambda line: print(line, flush=True))
    return 0
  rows = [calibration.describe(name, cache_dir=args.cache_dir) for name in corpora.DOMAINS]
  if args.json:
    print(json.dumps(rows, indent=2))
    return 0
  print(f"cache: {corpora.cache_root(args.cache_dir)}")
  for r in rows:
    size = f"{r['documents']:>6} docs {r['bytes'] / 1e6:7.1f} MB" if r["ready"] else r["fix"]
    print(f"{r['domain']:<12} {'ready' if r['ready'] else 'missing':<8} {size}  {r['source']}"
          + (f"  [{r['licence']}]" if r["ready"] else ""))
  return 0


# --------------------------------------------------------------------------- #
# prune
# --------------------------------------------------------------------------- #


def _add_prune(sub) -> None:
  from jaxprune import methods
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
  _add_distributed(p)
  p.set_defaults(func=_run_prune)


def _add_distributed(p) -> None:
  g = p.add_argument_group("multi-host runs (jax.distributed; one process per host, same command)")
  g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                 help="process 0's host and a free port; 'auto' detects SLURM, Open MPI or $JAX_COORDINATOR_ADDRESS")
  g.add_argument("--num-processes", type=int, default=None, help="processes in the run")
  g.add_argument("--process-id", type=int, default=None, help="this process: 0 .. N-1")
  g.add_argument("--init-timeout", type=int, default=300, help="seconds to wait for every process to join")
  g.add_argument("--heartbeat-timeout", type=int, default=60,
                 help="seconds of silence after which a process counts as dead and the others stop")


def _distributed_config(args):
  """A `DistributedConfig` if any multi-host flag is given, else None."""
  from jaxprune import distributed

  if args.coordinator is None and args.num_processes is None and args.process_id is None:
    return None
  return distributed.DistributedConfig(
      coordinator=None if args.coordinator == distributed.AUTO else args.coordinator,
      num_processes=args.num_processes, process_id=args.process_id,
      init_timeout_s=args.init_timeout, heartbeat_timeout_s=args.heartbeat_timeout,
  )


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


def _run_prune(args) -> int:
  import converters
  from jaxprune import methods, pruning, runs

  config = pruning.PruneConfig(
      sparsity=args.sparsity, pattern=args.pattern, method=args.method, sequential=args.sequential,
      microbatch=args.microbatch, attention_chunk=args.attention_chunk, per_row=args.per_row, allocation=args.allocation,
      owl_m=args.owl_m, owl_lambda=args.owl_lambda,
  )
  config.validate()  # fail on bad options before the slow model load
  args = _calibration_flags(args)
  from converters.loading import parameter_dtype
  from jaxprune import outputs

  parameter_dtype(args.dtype)
  mesh = pruning.MeshConfig.parse(args.mesh)
  inputs = (args.model, args.calib_tokens, args.calib)
  outputs.claim_dir(args.out, "run", overwrite=args.overwrite, inputs=inputs)  # checked again when writing
  dist = _distributed_config(args)
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
  bar = _progress(loaded.spec.num_layers, "blocks")
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


def _progress(total: int, unit: str):
  from tqdm.auto import tqdm

  from jaxprune import distributed

  # A multi-host worker's stderr is its supervisor's pipe: draw when the supervisor's is a terminal.
  shown = False if os.environ.get(distributed.TTY_ENV) else None
  return tqdm(total=total, unit=unit, file=sys.stderr, disable=shown)


# --------------------------------------------------------------------------- #
# export
# --------------------------------------------------------------------------- #


def _add_export(sub) -> None:
  from converters.publish import ExportConfig

  p = sub.add_parser("export", help="write a pruned model as a Hugging Face folder with a model card")
  p.add_argument("--model", default=DEFAULT_MODEL, help="the model the run was pruned from")
  p.add_argument("--masks", required=True, help="run directory written by `jaxprune prune`")
  p.add_argument("--out", required=True, help="HF folder to write")
  p.add_argument("--eval", default=ExportConfig.eval, metavar="RESULTS.json",
                 help="report of `jaxprune eval --masks RUN --out RESULTS.json`: its metrics go into the model card")
  p.add_argument("--overwrite", action="store_true", default=ExportConfig.overwrite, help="replace an existing folder")
  p.set_defaults(func=_run_export)


def _run_export(args) -> int:
  from converters import publish

  out = publish.export(publish.ExportConfig(model=args.model, masks=args.masks, out=args.out,
                                            overwrite=args.overwrite, eval=args.eval))
  print(f"wrote {out} with its model card README.md (load it with transformers.AutoModelForCausalLM.from_pretrained)")
  return 0


# --------------------------------------------------------------------------- #
# eval
# --------------------------------------------------------------------------- #


def _add_eval(sub) -> None:
  from evals import tasks

  p = sub.add_parser("eval", help="perplexity, HumanEval and other tasks of a dense or pruned model")
  p.add_argument("--model", default=DEFAULT_MODEL, help="HF folder, .gguf file or built-in name (default: %(default)s)")
  p.add_argument("--masks", default=None, help="run directory written by `jaxprune prune` (default: dense model)")
  p.add_argument("--tasks", required=True,
                 help="comma-separated: ppl:python, ppl:java, ppl:cpp, ppl:javascript, ppl:english, ppl:FILE_OR_FOLDER,"
                      " humaneval, humaneval-java, humaneval-cpp, humaneval-js, hellaswag, arc_easy, arc_challenge,"
                      " boolq, winogrande, openbookqa, piqa, gsm8k, meteor-en-fr, meteor-fr-en")
  p.add_argument("--out", default=None, help="JSON file to write (metrics, config, versions, timings)")
  p.add_argument("--seqlen", type=int, default=tasks.EvalConfig.seqlen, help="tokens per perplexity window")
  p.add_argument("--max-windows", type=int, default=tasks.EvalConfig.max_windows, help="perplexity windows per source at most")
  p.add_argument("--batch-size", type=int, default=tasks.EvalConfig.batch_size, help="rows per compiled scoring call")
  p.add_argument("--limit", type=int, default=None, help="problems/examples per task at most (quick looks)")
  p.add_argument("--data", action="append", default=[], metavar="TASK=PATH",
                 help="local data of a task, e.g. --data hellaswag=hellaswag_val.jsonl (repeatable);"
                      " wordnet=DIR for METEOR's WordNet (default /usr/share/wordnet)")
  p.add_argument("--greedy", action="store_true", help="HumanEval: greedy pass@1 instead of n samples")
  p.add_argument("--num-samples", type=int, default=tasks.EvalConfig.num_samples, help="HumanEval samples per problem")
  p.add_argument("--temperature", type=float, default=tasks.EvalConfig.temperature, help="HumanEval sampling temperature")
  p.add_argument("--top-p", type=float, default=tasks.EvalConfig.top_p, help="HumanEval nucleus mass")
  p.add_argument("--max-new-tokens", type=int, default=tasks.EvalConfig.max_new_tokens,
                 help="generated tokens per completion at most")
  p.add_argument("--gen-batch-size", type=int, default=tasks.EvalConfig.gen_batch_size,
                 help="rows per compiled generation call (%(default)s; live rows move to smaller batches as rows finish)")
  p.add_argument("--chat", action="store_true",
                 help="prompt through the chat template (code tasks: an answer that opens a code block with the prompt)")
  p.add_argument("--seed", type=int, default=tasks.EvalConfig.seed, help="seed of sampling")
  p.add_argument("--samples", action=argparse.BooleanOptionalAction, default=tasks.EvalConfig.samples,
                 help="keep in the JSON every code completion with its status and output tail, gsm8k's completions"
                      " and METEOR's translations (--no-samples: metrics and counts only)")
  p.add_argument("--dtype", default=None, help="parameter dtype (float32, bfloat16, float16); default: the checkpoint's")
  p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:
  from evals import tasks

  pairs = []
  for item in args.data:
    task, sep, path = item.partition("=")
    if not sep or not task or not path:
      raise JaxpruneError(f"--data {item!r}: write TASK=PATH, e.g. --data hellaswag=hellaswag_val.jsonl")
    pairs.append((task, path))
  config = tasks.EvalConfig(
      model=args.model, tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()), masks=args.masks,
      out=args.out, dtype=args.dtype, seqlen=args.seqlen, max_windows=args.max_windows,
      batch_size=args.batch_size, limit=args.limit, data=tuple(pairs), greedy=args.greedy,
      num_samples=args.num_samples, temperature=args.temperature, top_p=args.top_p,
      max_new_tokens=args.max_new_tokens, gen_batch_size=args.gen_batch_size, chat=args.chat, seed=args.seed,
      samples=args.samples,
  )
  report = tasks.evaluate(config, progress=_bars)
  print(tasks.table(report))
  if args.out:
    print(f"wrote {args.out}")
  for line in tasks.failure_lines(report):
    print(line)
  return 0


def _bars(description: str, total: int):
  """A progress bar per task phase; returns update(done so far)."""
  bar = _progress(total, "it")
  bar.set_description(description)

  def update(done: int) -> None:
    bar.update(done - bar.n)
    if done >= total:
      bar.close()

  return update


def _add_finetune(sub) -> None:
  from jaxprune.finetune import cli as finetune_cli  # flags and the library call live with the feature

  finetune_cli.add_parser(sub)


COMMANDS = [_add_info, _add_models, _add_prune, _add_finetune, _add_export, _add_compare, _add_corpora, _add_eval]
COMMANDS += [cli_library.add_library, cli_library.add_serve]


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="jaxprune",
      description="Derive domain-specific sub-models from HF LLMs by Wanda pruning (JAX/penzai).",
  )
  parser.add_argument("-v", "--verbose", action="store_true", help="log more")
  sub = parser.add_subparsers(dest="command", required=True)
  for add in COMMANDS:
    add(sub)
  return parser


def _end(code: int, argv: list[str] | None) -> int:
  """Exit code of a failed command; a program run (``argv`` None) ends at once.

  After a fault, Orbax's and TensorStore's writer threads may still finish
  their callbacks and print tracebacks during interpreter shutdown: the one
  line already said everything, so the program skips the shutdown.
  """
  if argv is None:
    sys.stdout.flush()
    failures.silence_stderr()
    os._exit(code)  # pylint: disable=protected-access
  return code


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  args.argv = list(sys.argv[1:] if argv is None else argv)  # to rerun as a supervised worker
  logging.basicConfig(
      level=logging.INFO if args.verbose else logging.WARNING,
      format="%(levelname)s %(name)s: %(message)s",
  )
  if not args.verbose:  # Orbax logs its threads' tracebacks; the error reaches the handler below
    logging.getLogger("absl").setLevel(logging.CRITICAL)
  failures.reset()
  failures.program_run(argv is None)
  previous = failures.handle_sigterm()
  try:
    return int(args.func(args) or 0)
  except JaxpruneError as err:
    failures.report(f"jaxprune {args.command}: error: {err}")
    return 2
  except BrokenPipeError:  # `jaxprune ... | head`
    sys.stderr.close()
    return 0
  except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM
    failures.report(f"jaxprune {args.command}: interrupted; {failures.kept()}")
    return _end(143 if isinstance(err, failures.Terminated) else 130, argv)
  except Exception as err:  # file-system faults, also when Orbax or TensorStore wrap them
    cause = failures.os_error_in(err)
    if cause is None:
      raise
    failures.report(f"jaxprune {args.command}: error: {failures.os_error_line(cause)}")
    return _end(1, argv)
  finally:
    failures.restore_sigterm(previous)

if __name__ == "__main__":
  sys.exit(main())
