"""`jaxprune corpora list|fetch`: the calibration domains."""

from __future__ import annotations

import argparse
import json


def add(sub) -> None:
  p = sub.add_parser("corpora", help="list the calibration domains, or fetch their text from Debian/npm")
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--cache-dir", default=None, help="corpora cache (default $JAXPRUNE_CACHE or ~/.cache/jaxprune/corpora)")
  action = p.add_subparsers(dest="action", required=True)
  lst = action.add_parser("list", parents=[common], help="each domain: source, size, readiness and licence")
  lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
  fetch = action.add_parser("fetch", parents=[common], help="fetch what the domains need (all when none are named); idempotent")
  fetch.add_argument("domains", nargs="*", metavar="DOMAIN", help="e.g. python java cpp javascript english")
  p.set_defaults(func=run)


def run(args) -> int:
  from jaxprune import calibration
  from jaxprune.calibration import corpora

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
