"""Write a HF model folder as a GGUF file the way llama.cpp's converter does.

A test-only, miniature ``convert_hf_to_gguf.py`` for the families jaxprune
reads, so GGUF loading can be checked on tiny random models of every family
instead of only on the real files we happen to ship. It mirrors the converter:

* tensor names from gguf-py's own name map (``blk.N.attn_q``, ``ffn_norm``,
  Gemma 2/3's ``post_attention_norm``/``post_ffw_norm``, ...); Gemma and Gemma 2
  never write ``output`` (tied), the others only when the HF model has a
  separate ``lm_head``;
* q/k rows permuted with ``LlamaModel.permute`` for llama.cpp's ``llama``
  architecture only (Llama, and Mistral, which llama.cpp writes as ``llama``);
* ``norm.weight + 1`` for the Gemma families (llama.cpp stores ``1 + w``);
* the hyperparameter keys each converter class writes (``GemmaModel`` no RoPE
  base, ``Gemma2Model`` soft-caps and window, ``Gemma3Model`` window and global
  RoPE base, ``LlamaModel`` vocab size and RoPE dimension count);
* a byte-level BPE vocabulary (``tokenizer.ggml.model = "gpt2"``) of exactly
  ``vocab_size`` tokens: two control tokens, a few merges, printable ASCII.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# HF model_type -> llama.cpp architecture written in general.architecture.
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "gemma": "gemma", "gemma2": "gemma2",
                 "gemma3_text": "gemma3"}
GEMMA = ("gemma", "gemma2", "gemma3")
_MERGES = ("\u0120 t", "h e", "\u0120t he")  # "Ġ" is the byte-level spelling of a space
BOS, EOS = 0, 1


def vocabulary(vocab_size: int) -> tuple[list[str], list[int], list[str]]:
  """(tokens, token types, merges) of a byte-level BPE vocabulary of ``vocab_size`` tokens.

  Text made of spaces, newlines and the characters ``!`` to ``z`` tokenizes
  with it (the printable ASCII run is cut to fit ``vocab_size``).
  """
  specials = ["<|bos|>", "<|eos|>"]
  merged = ["".join(m.split(" ")) for m in _MERGES]
  singles = ["\u0120", "\u010a"] + [chr(c) for c in range(33, 127)]
  tokens = specials + merged + singles[: vocab_size - len(specials) - len(merged)]
  if len(tokens) != vocab_size or not {"t", "h", "e"} <= set(tokens):
    raise ValueError(f"vocab_size {vocab_size} is too small or too large for the test vocabulary")
  types = [3] * len(specials) + [1] * (vocab_size - len(specials))  # 3 CONTROL, 1 NORMAL
  return tokens, types, list(_MERGES)


def permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
  """llama.cpp's ``LlamaModel.permute``: rotary halves -> interleaved pairs."""
  if n_head_kv is not None and n_head != n_head_kv:
    n_head = n_head_kv
  return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
          .swapaxes(1, 2).reshape(weights.shape))


def _metadata(w, config, arch: str) -> None:
  """The hyperparameter keys the converter class of ``arch`` writes."""
  heads, kv = config.num_attention_heads, config.num_key_value_heads
  w.add_block_count(config.num_hidden_layers)
  w.add_context_length(config.max_position_embeddings)
  w.add_embedding_length(config.hidden_size)
  w.add_feed_forward_length(config.intermediate_size)
  w.add_head_count(heads)
  w.add_head_count_kv(kv)
  w.add_layer_norm_rms_eps(config.rms_norm_eps)
  head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
  rope = config.rope_parameters
  if arch == "gemma3":
    w.add_rope_freq_base(rope["full_attention"]["rope_theta"])  # local layers: llama.cpp's fixed 10000
    w.add_sliding_window(config.sliding_window)
    if config.final_logit_softcapping:
      w.add_final_logit_softcapping(config.final_logit_softcapping)
  elif arch == "gemma2":  # Gemma2Model writes no RoPE base: llama.cpp uses 10000
    w.add_attn_logit_softcapping(config.attn_logit_softcapping)
    w.add_final_logit_softcapping(config.final_logit_softcapping)
    w.add_sliding_window(config.sliding_window)
  elif arch in ("llama", "qwen2"):
    w.add_rope_freq_base(rope["rope_theta"])
  if arch in GEMMA or getattr(config, "head_dim", None):
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
  if arch == "llama":
    w.add_vocab_size(config.vocab_size)
    w.add_rope_dimension_count(head_dim)


