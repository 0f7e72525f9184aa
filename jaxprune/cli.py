"""The `jaxprune` command: parses flags and makes one library call per command.

Each subcommand has an ``_add_<name>`` function that declares its flags and a
``_run_<name>`` function that turns them into a frozen config and calls the
library. Errors in user input (`JaxpruneError`) print as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

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
  p.add_argument("--cache-dir", default=None, help="corpora cache (default $JAXPRUNE_CACHE or ~/.cache/jaxprune/corpora)")
  action = p.add_subparsers(dest="action", required=True)
  lst = action.add_parser("list", help="each domain: source, size, readiness and licence")
  lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
  fetch = action.add_parser("fetch", help="fetch what the domains need (all when none are named); idempotent")
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


COMMANDS = [_add_info, _add_compare, _add_corpora]


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


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  logging.basicConfig(
      level=logging.INFO if args.verbose else logging.WARNING,
      format="%(levelname)s %(name)s: %(message)s",
  )
  try:
    return int(args.func(args) or 0)
  except JaxpruneError as err:
    print(f"jaxprune {args.command}: error: {err}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"jaxprune {args.command}: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
