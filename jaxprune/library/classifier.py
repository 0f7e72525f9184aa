"""The cheap router's classifier: which sub-model's calibration text a prompt looks like.

Features are hashed unigrams and bigrams of the text's code tokens (words and
runs of punctuation such as ``::``, ``=>`` or ``{``), so no vocabulary is
stored; scikit-learn's `LogisticRegression` is fitted on each sub-model's
calibration text cut into prompt-sized pieces. Only the non-zero columns of
its coefficients are stored (features never seen in training keep weight 0),
and the fitted estimator is rebuilt from them for prediction.

Example:
  >>> arrays, meta = fit({"python": py_texts, "java": java_texts})
  >>> probabilities(load(arrays, meta), "public static void main(String[] args) {")
  {'java': 0.97, 'python': 0.03}
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxprune.errors import JaxpruneError

TOKEN_PATTERN = r"[A-Za-z_][A-Za-z_0-9]*|[^\sA-Za-z_0-9]{1,3}"
OTHER = "(other)"
"""The class of background text (prose): a prompt like it fits no sub-model."""


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  """How the classifier is fitted.

  Attributes:
    piece_chars: calibration text is cut into pieces of about this many characters (one training example each).
    n_features: hashed feature columns.
    c: inverse regularisation strength of the logistic regression.
  """

  piece_chars: int = 400
  n_features: int = 1 << 18
  c: float = 10.0


def _vectorizer(n_features: int):
  from sklearn.feature_extraction.text import HashingVectorizer

  return HashingVectorizer(token_pattern=TOKEN_PATTERN, ngram_range=(1, 2), n_features=n_features,
                           alternate_sign=False, binary=True, norm="l2", lowercase=False)


def pieces(text: str, size: int) -> list[str]:
  """``text`` cut at line ends into pieces of about ``size`` characters (blank ones dropped)."""
  out, current = [], ""
  for line in text.splitlines(keepends=True):
    current += line
    if len(current) >= size:
      out.append(current)
      current = ""
  out.append(current)
  return [p for p in out if p.strip()]


def fit(texts: Mapping[str, Sequence[str]], config: ClassifierConfig = ClassifierConfig(),
        background: Sequence[str] = ()) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Fit on ``{sub-model: its texts}`` (and ``background`` text as class `OTHER`); (arrays, metadata) to store."""
  from sklearn.linear_model import LogisticRegression

  texts = {**texts, OTHER: list(background)} if background else dict(texts)
  names = sorted(texts)
  if len(names) < 2:
    raise JaxpruneError(f"a classifier needs two classes or more, got {len(names)}: add another run or --background")
  docs, labels = [], []
  for name in names:
    cut = [p for t in texts[name] for p in pieces(t, config.piece_chars)]
    if not cut:
      raise JaxpruneError(f"sub-model {name} has no router text: give it some with --router-text {name}=DOMAIN_OR_PATH")
    docs += cut
    labels += [name] * len(cut)
  features = _vectorizer(config.n_features).transform(docs)
  model = LogisticRegression(C=config.c, max_iter=2000, class_weight="balanced").fit(features, labels)
  columns = np.flatnonzero(np.any(model.coef_ != 0, axis=0)).astype(np.int64)
  arrays = {"columns": columns, "coef": np.ascontiguousarray(model.coef_[:, columns], np.float32),
            "intercept": np.ascontiguousarray(model.intercept_, np.float32)}  # safetensors writes raw C-order bytes
  meta = {"classes": [str(c) for c in model.classes_], "config": dataclasses.asdict(config),
          "token_pattern": TOKEN_PATTERN, "training_pieces": {n: labels.count(n) for n in names}}
  return arrays, meta


@dataclasses.dataclass(frozen=True)
class Classifier:
  """A fitted estimator and its vectorizer."""

  model: Any
  vectorizer: Any
  classes: tuple[str, ...]


def load(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Classifier:
  """Rebuild the fitted `LogisticRegression` from what `fit` stored."""
  from sklearn.linear_model import LogisticRegression

  config = ClassifierConfig(**meta["config"])
  coef = np.zeros((arrays["coef"].shape[0], config.n_features), np.float64)
  coef[:, arrays["columns"]] = arrays["coef"]
  model = LogisticRegression()
  model.classes_ = np.asarray(meta["classes"])
  model.coef_ = coef
  model.intercept_ = np.asarray(arrays["intercept"], np.float64)
  model.n_features_in_ = config.n_features
  return Classifier(model, _vectorizer(config.n_features), tuple(meta["classes"]))


def probabilities(classifier: Classifier, text: str) -> dict[str, float]:
  """{sub-model: probability that ``text`` is like its calibration text}."""
  proba = classifier.model.predict_proba(classifier.vectorizer.transform([text]))[0]
  return {str(c): float(p) for c, p in zip(classifier.model.classes_, proba)}


def to_metadata(meta: Mapping[str, Any]) -> dict[str, str]:
  """Metadata as safetensors stores it (strings)."""
  return {"classifier": json.dumps(dict(meta))}


def from_metadata(metadata: Mapping[str, str]) -> dict[str, Any]:
  return json.loads(metadata["classifier"])
