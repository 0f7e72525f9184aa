"""The OpenAI-compatible server, started in the test on a free localhost port and driven by the official client."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import time

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from jaxprune.evals import generate as gen  # noqa: E402
from jaxprune.library import engine, models, server  # noqa: E402
from tests.library.conftest import JAVA, PROSE, PYTHON, source  # noqa: E402

PY_PROMPT = source(PYTHON, 5)[:60]
JAVA_PROMPT = source(JAVA, 5)[:60]


@contextlib.contextmanager
def running(submodels, **options):
  """A server in a thread on a free port; yields (base URL, app)."""
  options = {"batch_size": 4, "max_tokens": 48, "max_body_bytes": 50_000, **options}
  config = engine.ServeConfig(path=str(submodels.lib.path), port=0, **options)
  with server.running(submodels, config) as (url, app):
    yield url, app


@pytest.fixture(scope="module")
def submodels(tiny_library):
  return models.SubModels.load(tiny_library)


@pytest.fixture(scope="module")
def served(submodels):
  with running(submodels) as (url, app):
    yield url, app


@pytest.fixture(scope="module")
def client(served):
  return openai.OpenAI(base_url=served[0], api_key="unused", max_retries=0, timeout=120)


def _direct(submodels, name: str, ids: list[int], max_tokens: int) -> str:
  """What greedy generation of the sub-model gives, outside the server."""
  out = gen.generate_ids(submodels.model(name), [ids], gen.GenerateConfig(max_new_tokens=max_tokens),
                         eos_ids=gen.eos_ids_of(submodels.loaded))
  return gen.completion_text(submodels.tokenizer, ids, out[0][0])


def test_models_lists_auto_dense_and_every_sub_model(client):
  assert [m.id for m in client.models.list()] == ["auto", "dense", "python", "java"]


def test_completion_is_the_sub_models_greedy_generation(client, submodels):
  resp = client.completions.create(model="java", prompt=JAVA_PROMPT, max_tokens=12, temperature=0)
  ids = submodels.encode(JAVA_PROMPT)
  assert resp.model == "java" and resp.object == "text_completion"
  assert resp.choices[0].text == _direct(submodels, "java", ids, 12)
  assert resp.usage.prompt_tokens == len(ids) and resp.usage.completion_tokens <= 12
  assert resp.choices[0].finish_reason in ("length", "stop")
  dense = client.completions.create(model="dense", prompt=JAVA_PROMPT, max_tokens=12, temperature=0)
  assert dense.model == "dense" and dense.choices[0].text == _direct(submodels, "dense", ids, 12)


def test_chat_uses_the_chat_template(client, submodels):
  messages = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": PY_PROMPT}]
  resp = client.chat.completions.create(model="python", messages=messages, max_tokens=10, temperature=0)
  text = submodels.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
  ids = list(submodels.tokenizer(text, add_special_tokens=False)["input_ids"])
  assert resp.model == "python" and resp.object == "chat.completion"
  assert resp.choices[0].message.role == "assistant"
  assert resp.choices[0].message.content == _direct(submodels, "python", ids, 10)


def test_streaming_gives_the_same_text_piece_by_piece(client):
  whole = client.completions.create(model="python", prompt=PY_PROMPT, max_tokens=40, temperature=0)
  chunks = list(client.completions.create(model="python", prompt=PY_PROMPT, max_tokens=40, temperature=0,
                                          stream=True))
  assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
  assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
  assert len([c for c in chunks if c.choices[0].text]) > 1  # text arrives as it is generated (16-token chunks)
  messages = [{"role": "user", "content": PY_PROMPT}]
  chat = client.chat.completions.create(model="python", messages=messages, max_tokens=20, temperature=0)
  pieces = list(client.chat.completions.create(model="python", messages=messages, max_tokens=20, temperature=0,
                                               stream=True))
  assert pieces[0].choices[0].delta.role == "assistant"
  assert "".join(p.choices[0].delta.content or "" for p in pieces) == chat.choices[0].message.content
  assert pieces[-1].choices[0].finish_reason == chat.choices[0].finish_reason


def test_auto_routes_java_and_python_and_says_when_it_falls_back(client):
  for prompt, want in ((JAVA_PROMPT, "java"), (PY_PROMPT, "python")):
    resp = client.completions.create(model="auto", prompt=prompt, max_tokens=4, temperature=0)
    assert resp.model == want
    assert resp.routing["chosen"] == want and resp.routing["fallback"] is False
  resp = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": source(PROSE, 3)[:100]}],
                                        max_tokens=4)
  assert resp.model == "dense" and resp.routing["fallback"] is True and "default dense" in resp.routing["reason"]
  chunks = list(client.completions.create(model="auto", prompt=JAVA_PROMPT, max_tokens=4, stream=True))
  assert {c.model for c in chunks} == {"java"}


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(client, served, submodels):
  with pytest.raises(openai.NotFoundError) as err:
    client.completions.create(model="cobol", prompt="x", max_tokens=4)
  assert err.value.body["code"] == "model_not_found" and "python" in err.value.body["message"]
  for bad in (0, 49, 10 ** 6):
    with pytest.raises(openai.BadRequestError) as err:
      client.completions.create(model="python", prompt="x", max_tokens=bad)
    assert err.value.body["param"] == "max_tokens"
  with pytest.raises(openai.BadRequestError) as err:  # the tiny model's context is 1024 tokens (characters)
    client.completions.create(model="python", prompt="y" * 1100, max_tokens=4)
  assert err.value.body["code"] == "context_length_exceeded"
  with pytest.raises(openai.BadRequestError) as err:
    client.completions.create(model="python", prompt="y" * 1000, max_tokens=40)
  assert err.value.body["code"] == "context_length_exceeded" and err.value.body["param"] == "max_tokens"
  with pytest.raises(openai.APIStatusError) as err:
    client.completions.create(model="python", prompt="z" * 60_000, max_tokens=4)
  assert err.value.status_code == 413 and err.value.body["code"] == "request_too_large"
  raw = httpx.post(served[0] + "/completions", content=b'{"model": "python", "prompt": ', timeout=30,
                   headers={"content-type": "application/json"})
  assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]["message"]
  raw = httpx.post(served[0] + "/chat/completions", json={"model": "python", "messages": "hi"}, timeout=30)
  assert raw.status_code == 400 and raw.json()["error"]["param"] == "messages"
  with pytest.raises(openai.BadRequestError):
    client.completions.create(model="python", prompt="x", max_tokens=4, temperature=5)
  resp = client.completions.create(model="python", prompt="def f(", max_tokens=3)
  assert resp.choices[0].finish_reason in ("length", "stop")


def test_requests_for_one_sub_model_are_batched(client, served):
  stats = served[1].state.engine.stats
  before = dict(stats)
  prompts = [PY_PROMPT[:20 + 5 * i] for i in range(6)]
  with concurrent.futures.ThreadPoolExecutor(6) as pool:
    answers = list(pool.map(lambda p: client.completions.create(model="python", prompt=p, max_tokens=16,
                                                                 temperature=0), prompts))
  assert all(a.model == "python" for a in answers)
  assert stats["requests"] - before["requests"] == 6
  assert stats["batches"] - before["batches"] < 6


def test_api_key_is_required_when_set(submodels):
  with running(submodels, api_key="s3cret") as (url, _):
    with pytest.raises(openai.AuthenticationError):
      openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
    ok = openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0)
    assert ok.completions.create(model="java", prompt="class A", max_tokens=2).model == "java"


def test_a_request_that_times_out_is_cancelled(submodels):
  with running(submodels, timeout_s=0.05, chunk=1) as (url, app):
    stats = app.state.engine.stats
    client = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=60)
    with pytest.raises(openai.APIStatusError) as err:
      client.completions.create(model="java", prompt=JAVA_PROMPT, max_tokens=48)
    assert err.value.status_code == 408 and err.value.body["code"] == "timeout"
    deadline = time.monotonic() + 60
    while stats["cancelled"] < 1:  # the row stops at its next decode step, or the queued request is dropped
      assert time.monotonic() < deadline, stats
      time.sleep(0.05)
    assert stats["requests"] == 0
    assert json.loads(httpx.get(url + "/models", timeout=30).text)["data"][0]["id"] == "auto"


def test_a_chunked_body_over_the_limit_is_refused_while_read(served, client):
  def body():
    yield b'{"model": "python", "prompt": "'
    for _ in range(60):
      yield b"x" * 1000
    yield b'", "max_tokens": 2}'

  raw = httpx.post(served[0] + "/completions", content=body(), timeout=30, headers={"content-type": "application/json"})
  assert raw.status_code == 413 and raw.json()["error"]["code"] == "request_too_large"
  assert client.completions.create(model="java", prompt="class B", max_tokens=2).model == "java"


def test_jaxprune_serve_runs_until_interrupted(tiny_library):
  import os
  import signal
  import socket
  import subprocess
  import sys

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  proc = subprocess.Popen([sys.executable, "-m", "jaxprune.cli", "serve", str(tiny_library), "--port", str(port)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  try:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0, timeout=120)
    deadline = time.monotonic() + 120
    while True:
      try:
        assert [m.id for m in client.models.list()][:2] == ["auto", "dense"]
        break
      except openai.APIConnectionError:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    assert client.completions.create(model="auto", prompt=JAVA_PROMPT, max_tokens=3).model == "java"
  finally:
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
  assert f"127.0.0.1:{port}" in proc.stderr.read().decode()


def test_a_request_arriving_mid_batch_joins_it_and_gets_its_own_answer(submodels):
  with running(submodels, chunk=1, max_tokens=300, min_rows=4) as (url, app):
    stats = app.state.engine.stats
    client = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=120)
    stream = client.completions.create(model="java", prompt=JAVA_PROMPT, max_tokens=300, temperature=0, stream=True)
    pieces = [next(iter(stream)).choices[0].text]  # the first request's batch is decoding now
    second = client.completions.create(model="java", prompt=JAVA_PROMPT[:30], max_tokens=10, temperature=0)
    pieces += [c.choices[0].text for c in stream]
    assert stats["joined"] == 1 and stats["batches"] == 1, stats
    assert second.choices[0].text == _direct(submodels, "java", submodels.encode(JAVA_PROMPT[:30]), 10)
    assert "".join(pieces) == _direct(submodels, "java", submodels.encode(JAVA_PROMPT), 300)


def test_once_another_sub_model_waits_nothing_joins_the_running_batch(submodels):
  with running(submodels, chunk=1, max_tokens=300, min_rows=4) as (url, app):
    stats = app.state.engine.stats
    client = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=120)
    stream = client.completions.create(model="java", prompt=JAVA_PROMPT, max_tokens=300, temperature=0, stream=True)
    next(iter(stream))  # the Java batch is decoding now
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      python = pool.submit(client.completions.create, model="python", prompt=PY_PROMPT, max_tokens=5, temperature=0)
      time.sleep(0.2)
      java = pool.submit(client.completions.create, model="java", prompt=JAVA_PROMPT[:30], max_tokens=5, temperature=0)
      answers = [python.result(), java.result()]
    list(stream)
    assert [a.model for a in answers] == ["python", "java"]
    assert stats["joined"] == 0 and stats["batches"] == 3, stats  # java, python, then java again
