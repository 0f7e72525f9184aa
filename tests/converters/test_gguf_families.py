"""GGUF loading for every family, on tiny models written as llama.cpp writes them.

Each test builds a tiny random HF model, converts it with `tests.gguf_writer`
(llama.cpp's tensor names, q/k permutation for the ``llama`` architecture
only, Gemma's ``1 + w`` norms, its metadata keys, a byte-level BPE
vocabulary), then loads the file with `converters.load_model` and compares
logits with two independent references:

* the source HF model -- an F32 file is lossless, so the logits must agree;
* transformers' own GGUF loading of the same file
  (``from_pretrained(folder, gguf_file=name)``), which un-permutes and
  un-offsets the tensors with its own code.

Where transformers cannot read something the file states, the case says so:

* ``gemma`` (v1): transformers has no GGUF support for the architecture at all
  (not in ``GGUF_SUPPORTED_ARCHITECTURES``), so only the source model is the
  reference.
* ``gemma2``/``gemma3``: transformers' GGUF config mapping has no
  ``query_pre_attn_scalar`` (it keeps the config default 256, right only for
  models whose head_dim is 256, while llama.cpp uses head_dim) nor Gemma 2's
  soft-caps (it keeps 50/30). Those values are passed to ``from_pretrained``;
  the source-model comparison checks that jaxprune derives them itself.
* ``mistral``: llama.cpp writes Mistral as ``llama`` (general.name
  "Mistral ..."), and has no sliding window for it, so the tiny Mistral has
  none either (as Mistral 7B v0.2 on).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxprune import converters
from jaxprune.converters import gguf_io
from tests.converters.test_loading import PROMPTS, penzai_logits, torch_logits
from tests.gguf_writer import BOS, EOS, gguf_names, write_gguf
from tests.helpers import make_tiny_hf

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")

TEXTS = ["the cat sat on the mat", "def f(x):\n  return x*2+1", "The END, then: the;"]


@dataclasses.dataclass(frozen=True)
class Case:
  """A tiny model of one family and what transformers needs told to load its GGUF."""

  model_type: str
  extra: dict
  name: str = "Tiny"
  transformers: dict | None = dataclasses.field(default_factory=dict)  # None: cannot load the file


CASES = {
    "llama": Case("llama", {}),
    "llama-tied-mqa": Case("llama", {"tie_word_embeddings": True, "num_key_value_heads": 1}),
    "mistral": Case("mistral", {"sliding_window": None}, name="Mistral Tiny v0.2"),
    "qwen2": Case("qwen2", {}),
    "gemma": Case("gemma", {"head_dim": 16}, transformers=None),
    "gemma2": Case("gemma2", {"head_dim": 8, "sliding_window": 5, "query_pre_attn_scalar": 8,
                              "attn_logit_softcapping": 20.0, "final_logit_softcapping": 15.0},
                   transformers={"query_pre_attn_scalar": 8, "attn_logit_softcapping": 20.0,
                                 "final_logit_softcapping": 15.0}),
    # six layers: llama.cpp's Gemma 3 pattern, five sliding-window layers then a global one
    "gemma3": Case("gemma3_text", {"head_dim": 8, "sliding_window": 5, "num_hidden_layers": 6,
                                   "query_pre_attn_scalar": 8},
                   transformers={"query_pre_attn_scalar": 8}),
}


def transformers_gguf(path, **overrides):
  """(model, tokenizer) as transformers loads the GGUF file ``path``."""
  pytest.importorskip("accelerate")
  from transformers import AutoModelForCausalLM, AutoTokenizer

  model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32, **overrides)
  return model.eval(), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def logits_of(model, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(tokens)).logits.numpy()


def assert_same_logits(ours: np.ndarray, ref: np.ndarray, tol: float = 1e-4) -> None:
  np.testing.assert_allclose(ours, ref, atol=tol, rtol=tol)
  np.testing.assert_array_equal(ours.argmax(-1), ref.argmax(-1))


def convert(tmp_path, case: Case, **writer_args):
  """(HF folder, GGUF path) of a tiny model of ``case``."""
  folder = make_tiny_hf(tmp_path / "hf", case.model_type, **case.extra)
  (tmp_path / "gguf").mkdir()
  return folder, write_gguf(folder, tmp_path / "gguf" / "tiny.gguf", name=case.name, **writer_args)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_gguf_logits_match_source_and_transformers(tmp_path, case):
  spec = CASES[case]
  folder, path = convert(tmp_path, spec)
  loaded = converters.load_model(str(path))
  ours = penzai_logits(loaded.model, PROMPTS)
  assert_same_logits(ours, torch_logits(folder, PROMPTS))
  if spec.transformers is None:
    return
  ref, ref_tok = transformers_gguf(path, **spec.transformers)
  assert_same_logits(ours, logits_of(ref, PROMPTS))
  for text in TEXTS:
    assert loaded.tokenizer(text)["input_ids"] == ref_tok(text)["input_ids"], text


def test_tokenizer_uses_vocabulary_merges_and_special_ids(tmp_path):
  _, path = convert(tmp_path, CASES["qwen2"])
  tok = converters.load_model(str(path)).tokenizer
  ids = tok("the cat the")["input_ids"]
  assert tok.convert_ids_to_tokens(ids) == ["t", "he", "\u0120", "c", "a", "t", "\u0120the"]
  assert (tok.bos_token, tok.eos_token) == ("<|bos|>", "<|eos|>")
  assert tok.convert_tokens_to_ids(["<|bos|>", "<|eos|>"]) == [BOS, EOS]


@pytest.mark.parametrize(("case", "permute_qk"), [("llama", False), ("qwen2", True)])
def test_wrong_qk_layout_changes_logits(tmp_path, case, permute_qk):
  """A llama file without llama.cpp's q/k permutation (or a qwen2 file with it) is another model."""
  spec = CASES[case]
  sharp = dataclasses.replace(spec, extra={**spec.extra, "initializer_range": 0.2})  # non-uniform attention
  folder, path = convert(tmp_path, sharp, permute_qk=permute_qk)
  ours = penzai_logits(converters.load_model(str(path)).model, PROMPTS)
  ref = torch_logits(folder, PROMPTS)
  assert np.abs(ours - ref).max() > 0.5
  assert (ours.argmax(-1) != ref.argmax(-1)).any()


