"""Run directories end to end: CLI, resume after a kill, export parity."""

from __future__ import annotations

import json
import time

import jax.numpy as jnp
import numpy as np
import pytest
from penzai import pz

from jaxprune import cli, pruning, runs, store
from jaxprune.pruning import masks as masks_lib
from jaxprune.errors import JaxpruneError
from tests.helpers import make_tiny_hf

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tiny_llama):
  return tiny_llama(3)


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("tok") / "calib.npy"
  np.save(path, np.random.default_rng(1).integers(0, 97, (12, 16)))
  return path


class Killed(Exception):
  pass


def test_resume_after_kill_gives_identical_masks(tiny, tokens_file, tmp_path):
  _, loaded = tiny
  tokens = np.load(tokens_file)
  config = pruning.PruneConfig(microbatch=4)
  whole = runs.prune_run(loaded, tokens, config, runs.RunConfig(out=tmp_path / "whole"))

  def die_after_two(done, total, info):
    if done == 1:
      time.sleep(0.5)  # time the killed process spent: the resumed run's total must include it
    if done == 2:
      raise Killed

  with pytest.raises(Killed):
    runs.prune_run(loaded, tokens, config, runs.RunConfig(out=tmp_path / "killed"), on_block=die_after_two)
  assert not (tmp_path / "killed" / "run.json").exists()
  seen = []
  started = time.perf_counter()
  resumed = runs.prune_run(loaded, tokens, config, runs.RunConfig(out=tmp_path / "killed"),
                           on_block=lambda done, total, info: seen.append(done))
  wall = time.perf_counter() - started
  assert seen == [3]  # only the last block ran again
  for name in whole.masks:
    np.testing.assert_array_equal(whole.masks[name], resumed.masks[name], err_msg=name)
  stored, _ = store.load_masks(tmp_path / "killed")
  for name in whole.masks:
    np.testing.assert_array_equal(stored[name], whole.masks[name])
  timings = json.loads((tmp_path / "killed" / "run.json").read_text())["timings"]
  assert timings["earlier_processes"] >= 0.5 and whole.timings["earlier_processes"] == 0.0
  assert timings["earlier_processes"] < timings["total"] <= timings["earlier_processes"] + wall


def test_resume_with_other_options_is_refused(tiny, tokens_file, tmp_path):
  _, loaded = tiny
  tokens = np.load(tokens_file)

  def die(done, total, info):
    raise Killed

  with pytest.raises(Killed):
    runs.prune_run(loaded, tokens, pruning.PruneConfig(), runs.RunConfig(out=tmp_path / "r"), on_block=die)
  with pytest.raises(JaxpruneError, match="other options"):
    runs.prune_run(loaded, tokens, pruning.PruneConfig(sparsity=0.3), runs.RunConfig(out=tmp_path / "r"))


def test_cli_prune_then_export_matches_masked_penzai_logits(tiny, tokens_file, tmp_path):
  from transformers import AutoModelForCausalLM

  folder, loaded = tiny
  run_dir = tmp_path / "run"
  assert cli.main(["prune", "--model", str(folder), "--calib-tokens", str(tokens_file),
                   "--out", str(run_dir)]) == 0
  record = json.loads((run_dir / "run.json").read_text())
  assert record["model"]["hash"] == loaded.content_hash
  assert record["options"]["method"] == "wanda"
  assert abs(record["sparsity"]["__total__"] - 0.5) < 1e-6
  assert "jax" in record["versions"] and record["timings"]["total"] > 0
  assert record["devices"]["microbatch"] >= record["devices"]["count"]  # the step size actually used
  out = tmp_path / "hf"
  assert cli.main(["export", "--model", str(folder), "--masks", str(run_dir), "--out", str(out)]) == 0

  masks, _, _ = store.load_run(run_dir)
  tokens = np.arange(1, 15)[None]
  ours = masks_lib.apply(loaded.model, masks)(pz.nx.wrap(jnp.asarray(tokens)).tag("batch", "seq"))
  hf = AutoModelForCausalLM.from_pretrained(out).eval()
  with torch.no_grad():
    ref = hf(torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours.unwrap("batch", "seq", "vocabulary")), ref, atol=1e-4, rtol=1e-4)


def test_sparsegpt_run_exports_updated_weights(tiny, tokens_file, tmp_path):
  from safetensors.numpy import load_file

  folder, loaded = tiny
  run_dir = tmp_path / "run"
  assert cli.main(["prune", "--model", str(folder), "--calib-tokens", str(tokens_file), "--method", "sparsegpt",
                   "--out", str(run_dir)]) == 0
  assert cli.main(["export", "--model", str(folder), "--masks", str(run_dir), "--out", str(tmp_path / "hf")]) == 0
  masks, _, new_weights = store.load_run(run_dir)
  name = "model.layers.1.mlp.up_proj.weight"
  exported = load_file(str(tmp_path / "hf" / "model.safetensors"))[name]
  np.testing.assert_allclose(exported, np.where(masks[name], new_weights[name], 0), rtol=1e-6)


def test_existing_run_dir_refused_without_overwrite(tiny, tokens_file, tmp_path, capsys):
  folder, _ = tiny
  args = ["prune", "--model", str(folder), "--calib-tokens", str(tokens_file), "--out", str(tmp_path / "r")]
  assert cli.main(args) == 0
  assert cli.main(args) == 2
  assert "already holds a finished run" in capsys.readouterr().err
  assert cli.main(args + ["--overwrite"]) == 0


def test_export_refuses_masks_of_another_model(tiny, tokens_file, tmp_path, capsys):
  folder, _ = tiny
  other = make_tiny_hf(tmp_path / "other", "llama", num_hidden_layers=3, seed=5)
  run_dir = tmp_path / "r"
  assert cli.main(["prune", "--model", str(folder), "--calib-tokens", str(tokens_file), "--out", str(run_dir)]) == 0
  capsys.readouterr()
  assert cli.main(["export", "--model", str(other), "--masks", str(run_dir), "--out", str(tmp_path / "x")]) == 2
  err = capsys.readouterr().err
  assert "were made for model" in err and len(err.strip().splitlines()) == 1
  assert not (tmp_path / "x").exists()


CLI_BAD = {
    "nsamples-zero": (["--nsamples", "0", "--calib", "python"], "at least 1"),
    "seqlen-too-long": (["--seqlen", "65", "--calib", "python"], "exceeds the model's context of 64"),
    "sparsity": (["--sparsity", "1.5"], "out of range"),
    "bad-tokens-file": (["--calib-tokens", "/nonexistent.npy"], "not a readable .npy"),
}


@pytest.mark.parametrize("case", list(CLI_BAD), ids=list(CLI_BAD))
def test_cli_bad_input_one_line(tiny, tmp_path, capsys, case):
  folder, _ = tiny
  extra, pattern = CLI_BAD[case]
  code = cli.main(["prune", "--model", str(folder), "--out", str(tmp_path / "r"), *extra])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and pattern in err[0], err
  assert not (tmp_path / "r" / "run.json").exists()
