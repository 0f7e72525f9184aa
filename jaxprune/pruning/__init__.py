"""The pruning engine: from a model and calibration tokens to masks.

`driver` runs the blocks (the only module here that calls `jax.jit` or builds
a mesh, with `sharding` and `activations`); `blocks` splits a model into
decoder blocks and applies results; `stats` accumulates each linear's input
statistics; `methods` is the registry of pruning methods, each a score from
`scores` (or a weight update, `sparsegpt`); `masks` selects what is kept
under a pattern; `allocation` plans per-block sparsities (OWL).

Example:
  >>> from jaxprune import pruning
  >>> result = pruning.prune(loaded, tokens, pruning.PruneConfig(sparsity=0.5))
"""

from jaxprune.pruning.activations import auto_microbatch
from jaxprune.pruning.blocks import apply_result, split_blocks
from jaxprune.pruning.driver import PruneConfig, PruneResult, block_patterns, owl_allocation, prune
from jaxprune.pruning.sharding import MeshConfig, data_mesh

__all__ = ["MeshConfig", "PruneConfig", "PruneResult", "apply_result", "auto_microbatch", "block_patterns",
           "data_mesh", "owl_allocation", "prune", "split_blocks"]
