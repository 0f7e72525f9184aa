"""The OpenAI HTTP API over a sub-model library (FastAPI + uvicorn).

``GET /v1/models``, ``POST /v1/completions`` and ``POST /v1/chat/completions``
(whole answers, or ``stream: true`` server-sent events). ``model`` is a
sub-model, ``dense`` (the base) or ``auto`` (routed); the answer's ``model``
names the sub-model that answered and ``routing`` says how it was chosen
(router, scores, and whether an ambiguous prompt fell back to the default).

Every bad request gets a 4xx with an OpenAI-style body
``{"error": {"message", "type", "param", "code"}}`` and the server keeps
serving: unknown model (404), malformed JSON or fields (400), ``max_tokens``
out of range (400), prompt plus ``max_tokens`` longer than the context (400,
``context_length_exceeded``), a body over ``max_body_bytes`` (413), a missing
or wrong API key (401); a request past ``timeout_s`` is cancelled (408).

Example:
  >>> serve(ServeConfig(path="lib/"))      # then: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-")
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import secrets
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from jaxprune.errors import JaxpruneError
from jaxprune.library import engine as engine_lib
from jaxprune.library.engine import AUTO, Engine, ServeConfig
from jaxprune.library.models import DENSE, SubModels

log = logging.getLogger(__name__)

__all__ = ["ServeConfig", "create_app", "running", "serve"]


class ApiError(Exception):
  def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error"):
    super().__init__(message)
    self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def _error_body(message: str, kind: str, param: str | None, code: str | None) -> dict[str, Any]:
  return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error(status: int, message: str, param=None, code=None, kind="invalid_request_error") -> JSONResponse:
  return JSONResponse(_error_body(message, kind, param, code), status_code=status)


class Message(BaseModel):
  model_config = ConfigDict(extra="allow")
  role: str
  content: str | list[dict[str, Any]] | None = None


class _Common(BaseModel):
  model_config = ConfigDict(extra="allow")  # OpenAI fields we do not use (user, logit_bias, ...) are ignored
  model: str
  max_tokens: int | None = None
  temperature: float = 1.0
  top_p: float = 1.0
  stop: str | list[str] | None = None
  stream: bool = False
  n: int = 1
  seed: int | None = None


class CompletionBody(_Common):
  prompt: str | list[str]


class ChatBody(_Common):
  messages: list[Message]
  max_completion_tokens: int | None = None


class BodyLimit:
  """ASGI middleware: a body over ``limit`` bytes (declared, or counted as it arrives) is answered 413.

  The body is read here first (at most ``limit`` bytes are kept) and handed to the app once complete.
  """

  def __init__(self, app, limit: int):
    self.app, self.limit = app, limit

  async def __call__(self, scope, receive, send):
    if scope["type"] != "http":
      return await self.app(scope, receive, send)
    too_big = _error(413, f"request body over {self.limit} bytes: send a shorter prompt", code="request_too_large")
    declared = dict(scope.get("headers") or {}).get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > self.limit:
      return await too_big(scope, receive, send)
    messages, size = [], 0
    while True:
      message = await receive()
      messages.append(message)
      size += len(message.get("body", b""))
      if size > self.limit:
        return await too_big(scope, receive, send)
      if message["type"] != "http.request" or not message.get("more_body"):
        break

    async def replay():
      return messages.pop(0) if messages else await receive()

    return await self.app(scope, replay, send)


def create_app(models: SubModels, config: ServeConfig) -> FastAPI:
  """The FastAPI application serving ``models``; its engine starts and stops with the app."""
  engine = Engine(models, config)

  @contextlib.asynccontextmanager
  async def lifespan(app):
    await engine.start()
    yield
    await engine.stop()

  app = FastAPI(title="jaxprune", lifespan=lifespan)
  app.state.engine = engine

  @app.exception_handler(ApiError)
  async def api_error(request, err: ApiError):
    return _error(err.status, err.message, err.param, err.code, err.kind)

  @app.exception_handler(RequestValidationError)
  async def invalid(request, err: RequestValidationError):
    first = err.errors()[0] if err.errors() else {}
    if first.get("type") == "json_invalid":
      return _error(400, f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})")
    where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return _error(400, f"{where or 'body'}: {first.get('msg', 'invalid')}", param=where)

  @app.middleware("http")
  async def authorize(request: Request, call_next):
    if config.api_key is not None:
      given = request.headers.get("authorization", "")
      if not secrets.compare_digest(given.encode(), f"Bearer {config.api_key}".encode()):
        return _error(401, "missing or wrong API key: send Authorization: Bearer KEY", code="invalid_api_key",
                      kind="authentication_error")
    return await call_next(request)

  @app.get("/v1/models")
  async def list_models():
    created = int(time.time())
    names = (AUTO, DENSE, *models.names)
    return {"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": "jaxprune"}
                                       for n in names]}

  @app.post("/v1/completions")
  async def completions(body: CompletionBody):
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
      raise ApiError(400, "prompt: send one prompt per request", param="prompt")
    ids = models.encode(prompts[0])
    return await _answer(engine, body, ids, prompts[0], body.max_tokens, chat=False)

  @app.post("/v1/chat/completions")
  async def chat(body: ChatBody):
    if not body.messages:
      raise ApiError(400, "messages: send at least one message", param="messages")
    if not getattr(models.tokenizer, "chat_template", None):
      raise ApiError(400, "the base model's tokenizer has no chat template: use /v1/completions", param="messages")
    messages = [{"role": m.role, "content": _content(m)} for m in body.messages]
    try:
      text = models.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as err:  # jinja templates raise their own errors (e.g. roles out of order)
      raise ApiError(400, f"messages: the chat template refused them ({err})", param="messages") from None
    ids = list(models.tokenizer(text, add_special_tokens=False)["input_ids"])
    user_text = "\n".join(m["content"] for m in messages if m["role"] == "user")
    return await _answer(engine, body, ids, user_text, body.max_completion_tokens or body.max_tokens, chat=True)

  app.add_middleware(BodyLimit, limit=config.max_body_bytes)
  return app


def _content(message: Message) -> str:
  if isinstance(message.content, list):  # content parts: the text ones
    return "".join(str(p.get("text", "")) for p in message.content if p.get("type") == "text")
  return message.content or ""


def _request(engine: Engine, body: _Common, ids: list[int], route_text: str, max_tokens: int | None
             ) -> engine_lib.Request:
  config, models = engine.config, engine.models
  if body.model != AUTO:
    try:
      models.check(body.model)
    except JaxpruneError as err:
      raise ApiError(404, str(err), param="model", code="model_not_found") from None
  if body.n != 1:
    raise ApiError(400, f"n={body.n}: this server returns one choice per request (n=1)", param="n")
  if not 0 <= body.temperature <= 2 or not 0 < body.top_p <= 1:
    raise ApiError(400, f"temperature {body.temperature} must be in [0, 2] and top_p {body.top_p} in (0, 1]",
                   param="temperature" if not 0 <= body.temperature <= 2 else "top_p")
  if not ids:
    raise ApiError(400, "the prompt is empty: send some text", param="prompt")
  context = models.max_positions
  if len(ids) >= context:
    raise ApiError(400, f"the prompt has {len(ids)} tokens; the context is {context}: shorten the prompt",
                   param="prompt", code="context_length_exceeded")
  if max_tokens is None:
    max_tokens = min(config.default_max_tokens, context - len(ids))
  if not 1 <= max_tokens <= config.max_tokens:
    raise ApiError(400, f"max_tokens {max_tokens} is out of range: give 1 to {config.max_tokens}", param="max_tokens")
  if len(ids) + max_tokens > context:
    raise ApiError(400, f"the prompt's {len(ids)} tokens plus max_tokens {max_tokens} exceed the context of {context}:"
                   f" ask for at most {context - len(ids)} tokens", param="max_tokens", code="context_length_exceeded")
  stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
  return engine_lib.Request(model=body.model, prompt_ids=ids, route_text=route_text, max_tokens=max_tokens,
                            temperature=body.temperature, top_p=body.top_p, stop=tuple(s for s in stop if s),
                            seed=body.seed or 0)


async def _answer(engine: Engine, body: _Common, ids: list[int], route_text: str, max_tokens: int | None, *,
                  chat: bool):
  request = _request(engine, body, ids, route_text, max_tokens)
  ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
  created = int(time.time())
  events = engine.submit(request)
  if body.stream:
    return StreamingResponse(_stream(events, ident, created, request, chat), media_type="text/event-stream")
  try:
    async for kind, value in events:
      if kind == "error":
        raise ApiError(500, f"generation failed: {value}", kind="server_error")
      if kind == "done":
        return _whole(value, ident, created, len(ids), chat)
  except engine_lib.Timeout as err:
    raise ApiError(408, str(err), code="timeout") from None
  finally:
    await events.aclose()
  raise ApiError(500, "generation ended without an answer", kind="server_error")


def _routing(result_or_route) -> dict[str, Any] | None:
  route = getattr(result_or_route, "route", result_or_route)
  return None if route is None else route.as_json()


def _whole(result: engine_lib.Result, ident: str, created: int, prompt_tokens: int, chat: bool) -> dict[str, Any]:
  choice = ({"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": result.finish_reason}
            if chat else {"index": 0, "text": result.text, "logprobs": None, "finish_reason": result.finish_reason})
  return {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": created,
          "model": result.model, "choices": [choice],
          "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": result.completion_tokens,
                    "total_tokens": prompt_tokens + result.completion_tokens},
          "routing": _routing(result)}


async def _stream(events, ident: str, created: int, request: engine_lib.Request, chat: bool):
  """Server-sent events: a chunk per piece of text, a last chunk with the finish reason, then [DONE]."""
  obj = "chat.completion.chunk" if chat else "text_completion"

  def chunk(text: str | None, finish: str | None, model: str, first: bool = False) -> str:
    if chat:
      delta = {"role": "assistant", "content": ""} if first else ({} if text is None else {"content": text})
      choice = {"index": 0, "delta": delta, "finish_reason": finish}
    else:
      choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
    data = {"id": ident, "object": obj, "created": created, "model": model, "choices": [choice],
            "routing": _routing(request.route)}
    return f"data: {json.dumps(data)}\n\n"

  model = request.model
  try:
    sent_first = False
    async for kind, value in events:
      model = request.route.chosen if request.route else request.model
      if chat and not sent_first:
        yield chunk(None, None, model, first=True)
        sent_first = True
      if kind == "delta":
        yield chunk(value, None, model)
      elif kind == "done":
        yield chunk(None, value.finish_reason, value.model)
      else:
        yield f"data: {json.dumps(_error_body(f'generation failed: {value}', 'server_error', None, None))}\n\n"
        return
    yield "data: [DONE]\n\n"
  except engine_lib.Timeout as err:
    yield f"data: {json.dumps(_error_body(str(err), 'invalid_request_error', None, 'timeout'))}\n\n"
  finally:
    await events.aclose()


@contextlib.contextmanager
def running(models: SubModels, config: ServeConfig):
  """The server in a background thread of this process (tests, benchmarks); yields (base URL, app).

  ``config.port`` 0 picks a free port.
  """
  import socket
  import threading

  import uvicorn

  if config.port == 0:
    with socket.socket() as s:
      s.bind((config.host, 0))
      config = dataclasses.replace(config, port=s.getsockname()[1])
  app = create_app(models, config)
  uv = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning"))
  thread = threading.Thread(target=uv.run, daemon=True)
  thread.start()
  deadline = time.monotonic() + 60
  while not uv.started:
    if time.monotonic() > deadline or not thread.is_alive():
      raise RuntimeError(f"the server did not start on {config.host}:{config.port}")
    time.sleep(0.02)
  try:
    yield f"http://{config.host}:{config.port}/v1", app
  finally:
    uv.should_exit = True
    thread.join(60)


def serve(config: ServeConfig) -> None:
  """Load the library's base model and serve it until interrupted."""
  import uvicorn

  models = SubModels.load(config.path, dtype=config.dtype)
  uvicorn.run(create_app(models, config), host=config.host, port=config.port, log_level="info")
