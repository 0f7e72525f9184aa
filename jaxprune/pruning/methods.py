"""The pruning methods: one frozen description each, in one registry.

The driver (`jaxprune.pruning`) asks a `Method` everything that differs between
methods (the statistics to collect, how a linear's keep-mask is chosen, whether
kept weights change) and never names a method. Adding a method is a score
function in `jaxprune.pruning.scores` and one `register` call here:

  >>> register(Method("my-score", score=lambda w, sq_norm, config: ...,
  ...                 doc="my importance score"))

after which ``jaxprune prune --method my-score`` and ``PruneConfig(method=...)``
accept it (see docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from jaxprune.pruning import scores, sparsegpt
from jaxprune.pruning import masks as masks_lib
from jaxprune.errors import JaxpruneError

# score(w [out, in], sq_norm [in], config) -> importance [out, in]; higher is kept.
Score = Callable[[jax.Array, jax.Array, Any], jax.Array]
# update(w [out, in], hessian [in, in], pattern, config) -> (new weights, keep-mask).
Update = Callable[[jax.Array, jax.Array, masks_lib.Pattern, Any], tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Method:
  """What the driver needs to know of one pruning method.

  Attributes:
    name: the ``--method`` / `PruneConfig.method` value.
    score: a pure importance score; the mask keeps the highest scores under
      the pattern. Exactly one of ``score`` and ``update`` is given.
    update: a pure function that chooses the mask and updates the kept weights
      (SparseGPT); it sees the Gram matrix of the linear's inputs.
    needs_calibration: whether the method reads input statistics at all.
    gram: whether the statistics include the full Gram matrix X^T X (not only
      its diagonal, Wanda's squared column norms).
    per_row: compare scores within each output row (Wanda's rule); when False
      the whole matrix is ranked at once unless `PruneConfig.per_row` asks for
      rows.
    doc: one line for ``--help``.
  """

  name: str
  score: Score | None = None
  update: Update | None = None
  needs_calibration: bool = True
  gram: bool = False
  per_row: bool = True
  doc: str = ""

  def __post_init__(self):
    if (self.score is None) == (self.update is None):
      raise ValueError(f"method {self.name!r}: give exactly one of score and update")

  @property
  def updates_weights(self) -> bool:
    return self.update is not None


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
  REGISTRY[method.name] = method
  return method


def get(name: str) -> Method:
  """The registered method ``name``, or one line naming the choices."""
  if name not in REGISTRY:
    raise JaxpruneError(f"unknown method {name!r}: choose one of {', '.join(REGISTRY)}")
  return REGISTRY[name]


def names() -> tuple[str, ...]:
  return tuple(REGISTRY)


# --------------------------------------------------------------------------- #
# Pure per-block and per-matrix steps (jit-compiled by the driver)
# --------------------------------------------------------------------------- #


def choose_mask(w: jax.Array, sq_norm: jax.Array, method: str, pattern: masks_lib.Pattern, config) -> jax.Array:
  """Keep-mask of one linear of a score-based method."""
  m = get(method)
  return masks_lib.select(m.score(w, sq_norm, config), pattern, per_row=m.per_row or config.per_row)


def choose_masks(ws: dict[str, jax.Array], sq_norms: dict[str, jax.Array], method: str,
                 pattern: masks_lib.Pattern, config) -> dict[str, jax.Array]:
  """`choose_mask` for every linear of a block (one compiled call per block)."""
  return {k: choose_mask(w, sq_norms[k], method, pattern, config) for k, w in ws.items()}


def update_matrix(w: jax.Array, hessian: jax.Array, method: str, pattern: masks_lib.Pattern,
                  config) -> tuple[jax.Array, jax.Array]:
  """(new weights, keep-mask) of one linear of a weight-updating method."""
  return get(method).update(w, hessian, pattern, config)


# --------------------------------------------------------------------------- #
# The registry
# --------------------------------------------------------------------------- #

register(Method("wanda", score=lambda w, sq, config: scores.wanda(w, sq),
                doc="|W| x input norm, per output row (Sun et al., 2024)"))
register(Method("magnitude", score=lambda w, sq, config: scores.magnitude(w), needs_calibration=False,
                per_row=False, doc="|W|, one threshold per matrix (or per row with --per-row)"))
register(Method("ria", score=lambda w, sq, config: scores.ria(w, sq, config.ria_exponent),
                doc="relative importance x input norm^a (Zhang et al., 2024)"))
register(Method("sparsegpt", gram=True, doc="OBS pruning that updates the kept weights (Frantar & Alistarh, 2023)",
                update=lambda w, h, pattern, config: sparsegpt.prune(
                    w, h, pattern, config.sparsegpt_blocksize, config.sparsegpt_percdamp)))
