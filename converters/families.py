"""Model families: HF config -> empty penzai structure with HF-named slots.

Each family is built with penzai's own llama-like builder
(`penzai.models.transformer.variants.llamalike_common`), then adjusted by
selector-based surgery where a family departs from it (Qwen2's q/k/v biases,
Gemma's ``(1 + w)`` norms, Gemma 3's q/k norms and per-layer RoPE bases).
Finally every parameter slot is relabelled with its HF parameter name, so the
loader only has to bind ``{hf_name: array}`` and the rest of jaxprune (masks,
statistics, export) speaks HF names.

Architectures differ only here: the pruning pipeline never looks at a family.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from penzai import pz
from penzai.models.transformer import model_parts
from penzai.models.transformer.variants import llamalike_common as llc

from jaxprune.converters import names
from jaxprune.errors import JaxpruneError
from jaxprune.model.spec import LinearSpec, ModelSpec

SUPPORTED = ("llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3_text")
_ALIASES = {"gemma3": "gemma3_text"}
_ACTIVATIONS = {"silu": "swiglu", "swish": "swiglu", "gelu_pytorch_tanh": "geglu_approx", "gelu": "geglu_exact"}


@dataclasses.dataclass(frozen=True)
class Family:
  """How a HF ``model_type`` departs from the plain Llama structure."""

  gemma_norms: bool = False  # RMSNorm scales by (1 + w); embeddings scaled by sqrt(d)
  sandwich_norms: bool = False  # post-attention and post-ffw norms (Gemma 2/3)
  qkv_bias: bool = False  # Qwen2
  qk_norm: bool = False  # Gemma 3


FAMILIES = {
    "llama": Family(),
    "mistral": Family(),
    "qwen2": Family(qkv_bias=True),
    "gemma": Family(gemma_norms=True),
    "gemma2": Family(gemma_norms=True, sandwich_norms=True),
    "gemma3_text": Family(gemma_norms=True, sandwich_norms=True, qk_norm=True),
}


@pz.pytree_dataclass
class OffsetScale(pz.nn.Layer):
  """Multiplies by ``offset + w``.

  Gemma checkpoints store RMSNorm scales as ``w`` and compute ``x * (1 + w)``.
  Keeping ``w`` as stored (instead of folding in the 1) makes load -> export
  bit-exact.
  """

  weights: pz.ParameterLike[pz.nx.NamedArray]
  offset: float = dataclasses.field(default=1.0, metadata={"pytree_node": False})

  def __call__(self, x: pz.nx.NamedArray, **_unused_side_inputs) -> pz.nx.NamedArray:
    return x * (self.offset + self.weights.value.astype(x.dtype))


def family_name(config) -> str:
  model_type = _ALIASES.get(config.model_type, config.model_type)
  if model_type not in FAMILIES:
    raise JaxpruneError(
        f"unsupported architecture {config.model_type!r}: jaxprune supports {', '.join(SUPPORTED)}"
    )
  return model_type


def _rope_theta(config, layer_type: str) -> float:
  params = getattr(config, "rope_parameters", None) or {}
  if layer_type in params and isinstance(params[layer_type], Mapping):
    params = params[layer_type]
  rope_type = params.get("rope_type", "default")
  if rope_type != "default":
    raise JaxpruneError(
        f"RoPE scaling {rope_type!r} is not supported yet: only default RoPE"
        " (no rope_scaling) models can be loaded"
    )
  theta = params.get("rope_theta", getattr(config, "rope_theta", None))
  return float(theta if theta is not None else 10_000.0)


def _layer_types(config) -> list[str]:
  n = config.num_hidden_layers
  types = getattr(config, "layer_types", None)
  if types:
    if getattr(config, "model_type", "") == "qwen2" and not getattr(config, "use_sliding_window", False):
      return ["full_attention"] * n
    return list(types)
  if getattr(config, "sliding_window", None):
    return ["sliding_attention"] * n
  return ["full_attention"] * n


def head_dim(config) -> int:
  explicit = getattr(config, "head_dim", None)
  return int(explicit) if explicit else config.hidden_size // config.num_attention_heads


def _penzai_config(config, param_dtype, activation_dtype) -> llc.LlamalikeTransformerConfig:
  fam = FAMILIES[family_name(config)]
  act = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", "silu")
  if act not in _ACTIVATIONS:
    raise JaxpruneError(f"activation {act!r} is not supported: jaxprune supports {', '.join(_ACTIVATIONS)}")
  kv = config.num_key_value_heads or config.num_attention_heads
  attention_types = []
  for layer_type in _layer_types(config):
    if layer_type == "sliding_attention":
      attention_types.append(llc.AttentionTypeSlidingWindowCausal(int(config.sliding_window)))
    elif layer_type == "full_attention":
      attention_types.append(llc.AttentionTypeGlobalCausal())
    else:
      raise JaxpruneError(f"layer type {layer_type!r} is not supported: use full or sliding attention models")
  scalar = getattr(config, "query_pre_attn_scalar", None)
  return llc.LlamalikeTransformerConfig(
      num_kv_heads=kv,
      query_head_multiplier=config.num_attention_heads // kv,
      embedding_dim=config.hidden_size,
      projection_dim=head_dim(config),
      mlp_hidden_dim=config.intermediate_size,
      num_decoder_blocks=config.num_hidden_layers,
      vocab_size=config.vocab_size,
      mlp_variant="swiglu" if _ACTIVATIONS[act] == "swiglu" else "geglu_approx",
      tie_embedder_and_logits=fam.gemma_norms,
      rope_wavelength=_rope_theta(config, "full_attention"),
      rms_norm_eps=config.rms_norm_eps,
      attention_type=tuple(attention_types),
      use_post_attn_norm=fam.sandwich_norms,
      use_post_ffw_norm=fam.sandwich_norms,
      final_logit_softcap=getattr(config, "final_logit_softcapping", None),
      attn_logits_soft_cap=getattr(config, "attn_logit_softcapping", None),
      query_scaling_factor=float(scalar) ** -0.5 if scalar else "default",
      parameter_dtype=param_dtype,
      activation_dtype=activation_dtype,
  )


# --------------------------------------------------------------------------- #
# HF names
# --------------------------------------------------------------------------- #

_TOP_NAMES = {penzai: hf for hf, penzai, _ in names.TOP}
PRUNABLE_SUFFIXES = names.PRUNABLE_SUFFIXES


def _hf_name(label: str, fam: Family) -> str:
  if label in _TOP_NAMES:
    return _TOP_NAMES[label]
  prefix, _, rest = label.partition("/block_")
  index, _, local = rest.partition("/")
  table = {f"{penzai}.weights": f"{hf}.weight" for hf, penzai, _ in names.block_rows(fam.sandwich_norms) if penzai}
  if prefix != "transformer" or local not in table:
    raise AssertionError(f"unmapped penzai parameter {label}")
  return f"model.layers.{index}.{table[local]}"


# --------------------------------------------------------------------------- #
# Axis layouts: how an HF tensor becomes a named array
# --------------------------------------------------------------------------- #


def layouts(config) -> dict[str, tuple[dict[str, int], dict[str, int]]]:
  """``{hf_name: (out_axes, in_axes)}`` for every parameter, in HF order."""
  pc = _penzai_config(config, jnp.float32, jnp.float32)
  fam = FAMILIES[family_name(config)]
  common, _, query_only, _ = llc._head_info(pc)  # pylint: disable=protected-access
  q_axes = {**common, **query_only, "projection": pc.projection_dim}
  kv_axes = {**common, "projection": pc.projection_dim}
  emb = {"embedding": pc.embedding_dim}
  neurons = {"neurons": pc.mlp_hidden_dim}
  out = {
      "model.embed_tokens.weight": ({"vocabulary": pc.vocab_size}, emb),
      "model.norm.weight": (emb, {}),
  }
  if not fam.gemma_norms:
    out["lm_head.weight"] = ({"vocabulary": pc.vocab_size}, emb)
  norm_names = names.norm_names(fam.sandwich_norms)
  for i in range(pc.num_decoder_blocks):
    p = f"model.layers.{i}."
    out[p + "self_attn.q_proj.weight"] = (q_axes, emb)
    out[p + "self_attn.k_proj.weight"] = (kv_axes, emb)
    out[p + "self_attn.v_proj.weight"] = (kv_axes, emb)
    out[p + "self_attn.o_proj.weight"] = (emb, q_axes)
    out[p + "mlp.gate_proj.weight"] = (neurons, emb)
    out[p + "mlp.up_proj.weight"] = (neurons, emb)
    out[p + "mlp.down_proj.weight"] = (emb, neurons)
    for norm in norm_names:
      out[p + norm] = (emb, {})
    if fam.qkv_bias:
      out[p + "self_attn.q_proj.bias"] = (q_axes, {})
      out[p + "self_attn.k_proj.bias"] = (kv_axes, {})
      out[p + "self_attn.v_proj.bias"] = (kv_axes, {})
    if fam.qk_norm:
      out[p + "self_attn.q_norm.weight"] = ({"projection": pc.projection_dim}, {})
      out[p + "self_attn.k_norm.weight"] = ({"projection": pc.projection_dim}, {})
  return out


def hf_shape(layout: tuple[dict[str, int], dict[str, int]]) -> tuple[int, ...]:
  import math

  outs, ins = layout
  return (math.prod(outs.values()),) + ((math.prod(ins.values()),) if ins else ())


# --------------------------------------------------------------------------- #
# Building the empty structure
# --------------------------------------------------------------------------- #


def _with_bias(seq: pz.nn.Sequential, bias_name: str) -> pz.nn.Sequential:
  """Insert an AddBias right after the projection (before RoPE)."""
  return pz.nn.Sequential([seq.sublayers[0], pz.nn.AddBias(bias=pz.ParameterSlot(bias_name), new_axis_names=()), *seq.sublayers[1:]])


def _with_qk_norm(seq: pz.nn.Sequential, norm_name: str, eps: float, dtype) -> pz.nn.Sequential:
  """Insert Gemma 3's per-head RMSNorm over the projection axis before RoPE."""
  norm = pz.nn.Sequential([
      pz.nn.RMSStandardize(across=("projection",), epsilon=jnp.asarray(eps, dtype=dtype)),
      OffsetScale(weights=pz.ParameterSlot(norm_name)),
  ])
  return pz.nn.Sequential([seq.sublayers[0], norm, *seq.sublayers[1:]])


