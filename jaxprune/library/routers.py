"""Routers: which sub-model of a library should answer a prompt.

A router is a function ``(context, text, config) -> Route`` in `ROUTERS`:

* ``classifier`` (cheap): a logistic regression over the prompt's code tokens,
  fitted when the library is built on each sub-model's calibration text and,
  if given, background text such as prose (`jaxprune.library.classifier`);
  the sub-model of highest probability.
* ``perplexity`` (exact): the prompt's mean next-token loss under every
  sub-model (one prefill each, no generation); the sub-model of lowest loss.

A prompt that declares its language in a Markdown code fence (```java) goes
to the sub-model of that language without asking the router
(`jaxprune.library.declared`; ``RouteConfig.declared``), and to the default
when no sub-model has it.

An ambiguous prompt (prose, or several languages at once) goes to the
default sub-model (``dense``: the base, unpruned) and the route says so:
for the classifier, when the background class wins, the top probability is
below ``min_confidence``, or the prompt's pieces are won by different
sub-models (``mixed_share``); for
perplexity, when the best loss beats the runner-up by less than ``min_margin``
nats per token.

Example:
  >>> route(context, "public class Main {", RouteConfig(router="classifier"))
  Route(chosen='java', router='classifier', scores={'java': 0.93, 'python': 0.07}, fallback=False, ...)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Protocol

from jaxprune.errors import JaxpruneError
from jaxprune.library import classifier as classifier_lib
from jaxprune.library import declared


@dataclasses.dataclass(frozen=True)
class RouteConfig:
  """How prompts are routed.

  Attributes:
    router: a name in `ROUTERS`.
    default: the sub-model (or ``dense``) that answers ambiguous prompts.
    min_confidence: classifier: a top probability below this is ambiguous.
    min_margin: perplexity: a best loss less than this (nats per token) under the runner-up's is ambiguous.
    mixed_share: classifier: a prompt whose pieces (`PIECE_CHARS` each) are confidently won by two sub-models,
      the runner-up with at least this share of them, is mixed, so ambiguous (above 0.5: never).
    declared: a prompt whose code fences declare one language goes to the sub-model of that language (the
      default when none has it) before the router is asked; False: the router decides every prompt.
  """

  router: str = "classifier"
  default: str = "dense"
  min_confidence: float = 0.6
  min_margin: float = 0.02
  mixed_share: float = 0.25
  declared: bool = True

  def __post_init__(self):
    if self.router not in ROUTERS:
      raise JaxpruneError(f"unknown router {self.router!r}: use one of {', '.join(ROUTERS)}")
    if not 0 <= self.min_confidence <= 1 or self.min_margin < 0 or self.mixed_share <= 0:
      raise JaxpruneError(f"min_confidence {self.min_confidence} must be in [0, 1], min_margin {self.min_margin}"
                          f" at least 0 and mixed_share {self.mixed_share} above 0")


@dataclasses.dataclass(frozen=True)
class Route:
  """A routing decision: the sub-model chosen, every sub-model's score, and whether it fell back."""

  chosen: str
  router: str
  scores: dict[str, float]
  fallback: bool
  reason: str
  seconds: float

  def as_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


class Context(Protocol):
  """What routers may use: the sub-models' names and languages, the fitted classifier, and the losses of a text."""

  names: tuple[str, ...]
  languages: dict[str, str]  # sub-model -> its language (`declared.submodel_languages`), where known
  classifier: classifier_lib.Classifier | None

  def mean_nll(self, name: str, text: str) -> float | None: ...


PIECE_CHARS = 160
"""The classifier also judges a prompt piece by piece (cut at line ends), to tell mixed languages."""

RouterFn = Callable[[Context, str, RouteConfig], tuple[str | None, dict[str, float], str]]
ROUTERS: dict[str, RouterFn] = {}


def register(name: str) -> Callable[[RouterFn], RouterFn]:
  def add(fn: RouterFn) -> RouterFn:
    ROUTERS[name] = fn
    return fn

  return add


