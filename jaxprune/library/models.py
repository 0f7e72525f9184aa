"""One base model in memory; the active sub-model derived from it on demand.

Switching to another sub-model applies that sub-model's mask (and SparseGPT's
kept values) to the base: only the masked linears get new arrays, the base
itself is never copied or changed, and at most one sub-model exists at a time
besides it. ``dense`` is the base as is.

Example:
  >>> models = SubModels.load("lib/")
  >>> models.route("public class Main {", RouteConfig()).chosen
  'java'
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time

import numpy as np

from jaxprune.errors import JaxpruneError
from jaxprune.library import declared, routers, store, submodels

log = logging.getLogger(__name__)

DENSE = "dense"


class SubModels:
  """The library's base model (loaded once) and its sub-models; safe to call from several threads."""

  def __init__(self, lib: store.Library, loaded, classifier):
    """``loaded``: the base (`converters.LoadedModel`), or a function that loads it when first needed."""
    self.lib = lib
    self._loaded = loaded
    self.classifier = classifier
    self.names = lib.names
    self.languages = declared.submodel_languages(lib.manifest)
    self.switches: list[float] = []  # seconds of each switch, for benchmarks
    self._stored: dict[str, tuple] = {}
    self._active: tuple[str, object] = (DENSE, None)
    self._tokenizer = None
    self._lock = threading.RLock()

  @classmethod
  def load(cls, path: str | os.PathLike, *, dtype=None, lazy: bool = False) -> SubModels:
    """The library at ``path`` with its base loaded (``lazy``: loaded when a model is first needed, so routing
    with the classifier and reading the tokenizer never load the weights)."""
    from jaxprune import converters

    lib = store.open_library(path)
    loader = functools.partial(converters.load_model, str(lib.base), dtype=dtype)
    return cls(lib, loader if lazy else loader(), store.read_classifier(lib))

  @property
  def loaded(self):
    """The base model (loaded now if it was not)."""
    with self._lock:
      if callable(self._loaded):
        log.info("loading the base of %s", self.lib.path)
        self._loaded = self._loaded()
      return self._loaded

  @property
  def tokenizer(self):
    if not callable(self._loaded):
      return self._loaded.tokenizer
    if self._tokenizer is None:
      self._tokenizer = store.base_tokenizer(self.lib)
    return self._tokenizer

  @property
  def max_positions(self) -> int:
    return self.loaded.spec.max_positions

  def check(self, name: str) -> str:
    """``name`` if the library serves it (a sub-model or ``dense``), else one line naming the choices."""
    if name != DENSE and name not in self.names:
      raise JaxpruneError(f"unknown model {name!r}: use auto, {DENSE} or one of {', '.join(self.names)}")
    return name

  def model(self, name: str):
    """The penzai model of sub-model ``name`` (switching the active one if needed)."""
    self.check(name)
    with self._lock:
      if name == DENSE:
        return self.loaded.model
      if self._active[0] != name:
        started = time.perf_counter()
        if name not in self._stored:
          self._stored[name] = store.read_submodel(self.lib, name)
        self._active = (DENSE, None)  # the old sub-model's arrays go before the new ones are made
        model = submodels.apply(self.loaded.model, *self._stored[name])
        _block(model)
        self._active = (name, model)
        self.switches.append(time.perf_counter() - started)
        log.info("switched to %s in %.2f s", name, self.switches[-1])
      return self._active[1]

  def encode(self, text: str) -> list[int]:
    return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

  def mean_nll(self, name: str, text: str) -> float | None:
    """Mean next-token loss (nats) of ``text``'s last ``max_positions`` tokens under ``name``; None under 2 tokens."""
    from jaxprune.evals import scoring

    ids = self.encode(text)[-self.max_positions:]
    if len(ids) < 2:
      return None
    width = min(self.max_positions, max(64, 1 << (len(ids) - 1).bit_length()))  # few compiled widths
    row = np.zeros((1, width), np.int32)
    row[0, :len(ids)] = ids
    with self._lock:
      tree_def, params = scoring.split(self.model(name))
      logprobs, _ = scoring.next_token_logprobs(tree_def, params, row)
    return float(-np.asarray(logprobs, np.float64)[0, :len(ids) - 1].mean())

  def route(self, text: str, config: routers.RouteConfig) -> routers.Route:
    self.check(config.default)
    return routers.route(self, text, config)

  def route_many(self, texts: list[str], config: routers.RouteConfig) -> list[routers.Route]:
    """`route` for each text; the perplexity router scores sub-model by sub-model (one switch each, not one per
    text), and each route's ``seconds`` is its own prefills' time plus the decision (switches not included)."""
    self.check(config.default)
    if config.router != "perplexity" or len(texts) < 2:
      return [routers.route(self, t, config) for t in texts]
    out = [routers.by_declaration(self, t, config) for t in texts]  # declared prompts need no prefill
    scored = [i for i, r in enumerate(out) if r is None]
    losses: dict[str, list] = {}
    seconds = dict.fromkeys(scored, 0.0)
    for name in self.names if scored else ():
      self.model(name)
      losses[name] = []
      for i in scored:
        started = time.perf_counter()
        losses[name].append(self.mean_nll(name, texts[i]))
        seconds[i] += time.perf_counter() - started
    for k, i in enumerate(scored):
      table = _Losses(self.names, self.languages, {name: losses[name][k] for name in self.names})
      route = routers.route(table, texts[i], config)
      out[i] = dataclasses.replace(route, seconds=route.seconds + seconds[i])
    return out


def _block(model) -> None:
  """Wait until the model's arrays are computed (so a switch's time is measured, not deferred)."""
  import jax
  from penzai import pz

  for param in pz.unbind_params(model)[1]:
    jax.block_until_ready(param.value.data_array)


def route_config(lib: store.Library, **overrides) -> routers.RouteConfig:
  """The library's stored router settings with ``overrides`` (None values ignored)."""
  stored = dict(lib.manifest.get("route") or {})
  stored.update({k: v for k, v in overrides.items() if v is not None})
  return routers.RouteConfig(**stored)


def describe_route(route: routers.Route) -> str:
  """One line per sub-model score, then the choice."""
  lines = [f"{name:<16} {score:.4f}" for name, score in sorted(route.scores.items(), key=lambda kv: kv[0])]
  lines.append(f"chosen: {route.chosen} ({route.router}: {route.reason}; {route.seconds * 1000:.1f} ms)")
  return "\n".join(lines)



class _Losses:
  """A routing context of losses already computed (`SubModels.route_many`)."""

  classifier = None

  def __init__(self, names: tuple[str, ...], languages: dict[str, str], losses: dict[str, float | None]):
    self.names, self.languages, self._losses = names, languages, losses

  def mean_nll(self, name: str, text: str) -> float | None:
    return self._losses[name]


def route_text(path: str | os.PathLike, text: str, **overrides) -> routers.Route:
  """Route ``text`` with the library's router settings and ``overrides``; loads the model only if the router needs it."""
  lib = store.open_library(path)
  config = route_config(lib, **overrides)
  if config.default != DENSE and config.default not in lib.names:
    raise JaxpruneError(f"--default {config.default!r} is not a sub-model: use {DENSE} or one of {', '.join(lib.names)}")
  return routers.route(SubModels.load(path, lazy=True), text, config)  # the classifier needs no weights