def build_skeleton(config, param_dtype=jnp.float32, activation_dtype=jnp.float32) -> model_parts.TransformerLM:
  """The model with every parameter an empty slot labelled by its HF name."""
  name = family_name(config)
  fam = FAMILIES[name]
  pc = _penzai_config(config, param_dtype, activation_dtype)
  model = llc.build_llamalike_transformer(pc, init_base_rng=None, name="transformer")
  act = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", "silu")
  if _ACTIVATIONS[act] == "geglu_exact":
    model = (
        model.select()
        .at_instances_of(pz.nn.Elementwise)
        .apply(lambda e: pz.nn.Elementwise(functools.partial(jax.nn.gelu, approximate=False)))
    )
  if fam.gemma_norms:
    model = (
        model.select()
        .at_instances_of(pz.nn.RMSLayerNorm)
        .apply(lambda norm: pz.nn.RMSLayerNorm([norm.sublayers[0], OffsetScale(weights=norm.sublayers[1].weights)]))
    )
  model = model.select().at_instances_of(pz.ParameterSlot).apply(lambda s: pz.ParameterSlot(_hf_name(s.label, fam)))

  blocks = [i for i, l in enumerate(model.body.sublayers) if isinstance(l, model_parts.TransformerBlock)]
  layer_types = _layer_types(config)
  sublayers = list(model.body.sublayers)
  for layer, index in enumerate(blocks):
    block = sublayers[index]
    p = f"model.layers.{layer}.self_attn."
    attn = block.select().at_instances_of(pz.nn.Attention)
    if fam.qkv_bias:
      block = attn.apply(
          lambda a, p=p: dataclasses.replace(
              a,
              input_to_query=_with_bias(a.input_to_query, p + "q_proj.bias"),
              input_to_key=_with_bias(a.input_to_key, p + "k_proj.bias"),
              input_to_value=_with_bias(a.input_to_value, p + "v_proj.bias"),
          )
      )
      attn = block.select().at_instances_of(pz.nn.Attention)
    if fam.qk_norm:
      eps, dt = config.rms_norm_eps, param_dtype
      block = attn.apply(
          lambda a, p=p: dataclasses.replace(
              a,
              input_to_query=_with_qk_norm(a.input_to_query, p + "q_norm.weight", eps, dt),
              input_to_key=_with_qk_norm(a.input_to_key, p + "k_norm.weight", eps, dt),
          )
      )
    theta = _rope_theta(config, layer_types[layer])
    if theta != pc.rope_wavelength:
      block = block.select().at_instances_of(pz.nn.ApplyRoPE).apply(
          lambda r, t=theta: dataclasses.replace(r, max_wavelength=t)
      )
    sublayers[index] = block
  return dataclasses.replace(model, body=pz.nn.Sequential(sublayers))


