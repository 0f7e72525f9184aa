"""`jaxprune compare`: the comparison report of two or more runs."""

from __future__ import annotations


def add(sub) -> None:
  p = sub.add_parser("compare", help="Jaccard distances, plots and mask pictures of two or more prune runs")
  p.add_argument("runs", nargs="+", metavar="RUN", help="run directories written by `jaxprune prune` (two or more)")
  p.add_argument("--out", required=True, help="report directory to create (index.html, CSV, JSON, PNG, HTML)")
  p.add_argument("--matrix", default=None, help="HF name of the matrix to picture (default: q_proj of the middle layer)")
  p.add_argument("--max-cells", type=int, default=128, help="cells per axis of the mask pictures (sets downsampling)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing report directory")
  p.set_defaults(func=run)


def run(args) -> int:
  from jaxprune.compare import report as compare_report

  out = compare_report.write_report(compare_report.CompareConfig(
      runs=tuple(args.runs), out=args.out, matrix=args.matrix,
      overwrite=args.overwrite, max_cells=args.max_cells,
  ))
  print(out / "index.html")
  return 0
