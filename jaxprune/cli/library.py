"""The `jaxprune library` and `jaxprune serve` commands: flags -> a frozen config -> one library call."""

from __future__ import annotations

import argparse
import json
import sys

from jaxprune.errors import JaxpruneError


def _pairs(items: list[str], flag: str) -> tuple[tuple[str, str], ...]:
  out = []
  for item in items:
    name, sep, value = item.partition("=")
    if not sep or not name or not value:
      raise JaxpruneError(f"{flag} {item!r}: write NAME=PATH, e.g. {flag} python=runs/python")
    out.append((name, value))
  return tuple(out)


def _route_flags(p, defaults) -> None:
  """Router flags; ``defaults`` is a RouteConfig (build) or None (use the library's stored settings)."""
  from jaxprune.library import routers

  shown = defaults or routers.RouteConfig()
  stored = "" if defaults else " (default: the library's)"
  p.add_argument("--router", choices=list(routers.ROUTERS), default=defaults and defaults.router,
                 help=f"classifier (cheap) or perplexity (exact: one prefill per sub-model){stored}")
  p.add_argument("--default", default=defaults and defaults.default,
                 help=f"sub-model (or dense) answering ambiguous prompts (%(default)s){stored}")
  p.add_argument("--min-confidence", type=float, default=defaults and defaults.min_confidence,
                 help=f"classifier: a top probability under this is ambiguous ({shown.min_confidence}){stored}")
  p.add_argument("--min-margin", type=float, default=defaults and defaults.min_margin,
                 help=f"perplexity: a best loss under the runner-up's by less (nats/token) is ambiguous"
                      f" ({shown.min_margin}){stored}")
  p.add_argument("--mixed-share", type=float, default=defaults and defaults.mixed_share,
                 help=f"classifier: a prompt whose pieces two sub-models win, the runner-up at least this share,"
                      f" is mixed ({shown.mixed_share}; above 0.5: never){stored}")
  p.add_argument("--declared", action=argparse.BooleanOptionalAction, default=defaults and defaults.declared,
                 help=f"a prompt whose code fences declare a language (```java) goes to that language's sub-model"
                      f" without asking the router ({'on' if shown.declared else 'off'}){stored}")


def _overrides(args) -> dict:
  return {"router": args.router, "default": args.default, "min_confidence": args.min_confidence,
          "min_margin": args.min_margin, "mixed_share": args.mixed_share, "declared": args.declared}


def add_library(sub) -> None:
  from jaxprune.library import routers, store

  p = sub.add_parser("library", help="sub-model libraries: one base, many masks; build, add, remove, info, export, route")
  action = p.add_subparsers(dest="action", required=True)
  b = action.add_parser("build", help="a new library of a model and runs pruned from it")
  b.add_argument("path", metavar="LIB", help="library folder to create")
  b.add_argument("--model", required=True, help="the model the runs were pruned from")
  b.add_argument("--run", action="append", default=[], metavar="NAME=RUN", required=True, help="a sub-model (repeatable)")
  b.add_argument("--router-text", action="append", default=[], metavar="NAME=SOURCE",
                 help="router training text of a sub-model (a domain or text path) instead of its calibration source")
  b.add_argument("--background", default=store.LibraryConfig.background,
                 help="text (a domain such as english, or a path) that the classifier sends to --default")
  b.add_argument("--router-docs", type=int, default=store.LibraryConfig.router_docs,
                 help="calibration sequences per sub-model kept as router text (%(default)s)")
  b.add_argument("--overwrite", action="store_true", help="replace an existing library")
  _route_flags(b, routers.RouteConfig())
  a = action.add_parser("add", help="add sub-models (runs of the library's base model)")
  a.add_argument("path", metavar="LIB")
  a.add_argument("--run", action="append", default=[], metavar="NAME=RUN", required=True)
  a.add_argument("--router-text", action="append", default=[], metavar="NAME=SOURCE")
  r = action.add_parser("remove", help="remove sub-models")
  r.add_argument("path", metavar="LIB")
  r.add_argument("names", nargs="+", metavar="NAME")
  i = action.add_parser("info", help="sub-models, calibration, sparsity, bytes against dense exports")
  i.add_argument("path", metavar="LIB")
  i.add_argument("--json", action="store_true", help="print JSON instead of a table")
  e = action.add_parser("export", help="a sub-model as a plain HF folder")
  e.add_argument("path", metavar="LIB")
  e.add_argument("name", metavar="NAME")
  e.add_argument("--out", required=True, help="HF folder to write")
  e.add_argument("--overwrite", action="store_true", help="replace an existing export")
  t = action.add_parser("route", help="which sub-model fits a prompt, and every sub-model's score")
  t.add_argument("path", metavar="LIB")
  src = t.add_mutually_exclusive_group(required=True)
  src.add_argument("--text", help="the prompt")
  src.add_argument("--file", help="a file holding the prompt")
  t.add_argument("--json", action="store_true", help="print JSON")
  _route_flags(t, None)
  p.set_defaults(func=run_library)


