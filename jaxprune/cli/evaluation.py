"""`jaxprune eval`: flags -> `EvalConfig` -> `evals.tasks.evaluate`."""

from __future__ import annotations

import argparse

from jaxprune.cli.common import DEFAULT_MODEL, bars
from jaxprune.errors import JaxpruneError


def add(sub) -> None:
  from jaxprune.evals import tasks

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
  p.set_defaults(func=run)


def run(args) -> int:
  from jaxprune.evals import tasks

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
  report = tasks.evaluate(config, progress=bars)
  print(tasks.table(report))
  if args.out:
    print(f"wrote {args.out}")
  for line in tasks.failure_lines(report):
    print(line)
  return 0
