"""GGUF files: config, tensors (dequantized in numpy) and tokenizer, no torch.

llama.cpp names tensors its own way (``blk.3.attn_q.weight``), stores Gemma's
norm scales with the ``+1`` folded in, and permutes the rows of q/k
projections for its rotary layout **only for its ``llama`` architecture**
(Llama, Mistral and the other models its converter writes through its Llama
class; `PERMUTED_ARCHITECTURES`). Qwen2 and Gemma files are stored unpermuted.
Hyperparameters a file does not state are llama.cpp's (Gemma 2/3's attention
scale from head_dim, or hidden/heads for the 27B models; Gemma 2's soft-caps).
This module undoes exactly what llama.cpp did, so a GGUF model enters the same
HF-named pipeline as a safetensors folder.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from jaxprune.converters import names
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)

# Quantization types jaxprune dequantizes (all via gguf-py's numpy kernels).
SUPPORTED_QUANTS = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")

_ARCH_TO_MODEL_TYPE = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "gemma": "gemma",
                       "gemma2": "gemma2", "gemma3": "gemma3_text"}

# Architectures whose q/k rows llama.cpp's converter permutes (`LlamaModel.permute`);
# transformers' GGUF loader un-permutes the same set (its `LlamaTensorProcessor`).
PERMUTED_ARCHITECTURES = frozenset({"llama"})

# Layer counts by which llama.cpp recognises Gemma 2/3 27B (their own attention scale).
_GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3": 62}

_TOP_TENSORS = {stem: hf.removesuffix(".weight") for hf, _, stem in names.TOP}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")


def _metadata(reader) -> dict[str, Any]:
  out = {}
  for key, field in reader.fields.items():
    try:
      out[key] = field.contents()
    except Exception:  # a field type gguf-py cannot decode is not one we need
      continue
  return out


def _config(meta: dict[str, Any], tensor_names: set[str]):
  """A transformers config object built from GGUF metadata."""
  from transformers import AutoConfig

  arch = meta.get("general.architecture")
  if arch not in _ARCH_TO_MODEL_TYPE:
    raise JaxpruneError(
        f"unsupported GGUF architecture {arch!r}: jaxprune reads {', '.join(_ARCH_TO_MODEL_TYPE)} GGUF files"
    )
  model_type = _ARCH_TO_MODEL_TYPE[arch]
  g = lambda key, default=None: meta.get(f"{arch}.{key}", default)  # noqa: E731
  heads = int(g("attention.head_count"))
  hidden = int(g("embedding_length"))
  vocab = int(g("vocab_size") or len(meta["tokenizer.ggml.tokens"]))
  kwargs: dict[str, Any] = dict(
      vocab_size=vocab,
      hidden_size=hidden,
      intermediate_size=int(g("feed_forward_length")),
      num_hidden_layers=int(g("block_count")),
      num_attention_heads=heads,
      num_key_value_heads=int(g("attention.head_count_kv", heads)),
      head_dim=int(g("attention.key_length", g("rope.dimension_count", hidden // heads))),
      max_position_embeddings=int(g("context_length", 2048)),
      rms_norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-6)),
      tie_word_embeddings="output.weight" not in tensor_names,
      bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
      eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
      pad_token_id=meta.get("tokenizer.ggml.padding_token_id"),
  )
  theta = float(g("rope.freq_base", 10_000.0))
  kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
  if model_type in ("gemma2", "gemma3_text"):
    # llama.cpp scales queries by 1/sqrt(head_dim), but by 1/sqrt(hidden / heads)
    # for the 27B models, which it recognises by their layer count.
    is_27b = kwargs["num_hidden_layers"] == _GEMMA_27B_LAYERS[arch]
    kwargs["query_pre_attn_scalar"] = hidden // heads if is_27b else kwargs["head_dim"]
  window = g("attention.sliding_window")
  if model_type == "gemma2":  # absent keys: llama.cpp's defaults (Gemma 2's values)
    kwargs.update(
        sliding_window=int(window) if window else 4096,
        attn_logit_softcapping=float(g("attn_logit_softcapping", 50.0)),
        final_logit_softcapping=float(g("final_logit_softcapping", 30.0)),
    )
  elif model_type == "gemma3_text":
    pattern = 6  # Gemma 3: five sliding-window layers, then one global
    kwargs.update(
        sliding_window=int(window) if window else 512,
        layer_types=[
            "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
            for i in range(kwargs["num_hidden_layers"])
        ],
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        hidden_activation="gelu_pytorch_tanh",
    )
  if g("rope.scaling.type") not in (None, "none"):
    raise JaxpruneError(f"GGUF RoPE scaling {g('rope.scaling.type')!r} is not supported yet")
  return AutoConfig.for_model(model_type, **kwargs)


def hf_name(gguf_name: str, sandwich_norms: bool) -> str:
  """The HF parameter name of a llama.cpp tensor name."""
  stem, _, kind = gguf_name.rpartition(".")
  if stem in _TOP_TENSORS:
    return f"{_TOP_TENSORS[stem]}.{kind}"
  match = _BLOCK_RE.match(gguf_name)
  table = {stem: hf for hf, _, stem in names.block_rows(sandwich_norms)}
  if not match or match.group(2) not in table:
    return gguf_name  # left for the loader to report as unexpected
  return f"model.layers.{match.group(1)}.{table[match.group(2)]}.{match.group(3)}"


def _unpermute(weights: np.ndarray, n_head: int) -> np.ndarray:
  """Undo llama.cpp's interleaving of q/k rows (as transformers does)."""
  dim = weights.shape[0] // n_head // 2
  w = weights.reshape(n_head, dim, 2, *weights.shape[1:])
  return w.swapaxes(2, 1).reshape(weights.shape)


