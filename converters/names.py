"""One table of parameter names: Hugging Face, penzai's llama-like builder, llama.cpp.

Each row names one tensor three ways: its HF module inside a decoder block
(``self_attn.q_proj``), the label penzai's `llamalike_common` gives it inside
``transformer/block_N/`` (None where penzai has no such parameter and our
surgery names it in HF terms directly: biases, q/k norms), and llama.cpp's
stem inside ``blk.N.`` (``attn_q``). Gemma 2/3 put four norms around each
sub-layer ("sandwich"), the others two; the norms after the attention differ
in name between the two layouts. `converters.families` (penzai -> HF) and
`converters.gguf_io` (llama.cpp -> HF) both read their maps from here.
"""

from __future__ import annotations

# (HF module, penzai label, llama.cpp stem) of the tensors of every decoder block
BLOCK = (
    ("self_attn.q_proj", "attention/query", "attn_q"),
    ("self_attn.k_proj", "attention/key", "attn_k"),
    ("self_attn.v_proj", "attention/value", "attn_v"),
    ("self_attn.o_proj", "attention/output", "attn_output"),
    ("mlp.gate_proj", "mlp/gating_linear", "ffn_gate"),
    ("mlp.up_proj", "mlp/value_linear", "ffn_up"),
    ("mlp.down_proj", "mlp/out_linear", "ffn_down"),
    ("input_layernorm", "pre_attention_norm/scale", "attn_norm"),
    ("self_attn.q_norm", None, "attn_q_norm"),
    ("self_attn.k_norm", None, "attn_k_norm"),
)
# the norms after the attention: two-norm blocks (Llama, Qwen2, ...)
PLAIN_NORMS = (("post_attention_layernorm", "pre_ffw_norm/scale", "ffn_norm"),)
# ... and four-norm ("sandwich") blocks (Gemma 2 and 3)
SANDWICH_NORMS = (
    ("post_attention_layernorm", "post_attention_norm/scale", "post_attention_norm"),
    ("pre_feedforward_layernorm", "pre_ffw_norm/scale", "ffn_norm"),
    ("post_feedforward_layernorm", "post_ffw_norm/scale", "post_ffw_norm"),
)
# (HF parameter, penzai label, llama.cpp stem) outside the blocks
TOP = (
    ("model.embed_tokens.weight", "transformer/embedder.embeddings", "token_embd"),
    ("model.norm.weight", "transformer/final_norm/scale.weights", "output_norm"),
    ("lm_head.weight", "transformer/lm_head.weights", "output"),
)
# the prunable linears of a block (HF parameter suffixes)
PRUNABLE_SUFFIXES = tuple(f"{hf}.weight" for hf, _, stem in BLOCK[:7])


def block_rows(sandwich_norms: bool) -> tuple[tuple[str, str | None, str], ...]:
  """The rows of one block of a family with (True) or without sandwich norms."""
  return BLOCK + (SANDWICH_NORMS if sandwich_norms else PLAIN_NORMS)


def norm_names(sandwich_norms: bool) -> list[str]:
  """HF parameter names (block-relative) of a block's norms, in HF order."""
  return ["input_layernorm.weight"] + [f"{hf}.weight" for hf, _, _ in (SANDWICH_NORMS if sandwich_norms else PLAIN_NORMS)]
