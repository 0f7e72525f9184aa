"""Fine-tuned runs end to end: the CLI, a run like any other (export, eval, compare), one-line errors."""

from __future__ import annotations

import json

import chex
import numpy as np
import pytest

from jaxprune import calibration, cli, runs, store
from jaxprune.finetune import FinetuneConfig, TrainConfig, finetune_run, training_tokens
from tests.faults.conftest import one_line_error
from tests.evals.conftest import make_tiny_with_tokenizer

torch = pytest.importorskip("torch")

FLAGS = ["--steps", "3", "--batch", "8", "--seqlen", "16", "--lr", "1e-2", "--checkpoint-every", "2"]


@pytest.fixture(scope="module")
def tuned(tiny, corpus, base_run, tmp_path_factory):
  folder, _ = tiny
  out = tmp_path_factory.mktemp("tuned") / "ft"
  assert cli.main(["finetune", "--model", str(folder), "--masks", str(base_run), "--calib", str(corpus),
                   *FLAGS, "--out", str(out)]) == 0
  return out


def test_the_run_records_base_data_steps_and_loss_curve(tuned, base_run, tiny, corpus):
  _, loaded = tiny
  record = json.loads((tuned / "run.json").read_text())
  base = json.loads((base_run / "run.json").read_text())
  assert record["model"] == base["model"] and record["options"] == base["options"]
  ft = record["finetune"]
  assert ft["steps"] == 3 and len(ft["losses"]) == 3 and all(np.isfinite(ft["losses"]))
  assert ft["base_run"].endswith("base") and ft["data"]["side"] == "calibration"
  assert ft["train"]["lr"] == 1e-2 and ft["tokens"] == 3 * 8 * 16
  # the training text is the calibration side's sample, never the held-out files'
  expected = training_tokens(str(corpus), loaded.tokenizer, TrainConfig(steps=3, batch=8, seqlen=16))
  np.testing.assert_array_equal(expected, calibration.sample(str(corpus), loaded.tokenizer, 24, 16, 0))
  assert ft["data"]["token_hash"] == runs.token_hash(expected)
  assert not list(tuned.parent.glob(".*jaxprune-partial"))  # checkpoints gone once the run is complete


def test_fine_tuned_weights_keep_the_masks_and_differ_from_the_base(tuned, base_run):
  masks, _, new = store.load_run(tuned)
  base_masks, _, _ = store.load_run(base_run)
  chex.assert_trees_all_equal(masks, base_masks)
  assert sorted(new) == sorted(masks)
  for name, w in new.items():
    assert not np.any(w[~masks[name]]), name
    assert np.any(w[masks[name]] != 0), name


