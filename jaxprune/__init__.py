"""jaxprune: domain- and language-specific sub-models of HF LLMs by Wanda pruning.

Example:
  >>> import jaxprune
  >>> from jaxprune import converters
  >>> loaded = converters.load_model("smollm2-135m")
  >>> tokens = jaxprune.calibration.sample("python", loaded.tokenizer, 32, 256, seed=0)
  >>> result = jaxprune.prune(loaded, tokens, jaxprune.PruneConfig(sparsity=0.5))
  >>> sub_model = jaxprune.pruning.masks.apply(loaded.model, result.masks)
"""

from jaxprune import calibration
from jaxprune.pruning import masks
from jaxprune.errors import JaxpruneError
from jaxprune.pruning import PruneConfig, PruneResult, prune
from jaxprune.model.spec import LinearSpec, ModelSpec

__version__ = "0.1.0"

__all__ = [
    "JaxpruneError", "LinearSpec", "ModelSpec", "PruneConfig", "PruneResult",
    "calibration", "masks", "prune", "__version__",
]
