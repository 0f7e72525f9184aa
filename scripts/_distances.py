"""Mask distances of the reproduction scripts, cached pair by pair.

The masks are not committed (a 0.5B model's are 60 MB a run), so a fresh
checkout prunes a run again before comparing it. Each pair's distances are
therefore kept in ``OUT/distances.json`` as soon as they are computed, keyed by
both runs' committed run.json: a session that ends half-way leaves every
finished pair (and the compare report) to the next, which prunes only the runs
of the pairs still missing, those whose masks are already here first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("reproduce")

Pair = tuple[str, str, str]  # run a, run b, "within" (a domain across seeds) or "across" (domains, same seed)


def needed_pairs(names: dict[str, list[str]]) -> list[Pair]:
  """Every pair of seeds of one domain, and every pair of domains at each seed (``names[d][k]``: seed k)."""
  domains = list(names)
  pairs = [(runs[i], runs[j], "within") for runs in names.values()
           for i in range(len(runs)) for j in range(i + 1, len(runs))]
  for k in range(max(map(len, names.values()), default=0)):
    pairs += [(names[a][k], names[b][k], "across") for i, a in enumerate(domains) for b in domains[i + 1:]
              if k < len(names[a]) and k < len(names[b])]
  return pairs


def _run_key(out: Path, name: str) -> dict[str, Any]:
  """What a run's distances depend on: its calibration (less provenance) and options, from run.json."""
  record = out / "runs" / name / "run.json"
  info = json.loads(record.read_text()) if record.exists() else {}
  return {"calibration": {k: v for k, v in (info.get("calibration") or {}).items() if k != "provenance"},
          "options": info.get("options")}


def pair_distances(path_a: Path, path_b: Path) -> dict[str, Any]:
  """One pair's mean Jaccard distance over its matrices, with each layer's sum and count of distances."""
  from jaxprune import compare

  runs, packed = compare.load_runs([path_a, path_b])
  rows = compare.pairwise(runs, packed)
  layers: dict[str, list[float]] = {}
  for row in rows:
    total = layers.setdefault(str(row.layer), [0.0, 0])
    total[0] += row.distance
    total[1] += 1
  return {"mean": float(np.mean([r.distance for r in rows])), "layers": layers}


def summarize(pairs: list[Pair], found: dict[str, dict[str, Any]], domain_of: dict[str, str],
              seed_of: dict[str, Any], first: set[str]) -> dict[str, Any]:
  """The within/across means, the table of named pairs and the per-layer means of every pair's distances."""
  means: dict[str, list[float]] = {"within": [], "across": []}
  table: dict[str, list[float]] = {}
  layers: dict[str, dict[str, list[float]]] = {"within": {}, "across": {}}
  for a, b, group in pairs:
    record = found[_pair_id(a, b)]
    means[group].append(record["mean"])
    if group == "across" and a in first:
      table[f"{domain_of[a]} vs {domain_of[b]} (seed {seed_of[a]})"] = [record["mean"]]
    if group == "within":
      table.setdefault(f"{domain_of[a]} vs {domain_of[a]} (seeds)", []).append(record["mean"])
    for layer, (total, count) in record["layers"].items():
      acc = layers[group].setdefault(layer, [0.0, 0])
      acc[0] += total
      acc[1] += count
  order = lambda kv: (kv[0] == "None", int(kv[0]) if kv[0] != "None" else 0)  # noqa: E731
  return {"within_mean": float(np.mean(means["within"])) if means["within"] else float("nan"),
          "within_pairs": len(means["within"]),
          "across_mean": float(np.mean(means["across"])) if means["across"] else float("nan"),
          "across_pairs": len(means["across"]),
          "pairs": {k: float(np.mean(v)) for k, v in table.items()},
          "per_layer": {g: {k: s / n for k, (s, n) in sorted(d.items(), key=order)} for g, d in layers.items()}}


def _pair_id(a: str, b: str) -> str:
  return f"{a} | {b}"