def test_export_of_the_fine_tuned_run_loads_in_transformers_with_our_logits(tuned, tiny, tmp_path):
  from penzai import pz
  from transformers import AutoModelForCausalLM

  folder, loaded = tiny
  out = tmp_path / "hf"
  assert cli.main(["export", "--model", str(folder), "--masks", str(tuned), "--out", str(out)]) == 0
  ours, _, _ = runs.with_run(loaded, tuned)
  tokens = np.random.default_rng(0).integers(2, 97, (2, 12))
  logits = np.asarray(ours.model(pz.nx.wrap(tokens).tag("batch", "seq")).unwrap("batch", "seq", "vocabulary"))
  hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  with torch.no_grad():
    theirs = hf(torch.as_tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(logits, theirs, atol=2e-4, rtol=1e-4)
  _, _, new = store.load_run(tuned)
  state = hf.state_dict()
  for name, w in new.items():
    np.testing.assert_array_equal(state[name].numpy(), w, err_msg=name)


def test_eval_and_compare_accept_the_fine_tuned_run(tuned, base_run, tiny, corpus, tmp_path):
  from jaxprune import compare

  folder, _ = tiny
  nll = {}
  for run in (base_run, tuned):
    report = tmp_path / f"{run.name}.json"
    assert cli.main(["eval", "--model", str(folder), "--masks", str(run), "--tasks", f"ppl:{corpus}",
                     "--seqlen", "16", "--max-windows", "4", "--out", str(report)]) == 0
    written = json.loads(report.read_text())
    nll[run.name] = written["tasks"][f"ppl:{corpus}"]["nll"]
  assert written["masks"]["finetune"]["steps"] == 3 and not written["masks"]["sparsegpt_weights"]
  assert np.isfinite(nll["ft"]) and nll["ft"] != nll["base"]  # eval applied the fine-tuned weights
  read = compare.read_runs([base_run, tuned])
  assert [r.options for r in read] == [read[0].options] * 2
  assert cli.main(["compare", str(base_run), str(tuned), "--out", str(tmp_path / "cmp")]) == 0
  distances = json.loads((tmp_path / "cmp" / "distances.json").read_text())
  assert distances  # masks identical: compare runs on a fine-tuned run like any other


def test_rerun_after_a_kill_resumes_and_matches(tiny, corpus, base_run, tuned, tmp_path):
  _, loaded = tiny
  train = TrainConfig(steps=3, batch=8, seqlen=16, lr=1e-2)
  config = FinetuneConfig(masks=str(base_run), out=str(tmp_path / "k"), model=loaded.source, calib=str(corpus),
                          train=train, checkpoint_every=2)

  class Killed(Exception):
    pass

  def die(done, total, loss):
    if done == 3:
      raise Killed

  with pytest.raises(Killed):
    finetune_run(config, loaded=loaded, on_step=die)
  assert not (tmp_path / "k").exists() and (tmp_path / ".k.jaxprune-partial" / "state").is_dir()
  resumed = finetune_run(config, loaded=loaded)
  assert resumed.resumed_from == 2
  chex.assert_trees_all_equal(store.load_run(tmp_path / "k")[2], store.load_run(tuned)[2])


@pytest.mark.parametrize("flags, patterns", [
    (["--steps", "0"], ["--steps 0 must be at least 1"]),
    (["--lr", "0"], ["--lr 0.0 must be above 0"]),
    (["--lr=-1e-4"], ["must be above 0"]),
])
def test_bad_options_are_one_line(flags, patterns, tiny, base_run, corpus, tmp_path, capsys):
  folder, _ = tiny
  code = cli.main(["finetune", "--model", str(folder), "--masks", str(base_run), "--calib", str(corpus),
                   *FLAGS, *flags, "--out", str(tmp_path / "o")])
  one_line_error(capsys, code, 2, *patterns)
  assert not (tmp_path / "o").exists()


def test_a_domain_with_too_little_text_is_one_line(tiny, base_run, tmp_path, capsys):
  folder, _ = tiny
  small = tmp_path / "small"
  small.mkdir()
  for i in range(6):
    (small / f"f{i}.py").write_text("x = 1\n")
  code = cli.main(["finetune", "--model", str(folder), "--masks", str(base_run), "--calib", str(small),
                   *FLAGS, "--out", str(tmp_path / "o")])
  one_line_error(capsys, code, 2, "fewer than", "lower --steps, --batch or --seqlen")


def test_masks_from_another_model_are_one_line(tiny, base_run, corpus, tmp_path, capsys):
  other, _ = make_tiny_with_tokenizer(tmp_path / "other", "llama", seed=5)
  capsys.readouterr()  # transformers' own output while saving the other model
  code = cli.main(["finetune", "--model", str(other), "--masks", str(base_run), "--calib", str(corpus),
                   *FLAGS, "--out", str(tmp_path / "o")])
  one_line_error(capsys, code, 2, "were made for model", "pass the --model the run was pruned from")


def test_damaged_weights_of_a_fine_tuned_run_are_one_line(tuned, tiny, tmp_path, capsys):
  import shutil

  folder, _ = tiny
  damaged = shutil.copytree(tuned, tmp_path / "damaged")
  for path in (p for p in (damaged / "weights").rglob("*") if p.is_file()):
    path.write_bytes(path.read_bytes()[:5])
  code = cli.main(["eval", "--model", str(folder), "--masks", str(damaged), "--tasks", "ppl:python",
                   "--max-windows", "1", "--seqlen", "16"])
  one_line_error(capsys, code, 2, "cannot be read")


def test_lora_run_merges_a_masked_update(tiny, corpus, base_run, tmp_path):
  from jaxprune.model import weights

  folder, loaded = tiny
  out = tmp_path / "lora"
  assert cli.main(["finetune", "--model", str(folder), "--masks", str(base_run), "--calib", str(corpus),
                   *FLAGS, "--lora", "2", "--out", str(out)]) == 0
  record = json.loads((out / "run.json").read_text())["finetune"]
  assert record["mode"] == "lora rank 2" and record["train"]["lora"] == 2
  masks, _, new = store.load_run(out)
  dense = {n: np.asarray(weights.hf_matrix(l)) for n, l in weights.prunable_linears(loaded.model).items()}
  for name, w in new.items():
    delta = w - np.where(masks[name], dense[name], 0)
    assert not np.any(w[~masks[name]]) and np.any(delta != 0), name
