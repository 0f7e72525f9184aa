"""How much do two sub-models overlap? Jaccard distance of their kept weights.

For one matrix with kept-weight sets A and B (True entries of the masks), the
Jaccard distance is ``1 - |A ∩ B| / |A ∪ B|``: 0 when both runs keep the same
weights, 1 when they keep disjoint ones. Two empty sets (both runs prune the
whole matrix) are identical, so their distance is defined as 0, not 0/0.

The counts are computed in JAX on the packed masks (1 bit per weight, as
`jaxprune.store.save_masks` stores them): ``popcount(a & b)`` and ``popcount(a | b)``,
jit-compiled, one matrix at a time, so a whole model is never unpacked. Bits
past the last column of a row must be zero (`jaxprune.pruning.masks.pack` writes
zeros there).

Example:
  >>> a = {"w": np.array([[True, True, False, False]])}
  >>> b = {"w": np.array([[True, False, True, False]])}
  >>> jaccard(a, b)
  {'w': 0.6666666666666667}
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.pruning import masks as masks_lib
from jaxprune import store
from jaxprune.model import spec
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------- #
# Kernels (pure, jit-compiled)
# --------------------------------------------------------------------------- #


def _as_words(packed: jax.Array) -> jax.Array:
  """uint8 [out, n] as uint32 [out, ceil(n/4)]: 4x fewer popcounts, same bits."""
  if packed.dtype == jnp.uint32:
    return packed
  out, n = packed.shape
  pad = (-n) % 4
  if pad:
    packed = jnp.pad(packed, ((0, 0), (0, pad)))
  return jax.lax.bitcast_convert_type(packed.reshape(out, (n + pad) // 4, 4), jnp.uint32)


@jax.jit
def _overlap_rows(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-row |A∩B| and |A∪B| (uint32: exact up to 2^32 bits per row)."""
  a, b = _as_words(a), _as_words(b)
  inter = jnp.sum(jax.lax.population_count(a & b), axis=-1, dtype=jnp.uint32)
  union = jnp.sum(jax.lax.population_count(a | b), axis=-1, dtype=jnp.uint32)
  return inter, union


@jax.jit
def _kept_rows(a: jax.Array) -> jax.Array:
  """Per-row number of kept weights."""
  return jnp.sum(jax.lax.population_count(_as_words(a)), axis=-1, dtype=jnp.uint32)


def _device_view(packed: Any) -> Any:
  """A zero-copy uint32 view of a numpy packed mask when its rows allow it.

  Reinterpreting in numpy is free; the same reinterpretation inside XLA costs a
  copy (about 2x slower on CPU), which stays the fallback for odd row widths.
  """
  if isinstance(packed, np.ndarray) and packed.dtype == np.uint8 and packed.ndim == 2:
    if packed.shape[1] % 4 == 0 and packed.flags.c_contiguous:
      return packed.view(np.uint32)
  return packed


def _check_packed(name: str, a: Any, b: Any | None = None) -> None:
  for x in (a,) if b is None else (a, b):
    if np.ndim(x) != 2 or np.dtype(x.dtype) != np.uint8:
      raise JaxpruneError(
          f"packed mask {name} is {np.dtype(x.dtype)} with shape {np.shape(x)}: pass uint8"
          " [out, ceil(in/8)] arrays from jaxprune.pruning.masks.pack or store.load_packed_masks"
      )
  if b is not None and np.shape(a) != np.shape(b):
    raise JaxpruneError(
        f"mask {name} has shape {np.shape(a)} in one set and {np.shape(b)} in the other:"
        " compare masks of the same model"
    )


def overlap_counts(packed_a: Any, packed_b: Any) -> tuple[int, int]:
  """(|A∩B|, |A∪B|) of one packed matrix pair, exact (summed in int64)."""
  inter, union = _overlap_rows(_device_view(packed_a), _device_view(packed_b))
  return int(np.asarray(inter, np.int64).sum()), int(np.asarray(union, np.int64).sum())


def kept_count(packed: Any) -> int:
  """Number of kept weights of one packed matrix."""
  return int(np.asarray(_kept_rows(_device_view(packed)), np.int64).sum())


def distance(intersection: int, union: int) -> float:
  """1 - |A∩B|/|A∪B|; two empty sets are identical, so distance 0."""
  return 0.0 if union == 0 else 1.0 - intersection / union


