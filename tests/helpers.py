"""Tiny random-init HF models, built and saved by transformers inside tests."""

from __future__ import annotations

from pathlib import Path

TINY = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)

# Named cases: (model_type, extra config) covering each family's departures.
FAMILY_CASES = {
    "llama": ("llama", {}),
    "llama-tied": ("llama", {"tie_word_embeddings": True}),
    "llama-mha": ("llama", {"num_key_value_heads": 4}),
    "llama-mqa": ("llama", {"num_key_value_heads": 1}),
    "mistral-window": ("mistral", {"sliding_window": 5}),
    "qwen2-bias": ("qwen2", {}),
    "gemma": ("gemma", {"head_dim": 16}),
    "gemma2": ("gemma2", {"head_dim": 8, "sliding_window": 5, "query_pre_attn_scalar": 12}),
    "gemma3": ("gemma3_text", {"head_dim": 8, "sliding_window": 5, "num_hidden_layers": 3,
                               "layer_types": ["sliding_attention", "sliding_attention", "full_attention"]}),
}


def make_tiny_hf(folder: Path, model_type: str = "llama", seed: int = 0, **overrides) -> Path:
  """Save a random-init model of ``model_type`` (fp32) to ``folder``."""
  import torch
  from transformers import AutoConfig, AutoModelForCausalLM

  torch.manual_seed(seed)
  config = AutoConfig.for_model(model_type, **{**TINY, **overrides})
  model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
  with torch.no_grad():  # non-trivial norms and biases, so a mix-up shows
    for name, param in model.named_parameters():
      if "norm" in name or name.endswith("bias"):
        param.add_(0.1 * torch.randn_like(param))
  model.save_pretrained(folder)
  return folder
