"""`jaxprune export`: a run as a Hugging Face folder with its model card."""

from __future__ import annotations

from jaxprune.cli.common import DEFAULT_MODEL


def add(sub) -> None:
  from jaxprune.converters.publish import ExportConfig

  p = sub.add_parser("export", help="write a pruned model as a Hugging Face folder with a model card")
  p.add_argument("--model", default=DEFAULT_MODEL, help="the model the run was pruned from")
  p.add_argument("--masks", required=True, help="run directory written by `jaxprune prune`")
  p.add_argument("--out", required=True, help="HF folder to write")
  p.add_argument("--eval", default=ExportConfig.eval, metavar="RESULTS.json",
                 help="report of `jaxprune eval --masks RUN --out RESULTS.json`: its metrics go into the model card")
  p.add_argument("--overwrite", action="store_true", default=ExportConfig.overwrite, help="replace an existing folder")
  p.set_defaults(func=run)


def run(args) -> int:
  from jaxprune.converters import publish

  out = publish.export(publish.ExportConfig(model=args.model, masks=args.masks, out=args.out,
                                            overwrite=args.overwrite, eval=args.eval))
  print(f"wrote {out} with its model card README.md (load it with transformers.AutoModelForCausalLM.from_pretrained)")
  return 0
