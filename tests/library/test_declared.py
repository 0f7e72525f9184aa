"""A prompt's declared language: code fences name it, aliases map to one name, sub-models get theirs."""

from __future__ import annotations

import pytest

from jaxprune.library import declared


@pytest.mark.parametrize("text, want", [
    ("Complete this:\n```javascript\nfunction f(x){\n```", "javascript"),
    ("```js\nlet x = 1;\n```", "javascript"),
    ("```C++\nint main() {}\n```", "cpp"),
    ("  ~~~ python3\nprint(1)\n~~~", "python"),
    ("```{.java}\nclass A {}\n```", "java"),
    ("```java\nclass A {}\n```\nand the output:\n```text\n42\n```", "java"),  # unknown info strings don't count
    ("```python\nx = 1\n```\n```java\nint x = 1;\n```", None),  # two languages: nothing declared
    ("```\nplain fence\n```", None),
    ("def f(x):\n    return x  # see ```js``` inline", None),  # an inline mention is no fence
    ("no code at all", None),
])
def test_language_of_a_prompt(text, want):
  assert declared.language(text) == want


def test_canonical_names_and_aliases():
  assert [declared.canonical(n) for n in ("PY", "cxx", "node", "ts", "cobol", None, "")] == \
      ["python", "cpp", "javascript", "typescript", None, None, None]
  aliases = [a for names in declared.ALIASES.values() for a in names]
  assert len(aliases) == len(set(aliases)) and all(a == a.lower() for a in aliases)


def test_submodel_languages_from_router_text_source_or_name():
  manifest = {"submodels": {
      "a": {"router_text": "javascript", "calibration": {"source": "python"}},  # router text first
      "b": {"calibration": {"source": "cpp"}},
      "java": {"calibration": {"source": "/data/my-corpus"}},  # a path: the name says it
      "py-sparsegpt": {"calibration": {"source": "tokens-file"}},  # the name's first word
      "english": {"calibration": {"source": "english"}},  # prose: no language
  }}
  assert declared.submodel_languages(manifest) == {"a": "javascript", "b": "cpp", "java": "java",
                                                   "py-sparsegpt": "python"}
