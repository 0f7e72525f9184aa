"""METEOR with Debian's WordNet files: identical and unrelated sentences, best-of-5, the task end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jaxprune.evals import meteor
from jaxprune import cli
from jaxprune.errors import JaxpruneError

WORDNET = Path("/usr/share/wordnet")
needs_wordnet = pytest.mark.skipif(not (WORDNET / "data.noun").exists(), reason="apt-get install wordnet-base")


@pytest.fixture(scope="module")
def wn(tmp_path_factory):
  return meteor.wordnet(WORDNET, cache=tmp_path_factory.mktemp("cache"))


REFERENCE = "The committee approved the new budget after a long debate."


@needs_wordnet
@pytest.mark.parametrize("hypothesis, low, high", [
    (REFERENCE, 0.99, 1.0),
    ("Penguins swim quickly in cold water.", 0.0, 0.1),
    ("The committee approved the new budget after a long talk.", 0.6, 0.95),
], ids=["itself", "unrelated", "one-word-off"])
def test_meteor_of_reference(wn, hypothesis, low, high):
  assert low <= meteor.meteor(REFERENCE, hypothesis, wn) <= high


@needs_wordnet
def test_synonyms_match_through_wordnet(wn):
  """kid/child and auto/car are WordNet synonyms (nltk matches synonyms after Porter stemming, so these
  stem-invariant words show it)."""
  from nltk.translate.meteor_score import meteor_score

  reference, hypothesis = "The child left the car near the old house.", "The kid left the auto near the old house."
  without = meteor_score([meteor.tokens(reference)], meteor.tokens(hypothesis), wordnet=_NoSynonyms())
  assert meteor.meteor(reference, hypothesis, wn) > 0.99 > 0.8 > without


class _NoSynonyms:
  def synsets(self, *_args, **_kwargs):
    return []


@needs_wordnet
def test_best_of_five_takes_the_best_sample(wn):
  pairs = [("The cat sleeps.", "Le chat dort."), ("Open the door.", "Ouvrez la porte.")]
  outputs = {0: ["Le chien.", " Le chat dort.", "x", "y", "z"], 1: ["porte", "a", "b", "c", "d"]}
  seen = {}

  def generate(prompts, *, num_samples, temperature, top_p, max_new_tokens, stop):
    seen.update(n=num_samples, stop=stop, prompts=prompts)
    return [outputs[i] for i in range(len(prompts))]

  report = meteor.evaluate(generate, pairs, ("en", "fr"), wn)
  assert seen["n"] == 5 and seen["stop"] == ["\n"]
  assert seen["prompts"][0].endswith("English: The cat sleeps.\nFrench:")
  assert report["samples"][0]["best"] == "Le chat dort." and report["samples"][0]["meteor"] > 0.99
  assert report["metrics"]["meteor"] > report["metrics"]["meteor_mean_sample"]
  assert [s["source"] for s in report["samples"]] == ["The cat sleeps.", "Open the door."]
  without = meteor.evaluate(generate, pairs, ("en", "fr"), wn, keep_samples=False)
  assert "samples" not in without and without["metrics"] == report["metrics"]


def test_pairs_from_wmt_and_flat_rows():
  rows = [{"translation": {"en": " Hi ", "fr": "Salut"}}, {"en": "Yes", "fr": "Oui"}]
  assert meteor.pairs_from_rows(rows) == [("Hi", "Salut"), ("Yes", "Oui")]
  with pytest.raises(JaxpruneError, match="WMT14/opus_books"):
    meteor.pairs_from_rows([{"source": "a"}])


def test_missing_wordnet_says_how_to_get_it(tmp_path):
  with pytest.raises(JaxpruneError, match="apt-get install wordnet-base") as err:
    meteor.wordnet(tmp_path)
  assert "\n" not in str(err.value)


@needs_wordnet
def test_task_runs_end_to_end_on_a_tiny_model(tiny_long, tmp_path, monkeypatch):
  folder, _ = tiny_long
  monkeypatch.setenv("JAXPRUNE_CACHE", str(tmp_path / "cache"))
  data = tmp_path / "wmt.jsonl"
  data.write_text(json.dumps({"translation": {"en": "Good morning.", "fr": "Bonjour."}}) + "\n")
  out = tmp_path / "r.json"
  assert cli.main(["eval", "--model", str(folder), "--tasks", "meteor-fr-en", "--data", f"meteor-fr-en={data}",
                   "--max-new-tokens", "4", "--gen-batch-size", "5", "--out", str(out)]) == 0
  result = json.loads(out.read_text())["tasks"]["meteor-fr-en"]
  assert result["num_examples"] == 1 and result["best_of"] == 5 and 0 <= result["metrics"]["meteor"] <= 1
  assert [s["source"] for s in result["samples"]] == ["Bonjour."]  # kept by default


def test_wordnet_folder_with_subfolders_is_copied_without_them(tmp_path):
  """Some Debian builds put a GUI resource folder (wnres/) beside the database files."""
  source = tmp_path / "wordnet"
  (source / "wnres").mkdir(parents=True)
  (source / "wnres" / "icon.xbm").write_text("x")
  (source / "data.noun").write_text("  1 header\n")
  root = meteor._with_lexnames(source, tmp_path / "cache")
  assert (root / "data.noun").read_text() == "  1 header\n"
  assert (root / "lexnames").read_text().startswith("00\tadj.all\t3\n")
  assert not (root / "wnres").exists()
