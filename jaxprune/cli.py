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


COMMANDS = [_add_info]


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
