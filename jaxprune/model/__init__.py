"""What jaxprune knows of a penzai model, independent of pruning.

`spec` describes a model's prunable linears (HF names and shapes, blocks);
`weights` finds them in a penzai model and maps over their HF-layout matrices
(surgery by selectors); `attention` is the chunked causal attention swapped
in for long calibration and evaluation passes.
"""

from jaxprune.model.spec import LinearSpec, ModelSpec

__all__ = ["LinearSpec", "ModelSpec"]