def run_library(args) -> int:
  from jaxprune.library import models, routers, store

  if args.action == "build":
    route = routers.RouteConfig(**_overrides(args))
    lib = store.build(store.LibraryConfig(
        path=args.path, model=args.model, runs=_pairs(args.run, "--run"), route=route, background=args.background,
        router_text=_pairs(args.router_text, "--router-text"), router_docs=args.router_docs, overwrite=args.overwrite))
    print(store.format_info(store.info(lib.path)))
  elif args.action == "add":
    lib = store.add(store.LibraryConfig(path=args.path, runs=_pairs(args.run, "--run"),
                                        router_text=_pairs(args.router_text, "--router-text")))
    print(store.format_info(store.info(lib.path)))
  elif args.action == "remove":
    lib = store.remove(args.path, tuple(args.names))
    print(store.format_info(store.info(lib.path)))
  elif args.action == "info":
    report = store.info(args.path)
    print(json.dumps(report, indent=2) if args.json else store.format_info(report))
  elif args.action == "export":
    out = store.export(args.path, args.name, args.out, overwrite=args.overwrite)
    print(f"wrote {out} (load it with transformers.AutoModelForCausalLM.from_pretrained)")
  else:
    text = args.text if args.text is not None else _read(args.file)
    route = models.route_text(args.path, text, **_overrides(args))
    print(json.dumps(route.as_json(), indent=2) if args.json else models.describe_route(route))
  return 0


def _read(path: str) -> str:
  try:
    return open(path, encoding="utf-8").read()
  except (OSError, UnicodeDecodeError) as err:
    raise JaxpruneError(f"--file {path} cannot be read as UTF-8 text ({err})") from None


def add_serve(sub) -> None:
  from jaxprune.library import engine

  defaults = engine.ServeConfig
  p = sub.add_parser("serve", help="serve a library over the OpenAI HTTP API (completions, chat, streaming)")
  p.add_argument("path", metavar="LIB", help="library folder written by `jaxprune library build`")
  p.add_argument("--host", default=defaults.host, help="address to bind (%(default)s: this machine only)")
  p.add_argument("--port", type=int, default=defaults.port, help="%(default)s")
  p.add_argument("--api-key", default=defaults.api_key, help="require `Authorization: Bearer KEY`")
  p.add_argument("--batch-size", type=int, default=defaults.batch_size,
                 help="rows per generation batch at most (%(default)s)")
  p.add_argument("--min-rows", type=int, default=defaults.min_rows,
                 help="rows a batch is compiled with at least, so that later requests can join it (%(default)s)")
  p.add_argument("--timeout", type=float, default=defaults.timeout_s,
                 help="seconds a request may take before it is cancelled (%(default)s)")
  p.add_argument("--max-tokens", type=int, default=defaults.max_tokens,
                 help="largest max_tokens a request may ask for (%(default)s)")
  p.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes, help="%(default)s")
  p.add_argument("--dtype", default=defaults.dtype, help="parameter dtype; default: the base's")
  _route_flags(p, None)
  p.set_defaults(func=run_serve)


def run_serve(args) -> int:
  from jaxprune.library import server

  config = server.ServeConfig(
      path=args.path, host=args.host, port=args.port, api_key=args.api_key, batch_size=args.batch_size,
      min_rows=args.min_rows,
      timeout_s=args.timeout, max_tokens=args.max_tokens, max_body_bytes=args.max_body_bytes, dtype=args.dtype,
      route=tuple((k, v) for k, v in _overrides(args).items() if v is not None))
  print(f"serving {args.path} on http://{args.host}:{args.port}/v1 (Ctrl-C stops)", file=sys.stderr, flush=True)
  server.serve(config)
  return 0

