"""A sub-model as stored in a library: a packed mask over the base, and updated weights kept sparsely.

Pure functions between a run's (masks, SparseGPT weights) and the library's
arrays, and the one function that derives a sub-model from the base model.

* ``mask``: per linear, the 1-bit packed keep-mask (`jaxprune.pruning.masks.pack`).
* ``kept``: per linear SparseGPT changed, only the kept weights' values, in
  row-major order of the mask's True entries (pruned weights are zero anyway).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.pruning import masks as masks_lib
from jaxprune.model import weights
from jaxprune.errors import JaxpruneError


def encode(masks: Mapping[str, np.ndarray], new_weights: Mapping[str, np.ndarray]
           ) -> tuple[dict[str, np.ndarray], dict[str, list[int]], dict[str, np.ndarray]]:
  """(packed masks, shapes, kept values of updated weights) of a run's masks and SparseGPT weights."""
  packed = {name: masks_lib.pack(np.asarray(m, bool)) for name, m in masks.items()}
  shapes = {name: list(np.shape(m)) for name, m in masks.items()}
  kept = {}
  for name, w in new_weights.items():
    if name not in masks:
      raise JaxpruneError(f"the run's updated weight {name} has no mask: the run is damaged; prune it again")
    kept[name] = np.ascontiguousarray(np.asarray(w)[np.asarray(masks[name], bool)])
  return packed, shapes, kept


def unpack(packed: Mapping[str, np.ndarray], shapes: Mapping[str, list[int]]) -> dict[str, np.ndarray]:
  """Bool keep-masks [out, in] from packed ones."""
  return {name: masks_lib.unpack(packed[name], shapes[name][1]) for name in shapes}


def dense_weights(masks: Mapping[str, np.ndarray], kept: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The updated weights [out, in]: kept values at the mask's True entries, zero elsewhere."""
  out = {}
  for name, values in kept.items():
    mask = np.asarray(masks[name], bool)
    if int(mask.sum()) != values.size:
      raise JaxpruneError(f"sub-model weights of {name} hold {values.size} values for {int(mask.sum())} kept"
                          " weights: the library is damaged; rebuild it with `jaxprune library build`")
    dense = np.zeros(mask.shape, values.dtype)
    dense[mask] = values
    out[name] = dense
  return out


def check_fits(model, shapes: Mapping[str, list[int]]) -> None:
  """Refuse masks naming linears the model lacks or of other shapes (another model's)."""
  linears = weights.prunable_linears(model, names=set(shapes))
  for name, shape in shapes.items():
    if name not in linears:
      raise JaxpruneError(f"the library's masks name {name}, which its base model lacks: the library is damaged;"
                          " rebuild it with `jaxprune library build`")
    outs, ins = weights.axis_sizes(linears[name])
    if (math.prod(outs), math.prod(ins)) != tuple(shape):
      raise JaxpruneError(f"mask {name} has shape {tuple(shape)}, the base's weight {(math.prod(outs), math.prod(ins))}:"
                          " the library is damaged; rebuild it with `jaxprune library build`")


@jax.jit
def _keep(matrix: jax.Array, packed: jax.Array) -> jax.Array:
  """``matrix`` [out, in] with the weights whose bit in ``packed`` [out, ceil(in/8)] is 0 set to zero.

  Unpacks on the device, in the little bit order of `jaxprune.pruning.masks.pack`: the
  host never holds the bool mask.
  """
  bits = (packed[:, :, None] >> jnp.arange(8, dtype=jnp.uint8)) & 1
  keep = bits.reshape(packed.shape[0], -1)[:, :matrix.shape[1]].astype(bool)
  return jnp.where(keep, matrix, jnp.zeros((), matrix.dtype))


def apply(base_model, packed: Mapping[str, np.ndarray], shapes: Mapping[str, list[int]],
          kept: Mapping[str, np.ndarray]):
  """The sub-model: ``base_model`` with updated weights set and pruned weights zeroed.

  Only the masked linears get new arrays; every other parameter (embeddings,
  norms, biases) is the base's own array, shared, not copied.
  """
  check_fits(base_model, shapes)
  updated = dense_weights(unpack({n: packed[n] for n in kept}, {n: shapes[n] for n in kept}), kept)

  def sub(name, matrix):
    if name not in shapes:
      return None
    source = jnp.asarray(updated[name]).astype(matrix.dtype) if name in updated else matrix
    return _keep(source, jnp.asarray(packed[name]))

  return weights.map_linear_weights(base_model, sub)
