"""Routers: the classifier sends Python and Java to their sub-models and prose to the default; the exact
router picks the sub-model of lowest prompt loss; `jaxprune library route` prints the choice."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxprune.evals import scoring
from jaxprune import cli
from jaxprune.errors import JaxpruneError
from jaxprune.library import models, routers, store, submodels
from tests.library.conftest import JAVA, PROSE, PYTHON, source

PY_PROMPT = source(PYTHON, 7)
JAVA_PROMPT = source(JAVA, 7)
PROSE_PROMPT = source(PROSE, 7)


@pytest.fixture(scope="module")
def loaded_library(tiny_library):
  return models.SubModels.load(tiny_library)


def test_classifier_routes_each_language_to_its_sub_model(tiny_library):
  for text, want in ((PY_PROMPT, "python"), (JAVA_PROMPT, "java")):
    route = models.route_text(tiny_library, text)
    assert (route.chosen, route.fallback, route.router) == (want, False, "classifier")
    assert route.scores[want] == max(route.scores.values())


def test_ambiguous_prompts_fall_back_to_the_default_and_say_so(tiny_library):
  route = models.route_text(tiny_library, PROSE_PROMPT)
  assert route.chosen == "dense" and route.fallback and "background" in route.reason
  route = models.route_text(tiny_library, PY_PROMPT, min_confidence=1.0, default="java")
  assert route.chosen == "java" and route.fallback and "min_confidence" in route.reason
  mixed = source(JAVA, 3)[:150] + "\n" + source(PYTHON, 3)[:150]
  route = models.route_text(tiny_library, mixed)
  assert route.chosen == "dense" and route.fallback and "mixed languages" in route.reason
  assert not models.route_text(tiny_library, mixed, mixed_share=0.6).fallback
  with pytest.raises(JaxpruneError, match="not a sub-model"):
    models.route_text(tiny_library, PY_PROMPT, default="cobol")
  with pytest.raises(JaxpruneError, match="unknown router"):
    models.route_text(tiny_library, PY_PROMPT, router="oracle")


def _loss(model, ids):
  tree_def, params = scoring.split(model)
  logprobs, _ = scoring.next_token_logprobs(tree_def, params, np.asarray([ids], np.int32))
  return float(-np.asarray(logprobs, np.float64).mean())


def test_perplexity_router_picks_the_lowest_loss(loaded_library):
  lib = loaded_library.lib
  ids = loaded_library.encode(JAVA_PROMPT)[:100]
  text = loaded_library.tokenizer.decode(ids)
  want = {}
  for name in lib.names:  # the reference: each sub-model built from the run's masks, scored unpadded
    packed, shapes, kept = store.read_submodel(lib, name)
    want[name] = _loss(submodels.apply(loaded_library.loaded.model, packed, shapes, kept), ids)
  route = loaded_library.route(text, routers.RouteConfig(router="perplexity", min_margin=0.0))
  assert route.scores == pytest.approx(want, abs=1e-4)
  assert route.chosen == min(want, key=want.get) and not route.fallback
  gap = abs(want["python"] - want["java"])
  route = loaded_library.route(text, routers.RouteConfig(router="perplexity", min_margin=gap + 1e-3))
  assert route.fallback and route.chosen == "dense" and "min_margin" in route.reason
  assert loaded_library.route("x", routers.RouteConfig(router="perplexity")).fallback  # one token: no loss


def test_switching_leaves_the_base_untouched(loaded_library):
  from penzai import pz

  base = {p.label: np.asarray(p.value.data_array) for p in pz.unbind_params(loaded_library.loaded.model)[1]}
  java = loaded_library.model("java")
  loaded_library.model("python")
  after = {p.label: np.asarray(p.value.data_array) for p in pz.unbind_params(loaded_library.loaded.model)[1]}
  assert all(np.array_equal(base[k], after[k]) for k in base)
  shared = {p.label: p.value.data_array for p in pz.unbind_params(java)[1]}
  embed = next(k for k in shared if "embed" in k)
  assert shared[embed] is pz.unbind_params(loaded_library.loaded.model)[1][0].value.data_array or \
      any(p.value.data_array is shared[embed] for p in pz.unbind_params(loaded_library.loaded.model)[1])
  with pytest.raises(JaxpruneError, match="unknown model"):
    loaded_library.model("cobol")


def test_cli_route_prints_the_choice_and_scores(tiny_library, tmp_path, capsys):
  prompt = tmp_path / "p.java"
  prompt.write_text(JAVA_PROMPT)
  assert cli.main(["library", "route", str(tiny_library), "--file", str(prompt), "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["chosen"] == "java" and set(out["scores"]) >= {"python", "java"}
  assert cli.main(["library", "route", str(tiny_library), "--text", PROSE_PROMPT]) == 0
  assert "chosen: dense" in capsys.readouterr().out
  assert cli.main(["library", "info", str(tiny_library)]) == 0
  assert "dense exports" in capsys.readouterr().out


def test_routing_many_prompts_at_once_gives_each_prompts_route(loaded_library):
  texts = [PY_PROMPT[:80], JAVA_PROMPT[:80], PROSE_PROMPT[:80]]
  for config in (routers.RouteConfig(router="perplexity", min_margin=0.0), routers.RouteConfig()):
    many = loaded_library.route_many(texts, config)
    for text, route in zip(texts, many):
      one = loaded_library.route(text, config)
      assert (route.chosen, route.fallback) == (one.chosen, one.fallback)
      assert route.scores == pytest.approx(one.scores, abs=1e-5) and route.seconds > 0


def test_a_declared_language_routes_without_asking_the_router(tiny_library, loaded_library):
  fenced = f"Complete this Java method:\n```java\n{PY_PROMPT[:120]}\n```"  # Python text, declared Java
  route = models.route_text(tiny_library, fenced)
  assert (route.chosen, route.router, route.fallback) == ("java", routers.DECLARED, False)
  assert "declare java" in route.reason and route.scores == {}
  assert models.route_text(tiny_library, fenced, declared=False).chosen == "python"  # the classifier reads the code
  rust = f"```rust\n{PY_PROMPT[:120]}\n```"
  route = models.route_text(tiny_library, rust, default="java")
  assert (route.chosen, route.fallback) == ("java", True) and "no sub-model" in route.reason
  both = f"```java\n{JAVA_PROMPT[:80]}\n```\n```python\n{PY_PROMPT[:80]}\n```"
  assert models.route_text(tiny_library, both).router == "classifier"  # two languages declared: the router decides
  # the perplexity router skips the prefills of declared prompts, and routes the rest as one by one
  config = routers.RouteConfig(router="perplexity", min_margin=0.0)
  many = loaded_library.route_many([fenced, PY_PROMPT[:80], rust], config)
  assert [r.router for r in many] == [routers.DECLARED, "perplexity", routers.DECLARED]
  assert many[1].chosen == loaded_library.route(PY_PROMPT[:80], config).chosen


def test_cli_route_honours_the_declared_flag(tiny_library, tmp_path, capsys):
  prompt = tmp_path / "p.md"
  prompt.write_text(f"```java\n{PY_PROMPT[:120]}\n```")
  assert cli.main(["library", "route", str(tiny_library), "--file", str(prompt), "--json"]) == 0
  assert json.loads(capsys.readouterr().out)["chosen"] == "java"
  assert cli.main(["library", "route", str(tiny_library), "--file", str(prompt), "--json", "--no-declared"]) == 0
  assert json.loads(capsys.readouterr().out)["chosen"] == "python"


def test_a_lazy_library_loads_the_base_only_when_a_model_is_needed(tiny_library, monkeypatch):
  from jaxprune import converters

  calls = []
  load = converters.load_model
  monkeypatch.setattr(converters, "load_model", lambda *a, **k: calls.append(a) or load(*a, **k))
  lazy = models.SubModels.load(tiny_library, lazy=True)
  assert lazy.route(JAVA_PROMPT, routers.RouteConfig()).chosen == "java" and lazy.encode("class A")
  assert calls == []  # the classifier and the tokenizer need no weights
  assert lazy.route(JAVA_PROMPT, routers.RouteConfig(router="perplexity", min_margin=0.0)).router == "perplexity"
  assert len(calls) == 1 and lazy.max_positions == 1024
