"""The pure train step: pruned weights stay exactly zero, the loss falls, remat changes nothing."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.pruning import masks as masks_lib
from jaxprune import store
from jaxprune.finetune import step as step_lib


@pytest.fixture(scope="module")
def pruned(tiny, base_run):
  _, loaded = tiny
  masks, _, _ = store.load_run(base_run)
  return masks_lib.apply(loaded.model, masks), {k: jnp.asarray(v) for k, v in masks.items()}


def _batch(seed: int = 0) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).integers(2, 97, (4, 16)), jnp.int32)


@pytest.mark.parametrize("rank", [0, 3])
def test_pruned_weights_stay_exactly_zero_after_every_step_and_the_loss_falls(pruned, rank):
  model, masks = pruned
  layout = step_lib.layout_of(model, masks, lora_rank=rank)
  tree, matrices = step_lib.split_trainable(step_lib.rematerialize_blocks(model), layout)
  params = step_lib.init_lora(jax.random.key(0), matrices, rank) if rank else matrices
  base = matrices if rank else {}
  opt = step_lib.optimizer(3e-2, 12, warmup_fraction=0.0)
  state = step_lib.init_state(params, opt)
  step = jax.jit(functools.partial(step_lib.train_step, layout=layout, opt=opt))
  tokens = _batch()
  losses = []
  for i in range(12):
    state, loss = step(state, tree, base, masks, tokens)
    losses.append(float(loss))
    merged = step_lib.merged_weights(state.params, base, masks, layout)
    chex.assert_trees_all_equal_shapes(merged, matrices)
    for name, w in merged.items():
      assert not np.any(np.asarray(w)[~np.asarray(masks[name])]), (i, name)
  chex.assert_tree_all_finite(state.params)
  assert int(state.step) == 12
  assert losses[-1] < 0.95 * losses[0] and losses == sorted(losses, reverse=True), losses
  changed = [n for n in matrices if not np.array_equal(merged[n], matrices[n])]
  assert sorted(changed) == sorted(matrices)  # every trained linear moved


def test_rematerialised_blocks_give_the_same_loss_and_gradients(pruned):
  model, masks = pruned
  layout = step_lib.layout_of(model, masks)
  tokens = _batch(1)
  results = []
  for m in (model, step_lib.rematerialize_blocks(model)):
    tree, matrices = step_lib.split_trainable(m, layout)
    results.append(jax.value_and_grad(step_lib.loss_fn)(matrices, tree, {}, masks, tokens, layout))
  chex.assert_trees_all_close(results[0], results[1], rtol=1e-6, atol=1e-7)


def test_bound_model_equals_the_original(pruned):
  model, masks = pruned
  layout = step_lib.layout_of(model, masks)
  tree, matrices = step_lib.split_trainable(model, layout)
  tokens = _batch(2)
  ours = step_lib.next_token_loss(step_lib.bind(tree, matrices, layout), tokens)
  chex.assert_trees_all_close(ours, step_lib.next_token_loss(model, tokens), rtol=1e-6)


def test_lora_starts_at_the_base_weights(pruned):
  model, masks = pruned
  layout = step_lib.layout_of(model, masks, lora_rank=2)
  _, matrices = step_lib.split_trainable(model, layout)
  lora = step_lib.init_lora(jax.random.key(0), matrices, 2)
  chex.assert_trees_all_equal(step_lib.merged_weights(lora, matrices, masks, layout), matrices)
  chex.assert_shape(lora[layout.names[0]]["a"], (2, matrices[layout.names[0]].shape[1]))


def test_the_loss_in_chunks_equals_the_whole_loss_and_its_gradients(pruned):
  model, masks = pruned
  layout = step_lib.layout_of(model, masks)
  tree, matrices = step_lib.split_trainable(step_lib.rematerialize_blocks(model), layout)
  tokens = _batch(3)  # 15 predictions: chunks of 4 leave a padded last chunk
  whole = jax.value_and_grad(step_lib.loss_fn)(matrices, tree, {}, masks, tokens, layout, 0)
  for chunk in (4, 5):
    chunked = jax.value_and_grad(step_lib.loss_fn)(matrices, tree, {}, masks, tokens, layout, chunk)
    chex.assert_trees_all_close(chunked, whole, rtol=1e-5, atol=1e-6)
