"""`jaxprune compare`: a report directory of distances, plots and mask pictures.

Everything is written into a hidden sibling directory and renamed into place
at the end (`jaxprune.outputs`), so REPORT_DIR is either absent, the old
report, or complete; only an earlier report is ever replaced.

Layout of REPORT_DIR:
  index.html           ties it together (opens offline)
  distances.csv/.json  every matrix of every pair of runs
  heatmap.png          run x run mean distance
  layers_I_J.png       per-layer distance per projection, runs I and J
  domains.png          per-layer distance within vs across calibration domains
  mask_diff_I_J.html   treescope picture of one matrix of runs I and J
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxprune import outputs
from jaxprune.calibration import portable_path
from jaxprune.compare import distances as compare
from jaxprune.compare import html as compare_html, viz
from jaxprune.model import spec
from jaxprune.pruning import masks as masks_lib
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CompareConfig:
  """What `jaxprune compare` was asked to do.

  Attributes:
    runs: run directories (two or more) of one model.
    out: report directory to create.
    matrix: HF name of the matrix to picture (default: middle layer's q_proj).
    overwrite: replace an existing ``out``.
    max_cells: cells per axis of the mask pictures (sets the downsampling).
  """

  runs: tuple[str, ...]
  out: str
  matrix: str | None = None
  overwrite: bool = False
  max_cells: int = 128


# --------------------------------------------------------------------------- #
# Pure summaries
# --------------------------------------------------------------------------- #


def default_matrix(names: Sequence[str]) -> str:
  """The q_proj of the middle layer (the paper's Fig. 3), else a middle-layer matrix."""
  layers = sorted({b for b in map(spec.block_of, names) if b is not None})
  if not layers:
    return names[0]
  middle = [n for n in names if spec.block_of(n) == layers[len(layers) // 2]]
  return next((n for n in middle if "q_proj" in n), middle[0])


def layer_table(rows: Sequence[compare.Row], a: str, b: str) -> dict[str, dict[int, float]]:
  """projection -> layer -> distance for one pair (layer matrices only)."""
  table: dict[str, dict[int, float]] = defaultdict(dict)
  for r in rows:
    if (r.run_a, r.run_b) == (a, b) and r.layer is not None:
      table[r.projection][r.layer] = r.distance
  return dict(table)


def group_layer_means(rows: Sequence[compare.Row]) -> dict[str, dict[int, list[float]]]:
  """group -> layer -> [mean over projections, one per pair]."""
  per_pair: dict[tuple[str, str, str, int], list[float]] = defaultdict(list)
  for r in rows:
    if r.layer is not None:
      per_pair[(r.group, r.run_a, r.run_b, r.layer)].append(r.distance)
  out: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
  for (group, _, _, layer), ds in per_pair.items():
    out[group][layer].append(float(np.mean(ds)))
  return {g: dict(v) for g, v in out.items()}


# --------------------------------------------------------------------------- #
# Plots (matplotlib's object API: no global pyplot state, safe in notebooks)
# --------------------------------------------------------------------------- #


def _figure(width: float = 7.0, height: float = 4.0):
  from matplotlib.figure import Figure

  return Figure(figsize=(width, height), layout="constrained")


def _layer_axis(ax) -> None:
  from matplotlib.ticker import MaxNLocator

  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_ylim(bottom=0)
  ax.grid(alpha=0.3)


def plot_layers(table: dict[str, dict[int, float]], title: str, path: Path) -> None:
  fig = _figure()
  ax = fig.add_subplot()
  for projection, by_layer in sorted(table.items()):
    layers = sorted(by_layer)
    ax.plot(layers, [by_layer[l] for l in layers], marker=".", label=projection)
  ax.set(xlabel="layer index", ylabel="Jaccard distance", title=title)
  _layer_axis(ax)
  ax.legend(fontsize="small", ncols=2)
  fig.savefig(path, dpi=100)


def plot_heatmap(matrix: np.ndarray, labels: Sequence[str], path: Path) -> None:
  n = len(labels)
  fig = _figure(2.5 + 0.8 * n, 2.0 + 0.7 * n)
  ax = fig.add_subplot()
  image = ax.imshow(matrix, vmin=0, vmax=max(1e-9, float(matrix.max())), cmap="viridis")
  ax.set_xticks(range(n), labels, rotation=45, ha="right")
  ax.set_yticks(range(n), labels)
  for i in range(n):
    for j in range(n):
      ax.text(j, i, f"{matrix[i, j]:.3f}", ha="center", va="center",
              color="white" if matrix[i, j] < 0.6 * matrix.max() else "black", fontsize="small")
  ax.set_title("mean Jaccard distance over matrices")
  fig.colorbar(image, ax=ax)
  fig.savefig(path, dpi=100)


def plot_domains(groups: dict[str, dict[int, list[float]]], path: Path) -> None:
  fig = _figure()
  ax = fig.add_subplot()
  for group, color in (("within", "tab:blue"), ("across", "tab:red")):
    by_layer = groups[group]
    layers = sorted(by_layer)
    mean = [np.mean(by_layer[l]) for l in layers]
    n = len(by_layer[layers[0]])
    ax.plot(layers, mean, marker=".", color=color, label=f"{group} domain (mean of {n} pair{'s' * (n != 1)})")
    ax.fill_between(layers, [min(by_layer[l]) for l in layers], [max(by_layer[l]) for l in layers],
                    color=color, alpha=0.15, linewidth=0)
  ax.set(xlabel="layer index", ylabel="Jaccard distance (mean over projections)",
         title="within vs across calibration domain (band: min..max over pairs)")
  _layer_axis(ax)
  ax.legend(fontsize="small")
  fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------- #
# Files
# --------------------------------------------------------------------------- #


def _write_tables(rows: Sequence[compare.Row], runs: Sequence[compare.Run], dest: Path) -> None:
  fields = [f.name for f in dataclasses.fields(compare.Row)]
  with open(dest / "distances.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(dataclasses.asdict(r) for r in rows)
  pairs = []
  for i, a in enumerate(runs):
    for b in runs[i + 1:]:
      table = layer_table(rows, a.label, b.label)
      by_projection = {p: float(np.mean(list(t.values()))) for p, t in sorted(table.items())}
      pairs.append({
          "run_a": a.label, "run_b": b.label, "group": compare.group_of(a, b),
          "mean_distance": compare.mean_distance(rows, a.label, b.label),
          "by_projection": by_projection,
          "by_layer": {p: {str(l): d for l, d in sorted(t.items())} for p, t in sorted(table.items())},
      })
  doc = {
      "format": "jaxprune-compare/1",
      "definition": "distance = 1 - |A∩B|/|A∪B| of kept weights; two empty sets: 0;"
                    " mean_distance = unweighted mean over matrices",
      "runs": [{"label": r.label, "path": portable_path(str(r.path)), "model": r.model, "domain": r.domain,
                "calibration": r.calibration, "options": r.options,
                "kept_fraction": compare.kept_fraction(rows, r.label)} for r in runs],
      "pairs": pairs,
      "distances": [dataclasses.asdict(r) for r in rows],
  }
  (dest / "distances.json").write_text(json.dumps(doc, indent=1))


def write_report(config: CompareConfig) -> Path:
  """Compare the runs and write the report directory; returns its path."""
  claim = outputs.claim_dir(config.out, "report", overwrite=config.overwrite, inputs=config.runs)
  runs = compare.read_runs(config.runs)
  names = list(runs[0].shapes)
  matrix = config.matrix or default_matrix(names)
  if matrix not in runs[0].shapes:
    hint = [n for n in names if n.rsplit(".", 2)[-2:] == matrix.rsplit(".", 2)[-2:]][:2] or names[:2]
    raise JaxpruneError(f"--matrix {matrix} is not among the runs' masks: use an HF name such as {', '.join(hint)}")

  packed = compare.load_packed(runs)
  rows = compare.pairwise(runs, packed)
  labels = [r.label for r in runs]
  tmp = outputs.start(claim)
  try:
    _write_tables(rows, runs, tmp)
    plot_heatmap(compare.distance_matrix(rows, labels), labels, tmp / "heatmap.png")
    pairs = []
    for i in range(len(runs)):
      for j in range(i + 1, len(runs)):
        a, b = runs[i], runs[j]
        table = layer_table(rows, a.label, b.label)
        layers_png = f"layers_{i}_{j}.png" if table else None
        if table:
          plot_layers(table, f"{a.label} vs {b.label} ({compare.group_of(a, b)} domain)", tmp / layers_png)
        in_features = a.shapes[matrix][1]
        figure = viz.mask_diff(
            {matrix: masks_lib.unpack(packed[i][matrix], in_features)},
            {matrix: masks_lib.unpack(packed[j][matrix], in_features)},
            matrix, labels=(a.label, b.label), max_cells=config.max_cells,
        )
        diff_html = f"mask_diff_{i}_{j}.html"
        viz.save_html(figure, tmp / diff_html, f"{matrix}: {a.label} vs {b.label}")
        pairs.append(compare_html.Pair(a=a, b=b, table=table, layers_png=layers_png, diff_html=diff_html,
                                       embed=viz.html_snippet(figure) if not pairs else None))
    groups = group_layer_means(rows)
    domains_png = None
    if groups.get("within") and groups.get("across"):
      domains_png = "domains.png"
      plot_domains(groups, tmp / domains_png)
    (tmp / "index.html").write_text(
        compare_html.index(runs, rows, pairs, matrix=matrix, domains_png=domains_png), encoding="utf-8")
    out = outputs.commit(claim)
  except BaseException:
    outputs.discard(claim)
    raise
  log.info("wrote %s", out)
  return out
