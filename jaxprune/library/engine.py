"""The serving engine: generation requests batched by sub-model, continuously, off the event loop.

Requests go into an inbox; one generation thread takes them, routes the
``auto`` ones, and runs the oldest request's group (sub-model and sampling
settings) as one decode batch (`jaxprune.library.batching.Running`), so the
event loop keeps accepting requests meanwhile. Between decode chunks the
batch's finished rows are answered and freed, and requests of the same group
that arrived since join the free rows (continuous batching). Once a request
of another group waits, nothing more joins: the batch drains, then the oldest
waiting request picks the next group, so no sub-model waits forever. Switching sub-model re-applies a mask to the one base model
(`jaxprune.library.models`).

Streaming: after every decode chunk each row's new text goes to its
request's event queue. Cancelling (a timeout, a client gone) marks the
request: a waiting request is dropped, a running row is freed at the next
chunk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from jaxprune.errors import JaxpruneError
from jaxprune.evals import generate as gen
from jaxprune.library import batching
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
    batch_size: rows per compiled generation call at most.
    min_rows: rows a batch is compiled with at least (a power of two up to ``batch_size``), room for requests
      that arrive while it runs to join it. 1: a batch has the rows its first requests need, the fastest
      for one request at a time (on 2 CPU cores a 4-row batch decodes one request at half the speed).
    chunk: decode steps between stop checks, stream updates and joins.
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
  min_rows: int = 1
  chunk: int = 16
  timeout_s: float = 600.0
  max_tokens: int = 4096
  default_max_tokens: int = 256
  max_body_bytes: int = 1 << 20
  dtype: str | None = None
  route: tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    if min(self.batch_size, self.min_rows, self.chunk, self.max_tokens, self.default_max_tokens, self.max_body_bytes) < 1:
      raise JaxpruneError("batch_size, min_rows, chunk, max_tokens, default_max_tokens and max_body_bytes must be"
                          " at least 1")
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
  """The inbox, the worker task and the generation thread over one `SubModels`."""

  def __init__(self, models: models_lib.SubModels, config: ServeConfig):
    self.models = models
    self.config = config
    self.route_config = models_lib.route_config(models.lib, **dict(config.route))
    models.check(self.route_config.default)
    # joined: requests that joined a running batch; rows_padded: compiled rows x decode steps paid for;
    # compile_s: seconds compiling new shapes
    self.stats = {"batches": 0, "requests": 0, "joined": 0, "cancelled": 0, "rows_generated": 0, "rows_padded": 0,
                  "compile_s": 0.0}
    self._inbox: deque[Request] = deque()  # appended by the event loop, taken by the generation thread
    self._ready: list[Request] = []  # generation thread only: taken, routed, waiting for a batch
    self._wake: asyncio.Event | None = None
    self._task: asyncio.Task | None = None
    self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxprune-generate")

  async def start(self) -> None:
    self._wake = asyncio.Event()
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
    self._inbox.append(request)
    self._wake.set()
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
      await self._wake.wait()
      self._wake.clear()  # requests arriving from now on wake the next round, if this one misses them
      await loop.run_in_executor(self._thread, self._drain)

  # ------------------------------------------------------------------------- #
  # In the generation thread
  # ------------------------------------------------------------------------- #

  def _drain(self) -> None:
    """Batches until no request waits."""
    while True:
      taken: list[Request] = []
      try:
        self._collect()
        if not self._ready:
          return
        self._run_batch(taken)
      except Exception as err:  # a failure answers the requests it touched, never stops the worker
        log.exception("generation failed")
        for request in taken or self._ready:
          if not request.cancelled.is_set():
            request.emit("error", err)
        if not taken:
          self._ready.clear()

  def _collect(self) -> None:
    """Move the inbox's requests to the ready list (cancelled ones dropped), routing the ``auto`` ones."""
    new = []
    while self._inbox:
      new.append(self._inbox.popleft())
    self._ready = self._drop_cancelled(self._ready + new)
    auto = [r for r in self._ready if r.model == AUTO and r.route is None]
    for request, route in zip(auto, self.models.route_many([r.route_text for r in auto], self.route_config)):
      request.route = route

  def _drop_cancelled(self, requests: list[Request]) -> list[Request]:
    live = [r for r in requests if not r.cancelled.is_set()]
    self.stats["cancelled"] += len(requests) - len(live)
    return live

  @staticmethod
  def _group(request: Request) -> tuple[str, float, float]:
    return (request.route.chosen if request.route else request.model, request.temperature, request.top_p)

  def _rows(self, waiting: int) -> int:
    rows = max(self.config.min_rows, 1 << max(0, waiting - 1).bit_length())
    return min(self.config.batch_size, rows)

  def _run_batch(self, taken: list[Request]) -> None:
    """The oldest ready request's group as one batch; same-group requests join its free rows as they come."""
    key = self._group(self._ready[0])
    rows = self._rows(sum(self._group(r) == key for r in self._ready))
    first = [r for r in self._ready if self._group(r) == key][:rows]
    self._ready = [r for r in self._ready if r not in first]
    taken += first
    name, temperature, top_p = key
    model = self.models.model(name)
    config = batching.BatchConfig(rows=rows, chunk=self.config.chunk, temperature=temperature, top_p=top_p)
    clock = gen.compile_seconds()
    running = batching.Running(model, [r.prompt_ids for r in first], first, [r.max_tokens for r in first],
                               [r.seed for r in first], self._eos, config, self.models.max_positions)
    self.stats["batches"] += 1
    generated = {k: [] for k in running.busy}
    while True:
      for k in running.busy:
        if running.tags[k].cancelled.is_set():
          running.release(k)
          self.stats["cancelled"] += 1
      self._collect()
      others_wait = any(self._group(r) != key for r in self._ready)  # then none joins: the batch drains
      for request in [] if others_wait else [r for r in self._ready if self._group(r) == key]:
        if running.free_row() is None:
          break
        if running.fits(len(request.prompt_ids), request.max_tokens):
          self._ready.remove(request)
          taken.append(request)
          generated[running.join(request.prompt_ids, request, request.seed)] = []
          self.stats["joined"] += 1
      if not running.can_step():
        break
      new = running.step()
      self.stats["rows_padded"] += rows * config.chunk
      for k, tokens in new.items():
        request = running.tags[k]
        generated[k].extend(tokens)
        if self._advance(name, request, generated[k], ended=bool(running.done[k])):
          running.release(k)
    for k in running.busy:  # the cache is full (not expected: rows join only while their budget fits)
      self._advance(name, running.tags[k], generated[k], ended=True)
    self.stats["compile_s"] += gen.compile_seconds() - clock

  @property
  def _eos(self) -> list[int]:
    return gen.eos_ids_of(self.models.loaded)

  def _advance(self, name: str, request: Request, ids: list[int], ended: bool) -> bool:
    """Stream ``request``'s new text; answer it if it is finished (end of sequence, stop string, max_tokens)."""
    tokenizer = self.models.tokenizer
    ids = _strip(ids, self._eos)[:request.max_tokens]
    full = gen.completion_text(tokenizer, request.prompt_ids, ids)
    text = gen.truncate(full, request.stop)
    if not (ended or text != full or len(ids) >= request.max_tokens):
      hold = max((len(s) for s in request.stop), default=1) - 1  # a stop string may be starting
      safe = text[:max(request.sent, len(text) - hold)].rstrip("\ufffd")
      if len(safe) > request.sent:
        request.emit("delta", safe[request.sent:])
        request.sent = len(safe)
      return False
    finish = "length" if len(ids) >= request.max_tokens and text == full else "stop"
    if len(text) > request.sent:
      request.emit("delta", text[request.sent:])
    self.stats["requests"] += 1
    self.stats["rows_generated"] += len(ids)
    request.emit("done", Result(text, finish, len(ids), name, request.route))
    return True


def _strip(ids: list[int], eos_ids: list[int]) -> list[int]:
  """Ids up to the first end-of-sequence id (exclusive)."""
  ends = set(eos_ids)
  return next((ids[:k] for k, t in enumerate(ids) if t in ends), ids)
