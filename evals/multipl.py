"""HumanEval in Java, C++ and JavaScript by MultiPL-E's method (Cassano et al., 2023).

Each HumanEval problem's signature, docstring and literal test assertions
are translated (`evals.translate` reads the Python; the classes here write the
target language) into a prompt in MultiPL-E's layout and a test harness; the
program is compiled and run in `evals.sandbox`, where compile errors and
timeouts count as failures (their statuses are ``compile_error`` and
``timeout``). Problems without a faithful translation are
listed with the reason. MultiPL-E's own JSONL files load with
``problems(path)`` when a user has them. Loading and translating live in
`evals.problems`; this module names the targets.

Choices that differ from MultiPL-E: Python floats become ``double`` (MultiPL-E
used ``float``, which fails exact comparisons of values such as 2.2); types are
inferred from the test values where HumanEval has no annotations (MultiPL-E
annotated them by hand); docstrings are kept verbatim, with their doctests
translated. Java gets a small ``org.javatuples.Pair`` of our own in place of
the javatuples jar, so MultiPL-E's Java prompts compile too.
"""

from __future__ import annotations

from jaxprune.evals.multipl_targets import Cpp, Java, JavaScript, Target
from jaxprune.evals.problems import load_multipl_e, translate, translate_all
from jaxprune.errors import JaxpruneError

LANGUAGES = ("java", "cpp", "js")
__all__ = ["Cpp", "Java", "JavaScript", "LANGUAGES", "Target", "language", "load_multipl_e", "translate", "translate_all"]


_TARGETS = {"java": Java, "cpp": Cpp, "js": JavaScript}


def language(name: str) -> Target:
  """The target for ``java``, ``cpp`` or ``js``."""
  if name not in _TARGETS:
    raise JaxpruneError(f"unknown HumanEval language {name!r}: use one of {', '.join(LANGUAGES)}")
  return _TARGETS[name]()
