"""index.html of a compare report: plain HTML and inline CSS, nothing fetched.

Kept apart from the computation so the page can change without touching it;
every function here is a pure string builder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from html import escape
from typing import Any

import numpy as np

from jaxprune.calibration import portable_path
from jaxprune.compare import distances as compare

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; max-width: 1500px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f0f0f0; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0; }
code { background: #f5f5f5; padding: 0 0.2em; }
.note { color: #555; font-size: 0.9em; }
section { margin-bottom: 2em; }
"""


@dataclasses.dataclass(frozen=True)
class Pair:
  """What the report wrote for one pair of runs."""

  a: compare.Run
  b: compare.Run
  table: dict[str, dict[int, float]]
  layers_png: str | None
  diff_html: str
  embed: str | None  # treescope snippet shown inline (first pair only)


def _td(value: Any) -> str:
  if isinstance(value, float):
    return f'<td class="num">{value:.4f}</td>'
  return f"<td>{escape(str(value))}</td>"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  head = "".join(f"<th>{escape(h)}</th>" for h in header)
  body = "".join("<tr>" + "".join(_td(v) for v in row) + "</tr>\n" for row in rows)
  return f"<table><tr>{head}</tr>\n{body}</table>"


def _runs_table(runs: Sequence[compare.Run], rows: Sequence[compare.Row]) -> str:
  def opt(run: compare.Run, key: str) -> Any:
    return run.options.get(key, "")

  return _table(
      ["#", "run", "domain", "model", "sparsity", "pattern", "method", "seed", "kept", "path"],
      [[i, r.label, r.domain or "unknown", r.model.get("id", "unknown"), opt(r, "sparsity"),
        opt(r, "pattern"), opt(r, "method"), "" if r.seed is None else r.seed,
        f"{compare.kept_fraction(rows, r.label):.2%}",
        portable_path(str(r.path))] for i, r in enumerate(runs)],
  )


def _pairs_table(pairs: Sequence[Pair], rows: Sequence[compare.Row]) -> str:
  body = []
  for p in pairs:
    by_layer = [np.mean([t[l] for t in p.table.values() if l in t])
                for l in sorted({l for t in p.table.values() for l in t})]
    body.append([
        p.a.label, p.b.label, compare.group_of(p.a, p.b),
        compare.mean_distance(rows, p.a.label, p.b.label),
        float(min(by_layer)) if by_layer else "", float(max(by_layer)) if by_layer else "",
    ])
  return _table(["run A", "run B", "domain", "mean distance", "lowest layer mean", "highest layer mean"], body)


def _layer_details(pair: Pair) -> str:
  if not pair.table:
    return ""
  projections = sorted(pair.table)
  layers = sorted({l for t in pair.table.values() for l in t})
  table = _table(["layer", *projections],
                 [[l, *(pair.table[p].get(l, "") for p in projections)] for l in layers])
  return f"<details><summary>per-layer table</summary>{table}</details>"


def index(
    runs: Sequence[compare.Run],
    rows: Sequence[compare.Row],
    pairs: Sequence[Pair],
    *,
    matrix: str,
    domains_png: str | None,
) -> str:
  """The report's front page."""
  parts = [
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">",
      f"<title>jaxprune compare: {escape(', '.join(r.label for r in runs))}</title>",
      f"<style>{STYLE}</style></head><body>",
      "<h1>jaxprune compare</h1>",
      "<p class=\"note\">Jaccard distance of the kept-weight sets A, B of a matrix: 1 − |A∩B| / |A∪B|"
      " (0 = the same weights kept, 1 = disjoint; two runs that prune a whole matrix count as identical, 0)."
      " Means are unweighted over matrices. Data: <a href=\"distances.csv\">distances.csv</a>,"
      " <a href=\"distances.json\">distances.json</a>.</p>",
      "<section><h2>Runs</h2>", _runs_table(runs, rows), "</section>",
      "<section><h2>Pairs</h2>", _pairs_table(pairs, rows),
      "<img src=\"heatmap.png\" alt=\"run x run mean Jaccard distance\"></section>",
  ]
  if domains_png:
    parts += ["<section><h2>Within vs across calibration domain</h2>",
              f"<img src=\"{domains_png}\" alt=\"per-layer distance within vs across domain\"></section>"]
  else:
    parts += ["<p class=\"note\">No within-vs-across plot: it needs run.json calibration sources giving"
              " at least one pair from the same domain and one from different domains.</p>"]

  parts.append(f"<section><h2>Mask picture: <code>{escape(matrix)}</code></h2>")
  links = ", ".join(f"<a href=\"{p.diff_html}\">{escape(p.a.label)} vs {escape(p.b.label)}</a>" for p in pairs)
  parts.append(f"<p class=\"note\">Standalone pages (treescope, offline): {links}.</p>")
  for p in pairs:
    if p.embed:
      parts.append(f"<div id=\"mask-diff\">{p.embed}</div>")
  parts.append("</section>")

  parts.append("<section><h2>Per layer</h2>")
  for p in pairs:
    parts.append(f"<h3>{escape(p.a.label)} vs {escape(p.b.label)}</h3>")
    if p.layers_png:
      alt = f"per-layer distance, {escape(p.a.label)} vs {escape(p.b.label)}"
      parts.append(f"<img src=\"{p.layers_png}\" alt=\"{alt}\">")
    parts.append(_layer_details(p))
  parts.append("</section>")

  parts.append("</body></html>\n")
  return "\n".join(parts)
