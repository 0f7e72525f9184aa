"""Chunked causal attention computes what penzai's attention computes."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from penzai import pz

from jaxprune import converters
from jaxprune import pruning
from jaxprune.model import attention
from jaxprune.errors import JaxpruneError
from tests.helpers import FAMILY_CASES, make_tiny_hf

pytest.importorskip("torch")

SEQLEN = 23  # not a multiple of any chunk below, and longer than the test windows (5)


@pytest.fixture(scope="module")
def families(tmp_path_factory):
  """Factory: the LoadedModel of a tiny model of a named family case (cached)."""
  made = {}

  def make(case: str):
    if case not in made:
      model_type, extra = FAMILY_CASES[case]
      folder = make_tiny_hf(tmp_path_factory.mktemp(case) / "m", model_type, **{**extra, "max_position_embeddings": 64})
      made[case] = converters.load_model(str(folder))
    return made[case]

  return make


def _logits(model, tokens: np.ndarray) -> np.ndarray:
  run = jax.jit(lambda m, t: m(pz.nx.wrap(t).tag("batch", "seq")).unwrap("batch", "seq", "vocabulary"))
  return np.asarray(run(pz.freeze_params(model), tokens))


CHUNKS = (3, 7, 64)  # 3: a window of 5 spans chunks; 64: one chunk


@pytest.mark.parametrize("case", list(FAMILY_CASES), ids=list(FAMILY_CASES))
def test_same_logits_as_penzai_attention(families, case):
  """Every family (GQA, MHA, MQA, sliding windows, Gemma 2's soft-cap, Gemma 3's mix) to float32 rounding."""
  model = families(case).model
  tokens = np.random.default_rng(1).integers(0, 97, (3, SEQLEN)).astype(np.int32)
  expected = _logits(model, tokens)
  for chunk in CHUNKS:
    chunked = attention.chunk_attention(model, chunk)
    replaced = chunked.select().at_instances_of(attention.ChunkedCausalAttention).count()
    assert replaced == len(pruning.split_blocks(model)[1])  # every block's attention is recognised
    assert chunked.select().at_instances_of(pz.nn.Attention).count() == 0
    np.testing.assert_allclose(_logits(chunked, tokens), expected, rtol=1e-5, atol=1e-5, err_msg=f"chunk {chunk}")


def test_sliding_window_chunks_skip_keys_outside_the_window(families):
  chunked = attention.chunk_attention(families("mistral-window").model, 4)
  layers = chunked.select().at_instances_of(attention.ChunkedCausalAttention).get_sequence()
  assert {layer.window for layer in layers} == {5}


def test_unrecognised_attention_is_left_to_penzai(families):
  """An attention whose logits pass through a layer it does not know keeps penzai's implementation."""
  model = families("llama").model

  def with_extra_layer(attn: pz.nn.Attention) -> pz.nn.Attention:
    layers = list(attn.query_key_to_attn.sublayers)
    layers.insert(1, pz.nn.ConstantRescale(by=2.0))
    return dataclasses.replace(attn, query_key_to_attn=pz.nn.Sequential(layers))

  odd = model.select().at_instances_of(pz.nn.Attention).apply(with_extra_layer)
  chunked = attention.chunk_attention(odd, 4)
  assert chunked.select().at_instances_of(attention.ChunkedCausalAttention).count() == 0
  assert chunked.select().at_instances_of(pz.nn.Attention).count() == len(pruning.split_blocks(model)[1])


def test_bad_chunk_is_one_line_error():
  with pytest.raises(JaxpruneError, match="attention chunk -1"):
    pruning.PruneConfig(attention_chunk=-1).validate()
