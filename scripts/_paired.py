"""Paired tests of sub-models that answer the same HumanEval problems.

`paired_test`: McNemar's exact test of two sub-models on one column;
`pooled_test`: the diagonal sub-model's advantage pooled over columns, with a
randomization test and a cluster bootstrap over problems.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def paired_test(a: dict, b: dict) -> dict[str, Any] | None:
  """McNemar's exact test of two sub-models on the same problems (None without per-problem results).

  ``only_a``/``only_b``: problems solved by one of the two only; under the null
  hypothesis each such problem is equally likely to fall either way, so the
  two-sided p-value is the exact binomial test of ``only_a`` in ``only_a + only_b`` at 1/2.
  """
  from scipy.stats import binomtest

  if "solved" not in a or "solved" not in b or a["problems"] != b["problems"]:
    return None
  sa, sb = set(a["solved"]), set(b["solved"])
  only_a, only_b = len(sa - sb), len(sb - sa)
  p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
  return {"only_a": only_a, "only_b": only_b, "difference": (len(sa) - len(sb)) / a["problems"], "p": float(p)}


def problem_ids(task: str, limit: int | None) -> list[str]:
  """The task ids of the HumanEval problems a column is scored on."""
  from jaxprune.evals import humaneval

  language = humaneval.language(task)
  return [p.task_id for p in humaneval.select(language.problems()[0], humaneval.HumanEvalConfig(limit=limit))]


def pooled_test(he: dict, problem_ids: dict[str, list[str]], language_of: dict[str, str],
                resamples: int = 10_000, seed: int = 0) -> dict[str, Any] | None:
  """The diagonal's advantage pooled over the columns that have a diagonal sub-model.

  Per problem of a column, the advantage is whether the column's diagonal
  sub-model solves it minus the share of the other sub-models that do; the
  statistic is its mean over every problem of those columns (points of
  pass@1). It uses the sub-models that have all those columns. A problem's
  translations are one unit: ``p`` is a one-sided randomization test (if
  calibration language did not matter, the sub-models would be exchangeable on
  each problem, so each problem's results are shuffled among them, one
  shuffle for all its translations, ``resamples`` times) and the 95% interval
  resamples problems (a cluster bootstrap). ``problem_ids``: each column's
  problems; ``language_of``: each column's language, in column order. None
  when no column has a diagonal and another sub-model.
  """
  rng = np.random.default_rng(seed)
  columns = [t for t in language_of if "solved" in he.get(f"wanda50-{language_of[t]}", {}).get(t, {})]
  models = [m for m in he if m != "dense" and all("solved" in he[m].get(t, {}) for t in columns)]
  columns = [t for t in columns if f"wanda50-{language_of[t]}" in models]
  models = [m for m in models if all("solved" in he[m].get(t, {}) for t in columns)]
  if not columns or len(models) < 2:
    return None
  clusters = sorted({pid for t in columns for pid in problem_ids[t]})
  where = {pid: k for k, pid in enumerate(clusters)}
  x = np.full((len(clusters), len(columns), len(models)), np.nan)  # solved, NaN: no such translation
  for j, t in enumerate(columns):
    for m, model in enumerate(models):
      solved = set(he[model][t]["solved"])
      x[[where[pid] for pid in problem_ids[t]], j, m] = [pid in solved for pid in problem_ids[t]]
  diag = np.array([models.index(f"wanda50-{language_of[t]}") for t in columns])
  onehot = np.eye(len(models), dtype=bool)[diag]  # [column, model]

  def advantage(x) -> float:
    own = np.take_along_axis(x, diag[None, :, None], axis=2)[..., 0]
    others = np.where(onehot[None], np.nan, x)
    d = own - np.nanmean(others, axis=2)
    return float(np.nanmean(d))

  observed = advantage(x)
  shuffled = np.empty(resamples)
  boot = np.empty(resamples)
  for r in range(resamples):
    order = np.argsort(rng.random((len(clusters), len(models))), axis=1)
    shuffled[r] = advantage(np.take_along_axis(x, order[:, None, :], axis=2))
    boot[r] = advantage(x[rng.integers(0, len(clusters), len(clusters))])
  solved = np.nansum(x, axis=0)  # [column, model]
  return {"columns": columns, "models": models, "problems": int(np.sum(~np.isnan(x[..., 0]))),
          "advantage": observed, "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
          "p": float((1 + np.sum(shuffled >= observed - 1e-12)) / (1 + resamples)), "resamples": resamples,
          "diagonal_best": int(sum(solved[j, diag[j]] >= solved[j].max() for j in range(len(columns))))}
