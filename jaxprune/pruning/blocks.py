"""Pure per-block pieces of the pruning pipeline (no jit, no meshes).

A decoder block is cut out of the penzai model, run with probes inserted, and
rewritten with its pruned weights; the driver (`jaxprune.pruning`) compiles
these functions and decides where data lives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from penzai import pz
from penzai.models.transformer import model_parts

from jaxprune.pruning import masks as masks_lib
from jaxprune.model import weights
from jaxprune.pruning import stats
from jaxprune.errors import JaxpruneError
from jaxprune.model.spec import block_relative

# --------------------------------------------------------------------------- #


def split_blocks(model) -> tuple[pz.nn.Layer, list[pz.nn.Layer], pz.nn.Layer]:
  """(embedding prefix, decoder blocks, head) of a penzai TransformerLM."""
  body = model.body.sublayers
  index = [i for i, layer in enumerate(body) if isinstance(layer, model_parts.TransformerBlock)]
  if not index:
    raise JaxpruneError("the model has no TransformerBlock: load it with converters.load_model")
  return (
      pz.nn.Sequential(list(body[: index[0]])),
      [body[i] for i in index],
      pz.nn.Sequential(list(body[index[-1] + 1 :])),
  )


def parameter_dtype(tree) -> str:
  """The dtype ``tree``'s parameters are stored in (e.g. "float32", "bfloat16"), bound or frozen."""
  values = pz.freeze_params(tree).select().at_instances_of(pz.ParameterValue).get_sequence()
  return str(values[0].value.dtype) if values else "unknown"


def canonical(tree):
  """Unbind variables and give them block-relative labels.

  Labels are static metadata of the jitted function's arguments; making them
  the same for every block lets all blocks share one compiled function.
  """
  tree_def, values = pz.unbind_variables(tree, freeze=True)
  tree_def = (
      tree_def.select()
      .at_instances_of(pz.ParameterSlot | pz.StateVariableSlot)
      .apply(lambda s: dataclasses.replace(s, label=block_relative(str(s.label))))
  )
  values = [dataclasses.replace(v, label=block_relative(str(v.label))) for v in values]
  return tree_def, values


# --------------------------------------------------------------------------- #
# Pure step functions (jit-compiled by the driver below)
# --------------------------------------------------------------------------- #


def embed(prefix, tokens: jax.Array) -> jax.Array:
  """Token ids [batch, seq] -> residual stream [batch, seq, embedding]."""
  out = prefix(pz.nx.wrap(tokens).tag("batch", "seq"))
  return out.unwrap("batch", "seq", "embedding")


def block_forward(block_def, values, x: jax.Array, weight: jax.Array):
  """Run one block; return its outputs and the final probe statistics."""
  variables = [v.unfreeze_as_copy() for v in values]
  block = pz.bind_variables(block_def, variables)
  positions = pz.nx.arange("seq", x.shape[1])
  out = block(
      pz.nx.wrap(x).tag("batch", "seq", "embedding"),
      token_positions=positions,
      **{stats.SAMPLE_WEIGHT: pz.nx.wrap(weight).tag("batch")},
  )
  states = [v.freeze() for v in variables if isinstance(v, pz.StateVariable)]
  return out.unwrap("batch", "seq", "embedding"), states


def block_statistics(block_def, values, x: jax.Array, weight: jax.Array):
  """Only the probe statistics of `block_forward`.

  The sequential pass takes the next block's inputs from the pruned block, so
  the dense outputs are not needed; without them XLA drops what only they
  feed: the block's last linear (``down_proj``), whose input is probed but
  whose product is not (about a fifth of a SmolLM2 step's FLOPs).
  """
  return block_forward(block_def, values, x, weight)[1]


def apply_pruning(model, masks: Mapping[str, np.ndarray], new_weights: Mapping[str, jax.Array] | None = None):
  """``model`` (or one block) with SparseGPT's updated weights set, then pruned weights zeroed."""
  if new_weights:
    model = weights.map_linear_weights(
        model, lambda n, m: jnp.asarray(new_weights[n]).astype(m.dtype) if n in new_weights else None)
  return masks_lib.apply(model, masks)


def apply_result(model, result):
  """The penzai model (or `LoadedModel`'s model) with a `PruneResult` applied."""
  return apply_pruning(getattr(model, "model", model), result.masks, result.weights)
