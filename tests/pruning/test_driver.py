"""The Wanda engine against the official algorithm, and its invariants."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from jaxprune import converters
from jaxprune.pruning import masks as masks_lib
from jaxprune import pruning
from jaxprune.pruning import driver
from jaxprune.errors import JaxpruneError
from tests.helpers import make_tiny_hf

torch = pytest.importorskip("torch")

VOCAB = 97


@pytest.fixture(scope="module")
def tiny(tiny_llama):
  return tiny_llama(3)


@pytest.fixture(scope="module")
def tokens():
  return np.random.default_rng(0).integers(0, VOCAB, (10, 16))


REFERENCE_CASES = {
    # pattern, sparsity, N, M, attention chunk (128: one chunk at 16 tokens)
    "unstructured-50": ("unstructured", 0.5, 0, 0, 128),
    "unstructured-30": ("unstructured", 0.3, 0, 0, 128),
    "2:4": ("2:4", 0.5, 2, 4, 128),
    "4:8": ("4:8", 0.5, 4, 8, 128),
    "unstructured-50-attention-in-chunks-of-5": ("unstructured", 0.5, 0, 0, 5),
    "unstructured-50-penzai-attention": ("unstructured", 0.5, 0, 0, 0),
}


@pytest.mark.parametrize("case", list(REFERENCE_CASES), ids=list(REFERENCE_CASES))
def test_matches_official_wanda(tiny, tokens, case):
  """Identical masks, statistics within 1e-5 relative.

  Tie caveat: ties in the score are broken by index (stable sort) on both sides
  for unstructured; upstream's N:M uses torch.topk, whose tie order is
  unspecified; random float weights make exact ties practically impossible.
  """
  from transformers import AutoModelForCausalLM

  from tests.reference_wanda import prune_wanda

  folder, loaded = tiny
  pattern, sparsity, n, m, chunk = REFERENCE_CASES[case]
  hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
  ref_masks, ref_stats = prune_wanda(hf, tokens, sparsity, n, m)
  config = pruning.PruneConfig(sparsity=sparsity, pattern=pattern, attention_chunk=chunk)
  result = pruning.prune(loaded, tokens, config=config)
  assert sorted(result.masks) == sorted(ref_masks)
  for name in ref_masks:
    np.testing.assert_array_equal(result.masks[name], ref_masks[name], err_msg=name)
    np.testing.assert_allclose(result.statistics[name], ref_stats[name], rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.77], ids=["s10", "s50", "s77"])
def test_exactly_floor_in_times_s_pruned_per_row(tiny, tokens, sparsity):
  result = pruning.prune(tiny[1], tokens, config=pruning.PruneConfig(sparsity=sparsity))
  for name, mask in result.masks.items():
    pruned = (~mask).sum(axis=1)
    assert (pruned == math.floor(mask.shape[1] * sparsity)).all(), name


@pytest.mark.parametrize("pattern", ["2:4", "4:8", "1:4"], ids=["2of4", "4of8", "1of4"])
def test_n_of_m_holds_in_every_group(tiny, tokens, pattern):
  n, m = map(int, pattern.split(":"))
  result = pruning.prune(tiny[1], tokens, config=pruning.PruneConfig(pattern=pattern))
  for name, mask in result.masks.items():
    groups = (~mask).reshape(mask.shape[0], -1, m).sum(-1)
    assert (groups == n).all(), name


def test_device_count_invariance(tiny, tokens):
  assert jax.device_count() == 8, "tests run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
  one = pruning.prune(tiny[1], tokens, mesh=pruning.data_mesh(jax.devices()[:1]))
  eight = pruning.prune(tiny[1], tokens, mesh=pruning.data_mesh(jax.devices()))
  for name in one.masks:
    np.testing.assert_array_equal(one.masks[name], eight.masks[name], err_msg=name)
    np.testing.assert_allclose(one.statistics[name], eight.statistics[name], rtol=1e-6)


def test_sequential_differs_from_one_pass(tiny, tokens):
  seq = pruning.prune(tiny[1], tokens, config=pruning.PruneConfig(sequential=True))
  dense = pruning.prune(tiny[1], tokens, config=pruning.PruneConfig(sequential=False))
  first = [n for n in seq.masks if ".layers.0." in n]
  later = [n for n in seq.masks if ".layers.0." not in n]
  assert all((seq.masks[n] == dense.masks[n]).all() for n in first)  # block 0 sees the same inputs
  assert any((seq.masks[n] != dense.masks[n]).any() for n in later)


def _compiled() -> tuple[int, ...]:
  programs = (driver._block_statistics, driver._block_forward, driver._choose_masks)
  return tuple(f.__wrapped__._cache_size() for f in programs)  # the jitted functions inside one_at_a_time


def test_second_call_does_not_recompile(tiny, tokens):
  pruning.prune(tiny[1], tokens)
  sizes = _compiled()
  pruning.prune(tiny[1], tokens[::-1].copy())
  assert _compiled() == sizes


def test_per_block_loop_compiles_once_for_all_blocks(tmp_path, tokens):
  folder = make_tiny_hf(tmp_path / "m", "llama", num_hidden_layers=4, hidden_size=40)
  before = _compiled()
  pruning.prune(converters.load_model(str(folder)), tokens)
  after = _compiled()
  assert (after[0] - before[0], after[1] - before[1]) == (1, 1)  # probed pass + pruned pass


def test_magnitude_needs_no_calibration(tiny):
  result = pruning.prune(tiny[1], None, config=pruning.PruneConfig(method="magnitude"))
  assert abs(result.report["__total__"] - 0.5) < 1e-3


def _layer_error(w_new, x, w):
  return float(np.sum((x @ w.T - x @ w_new.T) ** 2))


def test_sparsegpt_reconstructs_better_than_magnitude(tiny, tokens):
  """Layer reconstruction error on the calibration inputs of block 0's q_proj."""
  from transformers import AutoModelForCausalLM

  folder, loaded = tiny
  hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
  with torch.no_grad():
    emb = hf.model.embed_tokens(torch.tensor(tokens))
    x = hf.model.layers[0].input_layernorm(emb).reshape(-1, emb.shape[-1]).numpy()
  name = "model.layers.0.self_attn.q_proj.weight"
  w = hf.model.layers[0].self_attn.q_proj.weight.detach().numpy()
  sgpt = pruning.prune(loaded, tokens, config=pruning.PruneConfig(method="sparsegpt"))
  mag = pruning.prune(loaded, tokens, config=pruning.PruneConfig(method="magnitude"))
  w_sgpt = np.where(sgpt.masks[name], sgpt.weights[name], 0)
  w_mag = np.where(mag.masks[name], w, 0)
  assert abs((~sgpt.masks[name]).mean() - 0.5) < 0.02
  assert _layer_error(w_sgpt, x, w) < _layer_error(w_mag, x, w)


