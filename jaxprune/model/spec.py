"""What the pruning core needs to know about a model, independent of its family.

Converters (HF safetensors, GGUF) produce a `ModelSpec`; the core never imports
them. Parameters of the penzai model are labelled with their Hugging Face
names (``model.layers.3.self_attn.q_proj.weight``), so masks, statistics and
exports all speak the same names.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

_LAYER_RE = re.compile(r"\.layers\.(\d+)\.")


@dataclasses.dataclass(frozen=True)
class LinearSpec:
  """One prunable linear: its HF parameter name and HF shape [out, in]."""

  name: str
  block: int
  out_features: int
  in_features: int

  @property
  def shape(self) -> tuple[int, int]:
    return (self.out_features, self.in_features)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Architecture facts: family, sizes and every prunable linear.

  Attributes:
    family: HF ``model_type`` (``llama``, ``mistral``, ``qwen2``, ``gemma``...).
    num_layers: number of decoder blocks.
    hidden_size: width of the residual stream.
    vocab_size: vocabulary size.
    max_positions: longest context the model supports.
    linears: prunable linears, in block order then q, k, v, o, gate, up, down.
    hf_config: the HF ``config.json`` content, used for export.
    num_parameters: total parameter count (tied weights counted once).
  """

  family: str
  num_layers: int
  hidden_size: int
  vocab_size: int
  max_positions: int
  linears: tuple[LinearSpec, ...]
  hf_config: dict[str, Any] = dataclasses.field(compare=False)
  num_parameters: int = 0

  def linears_of_block(self, block: int) -> tuple[LinearSpec, ...]:
    return tuple(l for l in self.linears if l.block == block)

  @property
  def linear_names(self) -> tuple[str, ...]:
    return tuple(l.name for l in self.linears)

  @property
  def prunable_parameters(self) -> int:
    return sum(l.out_features * l.in_features for l in self.linears)


def block_of(name: str) -> int | None:
  """Decoder-block index of an HF parameter name, or None outside the blocks."""
  match = _LAYER_RE.search(name)
  return int(match.group(1)) if match else None


def block_relative(name: str) -> str:
  """The name with its block index replaced, so all blocks share one label set.

  Blocks that share labels share a jit cache entry: the per-block loop then
  compiles once instead of once per block.
  """
  return _LAYER_RE.sub(".layers.#.", name, count=1)
