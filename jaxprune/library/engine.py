"""The serving engine: a queue of generation requests, batched by sub-model, run off the event loop.

One worker task drains the queue: every request waiting when it wakes is
routed (``auto``), grouped by sub-model and sampling settings, and each group
is generated as one batch (`evals.generate.generate_ids`) in a single
generation thread, so the event loop keeps accepting requests meanwhile.
Requests that arrive during a batch form the next one. Switching sub-model
re-applies a mask to the one base model (`jaxprune.library.models`).

Streaming: after every decode chunk the generation thread hands each row's
new text to its request's event queue. Cancelling (a timeout, a client gone)
marks the request: a queued request is dropped, a running row stops at the
next chunk, and a batch whose rows are all cancelled ends there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from jaxprune.errors import JaxpruneError
from jaxprune.library import models as models_lib
from jaxprune.library import routers

log = logging.getLogger(__name__)

AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class ServeConfig:
  """How `jaxprune serve` runs.

  Attributes:
    path: the library folder.
    host, port: where to listen (localhost only by default).
    api_key: if set, requests need ``Authorization: Bearer <api_key>``.
    batch_size: rows per compiled generation call.
    chunk: decode steps between stop checks and stream updates.
    timeout_s: a request still unanswered after this long is cancelled.
    max_tokens: the largest ``max_tokens`` a request may ask for.
    default_max_tokens: ``max_tokens`` when a request gives none (cut to the context left).
    max_body_bytes: larger request bodies are refused (413).
    dtype: parameter dtype of the base (None: the stored one).
    route: router settings overriding the library's stored ones, as (field, value) pairs.
  """

  path: str = ""
  host: str = "127.0.0.1"
  port: int = 8000
  api_key: str | None = None
  batch_size: int = 8
  chunk: int = 16
  timeout_s: float = 600.0
  max_tokens: int = 4096
  default_max_tokens: int = 256
  max_body_bytes: int = 1 << 20
  dtype: str | None = None
  route: tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    if min(self.batch_size, self.chunk, self.max_tokens, self.default_max_tokens, self.max_body_bytes) < 1:
      raise JaxpruneError("batch_size, chunk, max_tokens, default_max_tokens and max_body_bytes must be at least 1")
    if self.timeout_s <= 0:
      raise JaxpruneError(f"--timeout {self.timeout_s} must be above 0 seconds")


@dataclasses.dataclass(eq=False)
class Request:
  """One completion to generate, and how its answer travels back to the event loop."""

  model: str
  prompt_ids: list[int]
  route_text: str
  max_tokens: int
  temperature: float = 1.0
  top_p: float = 1.0
  stop: tuple[str, ...] = ()
  seed: int = 0
  events: asyncio.Queue | None = None
  loop: asyncio.AbstractEventLoop | None = None
  cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
  route: routers.Route | None = None
  sent: int = 0  # characters of text already streamed

  def emit(self, kind: str, value: Any) -> None:
    self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


@dataclasses.dataclass(frozen=True)
class Result:
  text: str
  finish_reason: str
  completion_tokens: int
  model: str
  route: routers.Route | None


class Timeout(Exception):
  """The request took longer than `ServeConfig.timeout_s` and was cancelled."""


class Engine:
  """The queue, the worker task and the generation thread over one `SubModels`."""

  def __init__(self, models: models_lib.SubModels, config: ServeConfig):
    self.models = models
    self.config = config
    self.route_config = models_lib.route_config(models.lib, **dict(config.route))
    models.check(self.route_config.default)
    # rows_padded: compiled rows x decode steps paid for; compile_s: seconds compiling new batch shapes
    self.stats = {"batches": 0, "requests": 0, "cancelled": 0, "rows_generated": 0, "rows_padded": 0,
                  "compile_s": 0.0}
    self._queue: asyncio.Queue | None = None
    self._task: asyncio.Task | None = None
    self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxprune-generate")

  async def start(self) -> None:
    self._queue = asyncio.Queue()
    self._task = asyncio.create_task(self._worker())

  async def stop(self) -> None:
    if self._task is not None:
      self._task.cancel()
    self._thread.shutdown(wait=False, cancel_futures=True)

  async def submit(self, request: Request) -> AsyncIterator[tuple[str, Any]]:
    """Events of ``request``: ("delta", text) while streaming, then ("done", Result) or ("error", exception).

    Raises `Timeout` (and cancels the request) when it runs past ``timeout_s``;
    closing the iterator early (a client gone) cancels it too.
    """
    request.loop, request.events = asyncio.get_running_loop(), asyncio.Queue()
    deadline = time.monotonic() + self.config.timeout_s
    self._queue.put_nowait(request)
    try:
      while True:
        try:
          kind, value = await asyncio.wait_for(request.events.get(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
          raise Timeout(f"the request took longer than {self.config.timeout_s:g} s and was cancelled") from None
        yield kind, value
        if kind != "delta":
          return
    finally:
      request.cancelled.set()  # a no-op for a finished request

  async def _worker(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      batch = [await self._queue.get()]
      while not self._queue.empty():
        batch.append(self._queue.get_nowait())
      try:
        await loop.run_in_executor(self._thread, self._run, batch)
      except Exception as err:  # a failure answers the batch's requests, never stops the worker
        log.exception("generation failed")
        for request in batch:
          request.emit("error", err)

  # ------------------------------------------------------------------------- #
  # In the generation thread
  # ------------------------------------------------------------------------- #

  def _run(self, batch: list[Request]) -> None:
    live = self._drop_cancelled(batch)
    auto = [r for r in live if r.model == AUTO]
    for request, route in zip(auto, self.models.route_many([r.route_text for r in auto], self.route_config)):
      request.route = route
    groups: dict[tuple, list[Request]] = {}
    for request in live:
      name = request.route.chosen if request.route else request.model
      groups.setdefault((name, request.temperature, request.top_p, request.seed), []).append(request)
    for (name, *_), group in groups.items():
      for part in self._fitting(group):
        part = self._drop_cancelled(part)
        if part:
          self._generate(name, part)

  def _drop_cancelled(self, requests: list[Request]) -> list[Request]:
    live = [r for r in requests if not r.cancelled.is_set()]
    self.stats["cancelled"] += len(requests) - len(live)
    return live

  def _fitting(self, group: list[Request]) -> list[list[Request]]:
    """The group cut so that each part's longest prompt plus its largest max_tokens fits the context."""
    parts: list[list[Request]] = []
    for request in sorted(group, key=lambda r: len(r.prompt_ids)):
      part = parts[-1] if parts else None
      if part is not None and len(request.prompt_ids) + max(r.max_tokens for r in (*part, request)) \
          <= self.models.max_positions:
        part.append(request)
      else:
        parts.append([request])
    return parts

  def _generate(self, name: str, group: list[Request]) -> None:
    from jaxprune.evals import generate as gen

    tokenizer = self.models.tokenizer
    first = group[0]
    config = gen.GenerateConfig(max_new_tokens=max(r.max_tokens for r in group), temperature=first.temperature,
                                top_p=first.top_p, batch_size=self.config.batch_size, chunk=self.config.chunk,
                                seed=first.seed)
    hold = max((len(s) for r in group for s in r.stop), default=1) - 1

    def stopped(i: int, ids: list[int]) -> bool:
      request = group[i]
      if request.cancelled.is_set():
        return True
      ids = ids[:request.max_tokens]  # a row runs in whole chunks: past its own max_tokens is not its text
      text = gen.completion_text(tokenizer, request.prompt_ids, ids)
      hit = any(s in text for s in request.stop)
      safe = gen.truncate(text, request.stop)
      safe = safe[:max(request.sent, len(safe) - hold)].rstrip("\ufffd")
      if len(safe) > request.sent:
        request.emit("delta", safe[request.sent:])
        request.sent = len(safe)
      return hit or len(ids) >= request.max_tokens

    model = self.models.model(name)
    self.stats["batches"] += 1
    spent: dict[str, float] = {}
    out = gen.generate_ids(model, [r.prompt_ids for r in group], config, eos_ids=gen.eos_ids_of(self.models.loaded),
                           stopped=stopped, max_positions=self.models.max_positions, stats=spent)
    self.stats["compile_s"] += spent.get("compile_s", 0.0)
    self.stats["rows_padded"] += int(spent.get("decode_row_steps", 0))
    for request, (ids,) in zip(group, out):
      if request.cancelled.is_set():
        self.stats["cancelled"] += 1
        continue
      ids = ids[:request.max_tokens]
      full = gen.completion_text(tokenizer, request.prompt_ids, ids)
      text = gen.truncate(full, request.stop)
      finish = "length" if len(ids) >= request.max_tokens and text == full else "stop"
      if len(text) > request.sent:
        request.emit("delta", text[request.sent:])
      self.stats["requests"] += 1
      self.stats["rows_generated"] += len(ids)
      request.emit("done", Result(text, finish, len(ids), name, request.route))
