"""`jaxprune info`: a model's architecture, parameter count and prunable matrices."""

from __future__ import annotations

import json

from jaxprune.cli.common import DEFAULT_MODEL


def add(sub) -> None:
  p = sub.add_parser("info", help="architecture, parameter count and prunable matrices of a model")
  p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="HF folder, .gguf file or built-in name")
  p.add_argument("--json", action="store_true", help="print JSON instead of a table")
  p.set_defaults(func=run)


def run(args) -> int:
  from jaxprune import converters

  info = converters.describe(args.model)
  if args.json:
    print(json.dumps(info, indent=2))
  else:
    print(converters.format_description(info))
  return 0