class GGUFSource:
  """A `TensorSource` over a GGUF file, dequantizing one tensor at a time."""

  def __init__(self, path: Path, reader, config, architecture: str):
    self.path = path
    self._reader = reader
    self._config = config
    from jaxprune.converters import families

    fam = families.FAMILIES[families.family_name(config)]
    self._gemma = fam.gemma_norms
    self._permuted = architecture in PERMUTED_ARCHITECTURES
    self._tensors = {hf_name(t.name, fam.sandwich_norms): t for t in reader.tensors}
    for name, tensor in self._tensors.items():
      if tensor.tensor_type.name not in SUPPORTED_QUANTS:
        raise JaxpruneError(
            f"{path}: tensor {tensor.name} uses quantization {tensor.tensor_type.name}, which jaxprune"
            f" does not dequantize ({', '.join(SUPPORTED_QUANTS)}): re-quantize it, e.g. to Q8_0"
        )

  def names(self) -> list[str]:
    return sorted(self._tensors)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(int(d) for d in reversed(self._tensors[name].shape.tolist()))

  def get(self, name: str) -> np.ndarray:
    from gguf.quants import dequantize

    tensor = self._tensors[name]
    array = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32).reshape(self.shape(name))
    if self._permuted and name.endswith("self_attn.q_proj.weight"):
      array = _unpermute(array, self._config.num_attention_heads)
    elif self._permuted and name.endswith("self_attn.k_proj.weight"):
      array = _unpermute(array, self._config.num_key_value_heads)
    elif self._gemma and name.endswith("norm.weight"):
      array = array - 1.0  # llama.cpp stores Gemma norm scales as 1 + w
    return array


def _tokenizer(reader, meta: dict[str, Any]):
  """The transformers fast tokenizer described by the GGUF metadata."""
  from transformers import PreTrainedTokenizerFast
  from transformers.integrations.gguf.gguf_tokenizer_mapping import (
      _SPECIAL_TOKENS,
      GGUF_TOKENIZER_MAPPING,
      convert_gguf_tokenizer,
  )

  def strings(key):
    field = reader.fields[key]
    return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]

  meta = dict(meta)
  for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
    if key in reader.fields:
      meta[key] = strings(key)
  grouped = {
      group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
      for group, renames in GGUF_TOKENIZER_MAPPING.items()
  }
  tokenizer_dict, tokenizer_config = grouped["tokenizer"], grouped["tokenizer_config"]
  if tokenizer_dict.get("tokenizer_type") == "llama":
    tokenizer_config.setdefault("add_bos_token", True)
  for name, key in _SPECIAL_TOKENS.items():
    token_id = meta.get(f"tokenizer.ggml.{key}")
    tokenizer_config[name] = tokenizer_dict["tokens"][token_id] if token_id is not None else None
  backend, extra = convert_gguf_tokenizer(meta["general.architecture"], tokenizer_dict)
  return PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer_config, **extra)


def open_gguf(path: Path):
  """(config, tensor source, tokenizer) of a GGUF file."""
  import gguf

  try:
    reader = gguf.GGUFReader(str(path))
  except Exception as err:  # gguf-py raises ValueError/struct errors on bad files
    raise JaxpruneError(f"{path} is not a readable GGUF file ({err}): re-download it") from None
  meta = _metadata(reader)
  config = _config(meta, {t.name for t in reader.tensors})
  source = GGUFSource(Path(path), reader, config, meta["general.architecture"])
  return config, source, _tokenizer(reader, meta)