def _encode(data: np.ndarray, qtype):
  """(array, raw_dtype) as llama.cpp stores ``data``: 1-D tensors stay F32."""
  import gguf

  Q = gguf.GGMLQuantizationType
  if data.ndim == 1 or qtype == Q.F32:
    return data.astype(np.float32), Q.F32
  if qtype != Q.F16:
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if data.shape[-1] % block == 0:
      return gguf.quants.quantize(data, qtype), qtype
  return data.astype(np.float16), Q.F16  # the converter's fallback for rows a block does not divide


def write_gguf(folder: Path, path: Path, *, name: str = "Tiny", permute_qk: bool | None = None,
               qtype=None) -> Path:
  """Convert the HF model saved in ``folder`` to the GGUF file ``path``.

  ``permute_qk`` overrides llama.cpp's choice (permute exactly for the
  ``llama`` architecture), so a test can write a wrong file on purpose.
  ``qtype`` (a ``gguf.GGMLQuantizationType``, default F32) applies to 2-D tensors.
  """
  import gguf
  from safetensors.numpy import load_file
  from transformers import AutoConfig

  config = AutoConfig.from_pretrained(folder)
  arch = ARCHITECTURES[config.model_type]
  permute_qk = arch == "llama" if permute_qk is None else permute_qk
  qtype = gguf.GGMLQuantizationType.F32 if qtype is None else qtype
  tensors = load_file(str(Path(folder) / "model.safetensors"))
  names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config.num_hidden_layers)

  w = gguf.GGUFWriter(str(path), arch)
  w.add_name(name)
  _metadata(w, config, arch)
  w.add_file_type(gguf.LlamaFileType["ALL_F32" if qtype.name == "F32" else f"MOSTLY_{qtype.name}"])
  tokens, types, merges = vocabulary(config.vocab_size)
  w.add_tokenizer_model("gpt2")
  w.add_tokenizer_pre("default")
  w.add_token_list(tokens)
  w.add_token_types(types)
  w.add_token_merges(merges)
  w.add_bos_token_id(BOS)
  w.add_eos_token_id(EOS)

  heads, kv = config.num_attention_heads, config.num_key_value_heads
  for hf, data in tensors.items():
    stem, _, suffix = hf.rpartition(".")
    if hf == "lm_head.weight" and (arch in ("gemma", "gemma2") or config.tie_word_embeddings):
      continue  # tied (Gemma and Gemma 2 always drop lm_head)
    data = np.asarray(data, dtype=np.float32)
    if permute_qk and stem.endswith("self_attn.q_proj"):
      data = permute(data, heads, heads)
    elif permute_qk and stem.endswith("self_attn.k_proj"):
      data = permute(data, heads, kv)
    if arch in GEMMA and hf.endswith("norm.weight"):
      data = data + 1.0
    mapped = names.get_name(stem)
    if mapped is None:
      raise ValueError(f"no llama.cpp name for {hf} in architecture {arch}")
    array, raw_dtype = _encode(data, qtype)
    w.add_tensor(f"{mapped}.{suffix}", array, raw_dtype=raw_dtype)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return Path(path)


def gguf_names(path: Path) -> dict[str, str]:
  """{tensor name: quantization type name} of a GGUF file, for assertions on the writer."""
  import gguf

  return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}

