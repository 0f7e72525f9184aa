"""The step loop: resume after a simulated kill ends with identical weights; checkpoints are checked."""

from __future__ import annotations

import chex
import numpy as np
import pytest

from jaxprune import store
from jaxprune.pruning import blocks
from jaxprune.errors import JaxpruneError
from jaxprune.finetune import TrainConfig, train
from jaxprune.finetune.checkpoints import StepCheckpointer

CONFIG = TrainConfig(steps=5, lr=1e-2, batch=8, seqlen=16, warmup=0.2, loss_chunk=6)  # chunked head and loss


class Killed(Exception):
  pass


@pytest.fixture(scope="module")
def setup(tiny, base_run):
  _, loaded = tiny
  masks, _, new_weights = store.load_run(base_run)
  tokens = np.random.default_rng(3).integers(2, 97, (CONFIG.steps * CONFIG.batch, CONFIG.seqlen))
  return blocks.apply_pruning(loaded.model, masks, new_weights), masks, tokens


@pytest.mark.parametrize("rank", [0, 2])
def test_resume_after_a_kill_gives_identical_weights(setup, tmp_path, rank):
  model, masks, tokens = setup
  config = TrainConfig(**{**CONFIG.__dict__, "lora": rank})
  whole = train(model, masks, tokens, config)

  def die_at_3(done, total, loss):
    if done == 3:
      raise Killed

  fingerprint = {"test": rank}
  with pytest.raises(Killed):
    train(model, masks, tokens, config, checkpoints=StepCheckpointer(tmp_path, fingerprint, 2), on_step=die_at_3)
  checkpoints = StepCheckpointer(tmp_path, fingerprint, 2)
  assert checkpoints.latest == 2
  seen = []
  resumed = train(model, masks, tokens, config, checkpoints=checkpoints, on_resume=lambda d, t: seen.append(d))
  assert seen == [2] and resumed.resumed_from == 2
  chex.assert_trees_all_equal(resumed.weights, whole.weights)
  assert resumed.losses == whole.losses and len(whole.losses) == config.steps
  for name, w in whole.weights.items():
    assert not np.any(w[~masks[name]]), name


def test_a_checkpoint_of_other_options_is_refused(setup, tmp_path):
  model, masks, tokens = setup

  def die(done, total, loss):
    raise Killed

  with pytest.raises(Killed):
    train(model, masks, tokens, CONFIG, checkpoints=StepCheckpointer(tmp_path, {"lr": 1}, 1), on_step=die)
  with pytest.raises(JaxpruneError, match="other options"):
    train(model, masks, tokens, CONFIG, checkpoints=StepCheckpointer(tmp_path, {"lr": 2}, 1))


@pytest.mark.parametrize("change, message", [
    ({"steps": 0}, "--steps 0 must be at least 1"),
    ({"lr": 0.0}, "--lr 0.0 must be above 0"),
    ({"lr": -1e-3}, "must be above 0"),
    ({"batch": 3}, "not a multiple of the 8 devices"),
    ({"lora": -1}, "is a rank"),
])
def test_bad_options_are_one_line(setup, change, message):
  model, masks, tokens = setup
  with pytest.raises(JaxpruneError, match=message) as err:
    train(model, masks, tokens[:, :CONFIG.seqlen], TrainConfig(**{**CONFIG.__dict__, **change}))
  assert "\n" not in str(err.value)


def test_a_damaged_checkpoint_is_one_line(setup, tmp_path):
  model, masks, tokens = setup

  def die(done, total, loss):
    raise Killed

  with pytest.raises(Killed):
    train(model, masks, tokens, CONFIG, checkpoints=StepCheckpointer(tmp_path, {}, 1), on_step=die)
  files = [p for p in (tmp_path / "1" / "state").rglob("*") if p.is_file()]
  assert files
  for path in files:
    path.write_bytes(path.read_bytes()[:5])
  with pytest.raises(JaxpruneError, match="cannot be read.*pass --overwrite") as err:
    train(model, masks, tokens, CONFIG, checkpoints=StepCheckpointer(tmp_path, {}, 1))
  assert "\n" not in str(err.value)