def test_quantized_gguf_matches_transformers(tmp_path):
  """Q8_0 where a block divides the rows, F16 elsewhere, F32 norms: both loaders dequantize alike."""
  folder, path = convert(tmp_path, CASES["llama"], qtype=gguf.GGMLQuantizationType.Q8_0)
  types = gguf_names(path)
  assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.ffn_down.weight"] == "F16"
  assert types["blk.0.attn_norm.weight"] == "F32"
  ours = penzai_logits(converters.load_model(str(path)).model, PROMPTS)
  assert_same_logits(ours, logits_of(transformers_gguf(path)[0], PROMPTS))
  np.testing.assert_allclose(ours, torch_logits(folder, PROMPTS), atol=5e-2)  # quantization error only


@pytest.mark.parametrize(("case", "layers", "scalar"), [("gemma2", 46, 8), ("gemma2", 45, 16),
                                                        ("gemma3", 62, 8), ("gemma3", 61, 16)])
def test_gemma_27b_attention_scale_follows_llama_cpp(tmp_path, case, layers, scalar):
  """Queries scale by 1/sqrt(hidden/heads) = 1/sqrt(8) for 27B (46/62 layers), else 1/sqrt(head_dim) = 1/sqrt(16)."""
  spec = CASES[case]
  extra = {**spec.extra, "hidden_size": 32, "num_attention_heads": 4, "head_dim": 16, "num_hidden_layers": layers,
           "query_pre_attn_scalar": scalar}
  config, _, _ = gguf_io.open_gguf(convert(tmp_path, dataclasses.replace(spec, extra=extra))[1])
  assert config.query_pre_attn_scalar == scalar