@register("classifier")
def by_classifier(context: Context, text: str, config: RouteConfig) -> tuple[str | None, dict[str, float], str]:
  """(chosen or None when ambiguous, probabilities, why)."""
  if context.classifier is None:  # one sub-model: nothing to choose between
    return context.names[0], {context.names[0]: 1.0}, "the library's only sub-model"
  scores = classifier_lib.probabilities(context.classifier, text)
  best = max(scores, key=scores.get)
  if best == classifier_lib.OTHER:
    return None, scores, f"ambiguous: most like the background text (probability {scores[best]:.2f})"
  votes = _piece_votes(context.classifier, text, config.min_confidence)
  if len(votes) > 1:
    ranked = sorted(votes, key=votes.get, reverse=True)
    if votes[ranked[1]] >= config.mixed_share * sum(votes.values()):
      return None, scores, (f"ambiguous: mixed languages ({', '.join(f'{votes[n]} pieces like {n}' for n in ranked)})")
  if scores[best] < config.min_confidence:
    return None, scores, (f"ambiguous: top probability {scores[best]:.2f} ({best}) is below"
                          f" min_confidence {config.min_confidence}")
  return best, scores, f"probability {scores[best]:.2f}"


@register("perplexity")
def by_perplexity(context: Context, text: str, config: RouteConfig) -> tuple[str | None, dict[str, float], str]:
  """(chosen or None when ambiguous, mean next-token loss per sub-model, why)."""
  losses = {}
  for name in context.names:
    loss = context.mean_nll(name, text)
    if loss is None:
      return None, {}, "ambiguous: the prompt has fewer than two tokens"
    losses[name] = loss
  ranked = sorted(losses, key=losses.get)
  if len(ranked) > 1 and losses[ranked[1]] - losses[ranked[0]] < config.min_margin:
    return None, losses, (f"ambiguous: {ranked[0]}'s loss is {losses[ranked[1]] - losses[ranked[0]]:.3f} nats/token"
                          f" under {ranked[1]}'s, less than min_margin {config.min_margin}")
  return ranked[0], losses, f"lowest loss {losses[ranked[0]]:.3f} nats/token"


def _piece_votes(classifier: classifier_lib.Classifier, text: str, min_confidence: float) -> dict[str, int]:
  """How many pieces of about `PIECE_CHARS` characters of ``text`` each sub-model wins confidently."""
  votes: dict[str, int] = {}
  for piece in classifier_lib.pieces(text, PIECE_CHARS):
    probs = classifier_lib.probabilities(classifier, piece)
    winner = max(probs, key=probs.get)
    if winner != classifier_lib.OTHER and probs[winner] >= min_confidence:
      votes[winner] = votes.get(winner, 0) + 1
  return votes


DECLARED = "declared"
"""`Route.router` of a prompt routed by the language its code fences declare."""


def by_declaration(context: Context, text: str, config: RouteConfig) -> Route | None:
  """The route of a prompt whose code fences declare one language (None: it declares none, or two sub-models
  share that language, or ``config.declared`` is off): that language's sub-model, else the default."""
  lang = declared.language(text) if config.declared else None
  if lang is None:
    return None
  started = time.perf_counter()
  names = [n for n in context.names if context.languages.get(n) == lang]
  if len(names) > 1:
    return None
  reason = f"the prompt's code fences declare {lang}"
  if not names:
    reason += f", which no sub-model is calibrated on; default {config.default}"
  return Route(chosen=names[0] if names else config.default, router=DECLARED, scores={}, fallback=not names,
               reason=reason, seconds=time.perf_counter() - started)


def route(context: Context, text: str, config: RouteConfig) -> Route:
  """The sub-model for ``text``: the one its declared language names, else the router's choice, or
  ``config.default`` when it is ambiguous."""
  decided = by_declaration(context, text, config)
  if decided is not None:
    return decided
  started = time.perf_counter()
  chosen, scores, reason = ROUTERS[config.router](context, text, config)
  fallback = chosen is None
  return Route(chosen=config.default if fallback else chosen, router=config.router,
               scores={k: round(v, 6) for k, v in scores.items()}, fallback=fallback,
               reason=f"{reason}; default {config.default}" if fallback else reason,
               seconds=time.perf_counter() - started)