BAD = {
    "sparsity-negative": (dict(sparsity=-0.1), "out of range"),
    "sparsity-one": (dict(sparsity=1.0), "out of range"),
    "n-not-below-m": (dict(pattern="4:4"), "N < M"),
    "pattern-garbage": (dict(pattern="half"), "unknown pattern"),
    "m-does-not-divide": (dict(pattern="2:5"), "not divisible by M=5"),
    "unknown-method": (dict(method="obs"), "unknown method"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_options(tiny, tokens, case):
  kwargs, pattern = BAD[case]
  with pytest.raises(JaxpruneError, match=pattern):
    pruning.prune(tiny[1], tokens, pruning.PruneConfig(**kwargs))


BAD_TOKENS = {
    "empty": (np.zeros((0, 16), np.int64), "non-empty"),
    "one-dimensional": (np.arange(16), "non-empty int array"),
    "too-short": (np.zeros((4, 1), np.int64), "too short"),
    "longer-than-context": (np.zeros((2, 65), np.int64), "exceeds the model's context of 64"),
    "floats": (np.zeros((2, 8), np.float32), "integers"),
    "outside-vocab": (np.full((2, 8), 500), "outside the vocabulary"),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS), ids=list(BAD_TOKENS))
def test_bad_calibration(tiny, case):
  tokens, pattern = BAD_TOKENS[case]
  with pytest.raises(JaxpruneError, match=pattern):
    pruning.prune(tiny[1], tokens)


def test_apply_zeroes_exactly_the_pruned_weights(tiny, tokens):
  from jaxprune.model import weights

  result = pruning.prune(tiny[1], tokens)
  pruned = masks_lib.apply(tiny[1].model, result.masks)
  for name, linear in weights.prunable_linears(pruned).items():
    w = np.asarray(weights.hf_matrix(linear))
    assert ((w == 0) == ~result.masks[name]).all(), name


AUTO_MICROBATCH = {
    # (devices, calibration shape) -> sequences per step on CPU
    "short-sequences-capped-by-the-set": (1, (10, 16), 10),
    "eight-devices-one-each": (8, (10, 16), 16),
    "long-sequences-one-per-device": (1, (10, 4096), 1),
    "long-sequences-eight-devices": (8, (10, 4096), 8),
}


@pytest.mark.parametrize("devices,shape,expected", AUTO_MICROBATCH.values(), ids=AUTO_MICROBATCH.keys())
def test_auto_microbatch_keeps_attention_scores_small_without_padding(tiny, devices, shape, expected):
  _, blocks, _ = pruning.split_blocks(tiny[1].model)
  mesh = pruning.data_mesh(jax.devices()[:devices])
  assert pruning.auto_microbatch(blocks[0], shape, mesh) == expected
