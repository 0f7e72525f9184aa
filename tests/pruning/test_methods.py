"""OWL allocation and RIA scoring: the same engine, another allocation or score."""

from __future__ import annotations

import numpy as np
import pytest

from jaxprune import pruning
from jaxprune.pruning import allocation
from jaxprune.errors import JaxpruneError

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tiny_llama):
  return tiny_llama(4)


@pytest.fixture(scope="module")
def tokens():
  return np.random.default_rng(3).integers(0, 97, (8, 16))


RATIOS = {
    "spread": [0.01, 0.02, 0.03, 0.04],
    "skewed": [0.0, 0.0, 0.0, 0.2],
    "flat": [0.05, 0.05, 0.05, 0.05],
}


@pytest.mark.parametrize("case", list(RATIOS), ids=list(RATIOS))
@pytest.mark.parametrize("sparsity,lam", [(0.5, 0.08), (0.7, 0.2)], ids=["s50-l08", "s70-l20"])
def test_owl_sparsities_average_to_target_within_band(case, sparsity, lam):
  chosen = np.array(allocation.owl_sparsities(RATIOS[case], sparsity, lam))
  assert abs(chosen.mean() - sparsity) < 1e-9
  assert (chosen >= sparsity - lam - 1e-12).all() and (chosen <= sparsity + lam + 1e-12).all()
  ratios = np.array(RATIOS[case])
  assert (np.argsort(-ratios, kind="stable") == np.argsort(chosen, kind="stable")).all() or case == "flat"


def test_owl_end_to_end(tiny, tokens):
  result = pruning.prune(tiny[1], tokens, config=pruning.PruneConfig(allocation="owl", owl_m=2.0, owl_lambda=0.1))
  blocks = np.array(result.block_sparsity)
  assert abs(blocks.mean() - 0.5) < 1e-6 and np.ptp(blocks) > 0
  weights_total = sum(m.size for m in result.masks.values())
  pruned = sum((~m).sum() for m in result.masks.values())
  per_block_weights = weights_total / len(blocks)
  assert abs(pruned - sum(np.floor(blocks * per_block_weights))) <= weights_total * 1e-2
  for b, s in enumerate(blocks):
    q = result.masks[f"model.layers.{b}.self_attn.q_proj.weight"]
    assert (~q).sum(1).tolist() == [int(q.shape[1] * s)] * q.shape[0]


def test_owl_band_must_fit():
  with pytest.raises(JaxpruneError, match="owl-lambda"):
    allocation.owl_sparsities([0.1, 0.2], 0.95, 0.08)


@pytest.mark.parametrize("pattern,n,m", [("unstructured", 0, 0), ("2:4", 2, 4)], ids=["unstructured", "2:4"])
def test_ria_matches_reference(tiny, tokens, pattern, n, m):
  from transformers import AutoModelForCausalLM

  from tests.reference_wanda import prune_wanda

  folder, loaded = tiny
  hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
  ref, _ = prune_wanda(hf, tokens, 0.5, n, m, score="ria")
  ours = pruning.prune(loaded, tokens, config=pruning.PruneConfig(pattern=pattern, method="ria"))
  for name in ref:
    np.testing.assert_array_equal(ours.masks[name], ref[name], err_msg=name)
  if n:
    for name, mask in ours.masks.items():
      assert ((~mask).reshape(mask.shape[0], -1, m).sum(-1) == n).all()


def test_owl_with_n_of_m_refused(tiny, tokens):
  with pytest.raises(JaxpruneError, match="unstructured"):
    pruning.prune(tiny[1], tokens, config=pruning.PruneConfig(allocation="owl", pattern="2:4"))