def model_spec(config, num_parameters: int, max_positions: int | None = None) -> ModelSpec:
  """The family-independent facts the pruning core needs."""
  lay = layouts(config)
  linears = []
  for i in range(config.num_hidden_layers):
    for suffix in PRUNABLE_SUFFIXES:
      name = f"model.layers.{i}.{suffix}"
      out_f, in_f = hf_shape(lay[name])
      linears.append(LinearSpec(name=name, block=i, out_features=out_f, in_features=in_f))
  hf_config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return ModelSpec(
      family=family_name(config),
      num_layers=config.num_hidden_layers,
      hidden_size=config.hidden_size,
      vocab_size=config.vocab_size,
      max_positions=int(max_positions or getattr(config, "max_position_embeddings", 2048) or 2048),
      linears=tuple(linears),
      hf_config=hf_config,
      num_parameters=num_parameters,
  )


def tied(config) -> bool:
  """Whether lm_head shares the embedding matrix (no lm_head tensor stored)."""
  return bool(getattr(config, "tie_word_embeddings", False))


def describe_config(config: Any) -> dict[str, Any]:
  return {
      "family": family_name(config),
      "layers": config.num_hidden_layers,
      "hidden_size": config.hidden_size,
      "heads": config.num_attention_heads,
      "kv_heads": config.num_key_value_heads or config.num_attention_heads,
      "head_dim": head_dim(config),
      "mlp_hidden": config.intermediate_size,
      "vocab_size": config.vocab_size,
      "layer_types": sorted(set(_layer_types(config))),
      "tied_embeddings": tied(config),
  }