# --------------------------------------------------------------------------- #
# Notebook API
# --------------------------------------------------------------------------- #


def _check_names(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
  only = sorted(set(a) ^ set(b))
  if only:
    raise JaxpruneError(
        f"{len(only)} matrices are in only one of the two mask sets (first: {only[0]}):"
        " compare masks of the same model, or pass dicts restricted to common names"
    )
  return list(a)


def jaccard_packed(packed_a: Mapping[str, Any], packed_b: Mapping[str, Any]) -> dict[str, float]:
  """Jaccard distance per matrix of two packed mask sets (uint8 [out, ceil(in/8)])."""
  result = {}
  for name in _check_names(packed_a, packed_b):
    _check_packed(name, packed_a[name], packed_b[name])
    result[name] = distance(*overlap_counts(packed_a[name], packed_b[name]))
  return result


def jaccard(masks_a: Mapping[str, Any], masks_b: Mapping[str, Any]) -> dict[str, float]:
  """Jaccard distance per matrix of two bool mask sets ({name: bool [out, in]}).

  Each matrix is packed on its own right before counting, so memory stays at
  one matrix's bits beyond the inputs.
  """
  result = {}
  for name in _check_names(masks_a, masks_b):
    a, b = np.asarray(masks_a[name]), np.asarray(masks_b[name])
    if a.shape != b.shape or a.ndim != 2:
      raise JaxpruneError(
          f"mask {name} has shape {a.shape} in one set and {b.shape} in the other:"
          " compare 2-D masks of the same model"
      )
    result[name] = distance(*overlap_counts(masks_lib.pack(a), masks_lib.pack(b)))
  return result


# --------------------------------------------------------------------------- #
# Runs
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class Run:
  """A prune run directory: where its masks are and what run.json says."""

  path: Path
  label: str
  model: dict[str, Any]
  domain: str | None
  options: dict[str, Any]
  calibration: dict[str, Any]
  shapes: dict[str, tuple[int, int]]

  @property
  def seed(self) -> Any:
    """The calibration sampling seed (`jaxprune prune` records it there)."""
    return self.options.get("seed", self.calibration.get("seed"))


def read_run(path: str | os.PathLike, label: str | None = None) -> Run:
  """Read run.json and the masks' metadata (no arrays)."""
  path = Path(path).absolute()  # Orbax restores only from absolute paths.
  if not path.exists():
    raise JaxpruneError(f"run directory {path} does not exist: pass a directory written by `jaxprune prune`")
  info: dict[str, Any] = {}
  run_json = path / store.RUN_JSON
  if run_json.is_file():
    try:
      info = json.loads(run_json.read_text())
    except json.JSONDecodeError as err:
      raise JaxpruneError(f"{run_json} is not valid JSON ({err.msg}, line {err.lineno}): fix or rewrite it") from None
  else:
    log.warning("%s has no %s (an unfinished run?): calibration domain unknown", path, store.RUN_JSON)
  meta = store.load_masks_metadata(path)
  calibration = dict(info.get("calibration") or {})
  model = info.get("model") or meta.get("model")
  return Run(
      path=path,
      label=label or path.name,
      model=dict(model) if isinstance(model, Mapping) else {},
      domain=domain_of(calibration),
      options=dict(info.get("options") or {}),
      calibration=calibration,
      shapes={n: (int(s[0]), int(s[1])) for n, s in meta["shapes"].items()},
  )


def domain_of(calibration: Mapping[str, Any]) -> str | None:
  """run.json's ``calibration.source``; a token file is its own domain, by path."""
  source = calibration.get("source")
  if source == "tokens-file" and calibration.get("path"):
    return f"tokens-file:{calibration['path']}"
  return source


def unique_labels(paths: Sequence[str | os.PathLike]) -> list[str]:
  """Directory names, suffixed with their position where two are the same."""
  names = [Path(p).absolute().name for p in paths]
  return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def check_same_model(runs: Sequence[Run]) -> None:
  """Runs of different models (by run.json id/hash, or by matrices) don't compare."""
  first = runs[0]
  for run in runs[1:]:
    for key in ("id", "hash"):
      x, y = first.model.get(key), run.model.get(key)
      if x is not None and y is not None and x != y:
        raise JaxpruneError(
            f"runs {first.label} and {run.label} come from different models (model {key}"
            f" {x!r} vs {y!r}): compare runs pruned from the same model"
        )
    if run.shapes != first.shapes:
      diff = sorted(set(run.shapes.items()) ^ set(first.shapes.items()))
      raise JaxpruneError(
          f"runs {first.label} and {run.label} have different matrices (first difference:"
          f" {diff[0][0]}): compare runs pruned from the same model"
      )


def group_of(a: Run, b: Run) -> str:
  """'within' / 'across' calibration domain, or 'unknown' without run.json."""
  if a.domain is None or b.domain is None:
    return "unknown"
  return "within" if a.domain == b.domain else "across"


def projection_of(name: str) -> str:
  """The block-relative part of a name: ``self_attn.q_proj`` for layer matrices."""
  rel = spec.block_relative(name)
  if ".layers.#." in rel:
    rel = rel.split(".layers.#.", 1)[1]
  return rel.removesuffix(".weight")


# --------------------------------------------------------------------------- #
# Pairwise tables
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class Row:
  """One matrix of one pair of runs."""

  run_a: str
  run_b: str
  group: str
  name: str
  layer: int | None
  projection: str
  intersection: int
  union: int
  kept_a: int
  kept_b: int
  numel: int
  distance: float


def pairwise(runs: Sequence[Run], packed: Sequence[Mapping[str, Any]]) -> list[Row]:
  """Every matrix of every pair of runs (i < j), in matrix-major order.

  Matrix-major keeps one matrix shape hot in the jit cache across pairs.
  """
  names = list(runs[0].shapes)
  rows = []
  for name in names:
    kept = [kept_count(p[name]) for p in packed]
    out, inp = runs[0].shapes[name]
    for i in range(len(runs)):
      for j in range(i + 1, len(runs)):
        _check_packed(name, packed[i][name], packed[j][name])
        inter, union = overlap_counts(packed[i][name], packed[j][name])
        rows.append(Row(
            run_a=runs[i].label, run_b=runs[j].label, group=group_of(runs[i], runs[j]),
            name=name, layer=spec.block_of(name), projection=projection_of(name),
            intersection=inter, union=union, kept_a=kept[i], kept_b=kept[j],
            numel=out * inp, distance=distance(inter, union),
        ))
  return rows


def mean_distance(rows: Sequence[Row], run_a: str, run_b: str) -> float:
  """Unweighted mean over matrices of one pair (every matrix counts once)."""
  ds = [r.distance for r in rows if {r.run_a, r.run_b} == {run_a, run_b}]
  return float(np.mean(ds)) if ds else 0.0


def kept_fraction(rows: Sequence[Row], label: str) -> float:
  """Fraction of weights run ``label`` keeps, over all compared matrices."""
  kept, numel = {}, {}
  for r in rows:
    if label in (r.run_a, r.run_b):
      kept[r.name] = r.kept_a if r.run_a == label else r.kept_b
      numel[r.name] = r.numel
  return sum(kept.values()) / max(1, sum(numel.values()))


def distance_matrix(rows: Sequence[Row], labels: Sequence[str]) -> np.ndarray:
  """Run x run mean distance, symmetric, zero diagonal."""
  n = len(labels)
  mat = np.zeros((n, n))
  for i in range(n):
    for j in range(i + 1, n):
      mat[i, j] = mat[j, i] = mean_distance(rows, labels[i], labels[j])
  return mat


def read_runs(paths: Sequence[str | os.PathLike]) -> list[Run]:
  """Read and check several runs' run.json and masks metadata (no arrays yet)."""
  if len(paths) < 2:
    raise JaxpruneError("compare needs at least two runs: pass RUN_A RUN_B [RUN_C ...]")
  runs = [read_run(p, label) for p, label in zip(paths, unique_labels(paths))]
  check_same_model(runs)
  return runs


def load_packed(runs: Sequence[Run]) -> list[dict[str, np.ndarray]]:
  """The runs' packed masks (1 bit per weight: 0.8 GB per run of a 7B model)."""
  packed = []
  for run in runs:
    log.info("loading packed masks of %s", run.path)
    packed.append(store.load_packed_masks(run.path)[0])
  return packed


def load_runs(paths: Sequence[str | os.PathLike]) -> tuple[list[Run], list[dict[str, np.ndarray]]]:
  """`read_runs` then `load_packed`."""
  runs = read_runs(paths)
  return runs, load_packed(runs)
