"""The method registry: a method added by one `register` call works in the driver and the CLI."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import pruning
from jaxprune.model import weights
from jaxprune.pruning import methods
from jaxprune.errors import JaxpruneError


@pytest.fixture(scope="module")
def tiny(tiny_llama):
  return tiny_llama(2)


@pytest.fixture()
def activation_only(monkeypatch):
  """docs/architecture.md's worked example: a score of the input norm alone (every row keeps the same columns)."""
  method = methods.Method("activation-only", score=lambda w, sq, config: jnp.broadcast_to(jnp.sqrt(sq)[None, :], w.shape),
                          doc="input norm only")
  monkeypatch.setitem(methods.REGISTRY, method.name, method)
  return method


def test_registered_method_prunes_through_the_driver(tiny, activation_only):
  tokens = np.random.default_rng(0).integers(0, 97, (6, 16))
  # statistics of the dense model, so both runs see the same inputs in every block
  result = pruning.prune(tiny[1], tokens, pruning.PruneConfig(method="activation-only", sequential=False))
  wanda = pruning.prune(tiny[1], tokens, pruning.PruneConfig(method="wanda", sequential=False))
  assert set(result.masks) == set(weights.prunable_linears(tiny[1].model))
  for name, keep in result.masks.items():
    assert abs((~keep).mean() - 0.5) < 1e-9
    # every row keeps the half of the columns with the largest input norm
    stat = wanda.statistics[name]
    assert (keep == keep[0]).all()
    np.testing.assert_array_equal(keep[0], stat >= np.median(stat))


def test_registered_method_is_a_cli_choice(activation_only, capsys):
  from jaxprune import cli

  with pytest.raises(SystemExit):
    cli.main(["prune", "--help"])
  assert "activation-only: input norm only" in capsys.readouterr().out


def test_registry_entries_are_consistent():
  for m in methods.REGISTRY.values():
    assert (m.score is None) != (m.update is None)
    assert not m.gram or m.needs_calibration
  assert methods.get("sparsegpt").updates_weights and methods.get("sparsegpt").gram
  assert not methods.get("magnitude").needs_calibration
  with pytest.raises(JaxpruneError, match="unknown method 'obs': choose one of wanda, magnitude"):
    methods.get("obs")
  with pytest.raises(ValueError, match="exactly one of score and update"):
    methods.Method("neither")


def test_prune_flags_default_to_the_config():
  import dataclasses

  from jaxprune import cli

  args = cli.build_parser().parse_args(["prune", "--out", "x"])
  config = pruning.PruneConfig()
  for field in dataclasses.fields(config):
    if hasattr(args, field.name):
      assert getattr(args, field.name) == getattr(config, field.name), field.name
