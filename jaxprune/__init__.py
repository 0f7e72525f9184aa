"""jaxprune: domain- and language-specific sub-models of HF LLMs by Wanda pruning."""

from jaxprune.errors import JaxpruneError
from jaxprune.spec import LinearSpec, ModelSpec

__version__ = "0.1.0"

__all__ = ["JaxpruneError", "LinearSpec", "ModelSpec", "__version__"]
