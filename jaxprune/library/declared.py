"""A prompt's declared language: the info string of its Markdown code fences.

Code assistants and chat clients usually say which language a request is in:
the user's message holds a fenced block opened with ```` ```java ````. When
every fence of a prompt that names a known language names the same one, the
prompt has declared it, and routing needs no guess (`routers.route`). A
sub-model's language is that of its router text or calibration source (a
domain name such as ``javascript``), else of its own name (``--run java=…``).

Example:
  >>> language("Complete this:\\n```js\\nfunction f(x){\\n```")
  'javascript'
  >>> submodel_languages({"submodels": {"py": {"calibration": {"source": "python"}}}})
  {'py': 'python'}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

ALIASES: dict[str, tuple[str, ...]] = {
    "python": ("python", "py", "python3", "py3", "pycon"),
    "java": ("java",),
    "cpp": ("cpp", "c++", "cc", "cxx", "hpp", "hxx", "h++"),
    "c": ("c", "h"),
    "javascript": ("javascript", "js", "node", "nodejs", "mjs", "cjs", "jsx", "ecmascript"),
    "typescript": ("typescript", "ts", "tsx"),
    "csharp": ("csharp", "c#", "cs"),
    "go": ("go", "golang"),
    "rust": ("rust", "rs"),
    "ruby": ("ruby", "rb"),
    "php": ("php",),
    "kotlin": ("kotlin", "kt"),
    "swift": ("swift",),
    "scala": ("scala",),
    "shell": ("shell", "bash", "sh", "zsh"),
    "sql": ("sql",),
}
"""Each known language and the fence info strings (lower case) that name it."""

_CANONICAL = {alias: lang for lang, aliases in ALIASES.items() for alias in aliases}
_FENCE = re.compile(r"^[ \t]{0,3}(?:```+|~~~+)[ \t]*\{?\.?([A-Za-z0-9_+#.-]+)", re.MULTILINE)


def canonical(name: str | None) -> str | None:
  """The known language ``name`` names (``js`` → ``javascript``), or None."""
  return _CANONICAL.get(name.strip().lower()) if name else None


def language(text: str) -> str | None:
  """The one known language that the code fences of ``text`` declare; None when they declare none or several."""
  found = {lang for info in _FENCE.findall(text) if (lang := canonical(info)) is not None}
  return found.pop() if len(found) == 1 else None


def submodel_languages(manifest: Mapping[str, Any]) -> dict[str, str]:
  """{sub-model: its language}, for the sub-models of a library manifest whose language is known."""
  out = {}
  for name, entry in (manifest.get("submodels") or {}).items():
    candidates = (entry.get("router_text"), (entry.get("calibration") or {}).get("source"), name,
                  re.split(r"[-_.]", name)[0])
    lang = next((c for c in map(canonical, candidates) if c is not None), None)
    if lang is not None:
      out[name] = lang
  return out
