"""`jaxprune models`: the built-in models and how to install them."""

from __future__ import annotations

import json


def add(sub) -> None:
  p = sub.add_parser("models", help="the built-in models: family, size, licence, installed or how to install")
  p.add_argument("--json", action="store_true", help="print JSON instead of a table")
  p.set_defaults(func=run)


def run(args) -> int:
  from jaxprune.converters import builtin

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