def plot_layers(path: Path, model: str, per_layer: dict[str, dict[str, float]]) -> None:
  """Fig. 4's shape: mean distance per layer, within a language (across seeds) and across languages."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4))
  for group, style in (("within", "-o"), ("across", "-s")):
    xs = [k for k in per_layer[group] if k != "None"]
    ax.plot([int(x) for x in xs], [per_layer[group][x] for x in xs], style, markersize=3,
            label=f"{group} language ({'across seeds' if group == 'within' else 'same seed'})")
  ax.set_xlabel("layer")
  ax.set_ylabel("Jaccard distance of kept weights")
  ax.set_title(f"{model}: mask distance per layer (Wanda 50%)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def mask_distances_cached(exp, runs_by_domain: dict[str, list[Callable[[], Path]]],
                          names: dict[str, list[str]], *, compute: bool = True) -> dict[str, Any] | None:
  """Jaccard distances within a domain (across seeds) and across domains (same seed), from the pairs in
  ``OUT/distances.json`` made from the same runs, the missing ones made now; the compare report of the
  first seed's runs in ``OUT/compare``, and the per-layer plot, once all pairs are made. ``compute=False``:
  the pairs cached so far (``partial`` says how many of all), or None without any."""
  from jaxprune import store
  from jaxprune.compare import report as compare_report

  path = exp.out / "distances.json"
  keys = {name: _run_key(exp.out, name) for runs in names.values() for name in runs}
  cached = json.loads(path.read_text()) if path.exists() else {}
  old = cached.get("key", {})
  # a pair stays while its runs are as they were; pairs of runs this invocation does not name are kept
  valid = lambda n: n not in keys or (old.get(n) == keys[n] and bool(keys[n]["options"]))  # noqa: E731
  found = {p: r for p, r in cached.get("pairs", {}).items() if all(valid(n) for n in p.split(" | "))}
  pairs = needed_pairs(names)
  report_key = {n: keys[n] for runs in names.values() for n in runs[:1]}
  domain_of = {name: d for d, runs in names.items() for name in runs}
  seed_of = {name: key["calibration"].get("seed") for name, key in keys.items()}
  state = {"key": {**old, **keys}, "pairs": found, "report_key": cached.get("report_key")}

  def save() -> None:
    store.write_json_atomic(path, state)

  done = [p for p in pairs if _pair_id(p[0], p[1]) in found]
  if not compute or len(done) == len(pairs):  # nothing to make, or only what is cached
    if not done:
      return None
    summary = summarize(done, found, domain_of, seed_of, set(report_key))
    return summary if len(done) == len(pairs) else {**summary, "partial": f"{len(done)} of {len(pairs)}"}
  run_of = {name: run for d, runs in runs_by_domain.items() for name, run in zip(names[d], runs)}
  if state["report_key"] != report_key:  # the compare report of the first seed's sub-models
    first = [str(run_of[n]()) for n in report_key]
    compare_report.write_report(compare_report.CompareConfig(runs=tuple(first), out=str(exp.out / "compare"),
                                                             overwrite=True))
    state["report_key"] = report_key
    save()
  present = lambda n: (exp.out / "runs" / n / "masks").is_dir()  # noqa: E731
  missing = [p for p in pairs if _pair_id(p[0], p[1]) not in found]
  while missing:  # the pair needing fewest prunes next, so the masks here are used before any is made
    a, b, _ = min(missing, key=lambda p: (not present(p[0])) + (not present(p[1])))
    log.info("mask distances: %s vs %s (%d pairs to go)", a, b, len(missing))
    found[_pair_id(a, b)] = pair_distances(run_of[a](), run_of[b]())
    save()
    missing = [p for p in missing if p[:2] != (a, b)]
  distances = summarize(pairs, found, domain_of, seed_of, set(report_key))
  plot_layers(exp.out / "layers_within_vs_across.png", exp.model, distances["per_layer"])
  return distances
