"""Comparing sub-models: how much their masks overlap, and the report that shows it.

`distances` reads runs and computes Jaccard distances on packed masks;
`report` writes `jaxprune compare`'s report folder (tables, plots), `html` its
index page, and `viz` the treescope pictures of masks side by side.

Example:
  >>> from jaxprune import compare
  >>> runs, packed = compare.load_runs(["runs/python", "runs/java"])
  >>> compare.pairwise(runs, packed)
"""

from jaxprune.compare.distances import (
    Row, Run, check_same_model, distance, distance_matrix, domain_of, group_of, jaccard, jaccard_packed,
    kept_count, kept_fraction, load_packed, load_runs, mean_distance, overlap_counts, pairwise, projection_of,
    read_run, read_runs, unique_labels)

__all__ = ["Row", "Run", "check_same_model", "distance", "distance_matrix", "domain_of", "group_of", "jaccard",
           "jaccard_packed", "kept_count", "kept_fraction", "load_packed", "load_runs", "mean_distance",
           "overlap_counts", "pairwise", "projection_of", "read_run", "read_runs", "unique_labels"]
