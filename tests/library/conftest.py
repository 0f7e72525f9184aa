"""A tiny model with a character tokenizer, Python and Java text, and Wanda/SparseGPT runs of it."""

from __future__ import annotations

import pytest

from jaxprune import cli
from tests.evals.conftest import make_tiny_with_tokenizer

PYTHON = '''def {f}(items, limit={n}):
    """Return the {w} items below limit."""
    result = []
    for item in items:
        if item < limit and not isinstance(item, str):
            result.append(item * {n})
    return result


class {C}(object):
    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return f"{C}({{self.value!r}})"
'''

JAVA = '''public class {C} {{
    private final int value;

    public {C}(int value) {{
        this.value = value;
    }}

    public static int {f}(int[] items, int limit) {{
        int total = 0;
        for (int i = 0; i < items.length; i++) {{
            if (items[i] < limit) {{ total += items[i] * {n}; }}
        }}
        return total;
    }}

    @Override
    public String toString() {{ return "{C}(" + value + ")"; }}
}}
'''

PROSE = """The {w} committee met on a quiet morning to discuss the harvest, the weather and the old
bridge over the river. Everyone agreed that the spring had been long and that the
children should go back to school before the festival. Someone told a story about
a travelling musician who once played in the square until the sun went down.
"""

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "lambda", "zeta", "iota", "rho"]


def source(template: str, i: int) -> str:
  w = WORDS[i % len(WORDS)]
  return template.format(f=f"select_{w}_{i}", C=f"{w.title()}Box{i}", n=i + 2, w=w)


def write_corpus(folder, template: str, suffix: str, files: int = 12):
  folder.mkdir(parents=True)
  for i in range(files):
    (folder / f"f{i}{suffix}").write_text(source(template, i) + "\n" + source(template, i + 100))
  return folder


def prune(model_dir, calib, out, *extra) -> str:
  assert cli.main(["prune", "--model", str(model_dir), "--calib", str(calib), "--nsamples", "8", "--seqlen", "48",
                   "--out", str(out), *extra]) == 0
  return str(out)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
  """(model folder, loaded, {name: run dir}, {language: corpus folder}) with python, java and java-sparsegpt runs."""
  root = tmp_path_factory.mktemp("library")
  folder, loaded = make_tiny_with_tokenizer(root / "model", "llama", max_position_embeddings=1024)
  corpora = {"python": write_corpus(root / "py", PYTHON, ".py"), "java": write_corpus(root / "java", JAVA, ".java"),
             "prose": write_corpus(root / "prose", PROSE, ".txt")}
  runs = {"python": prune(folder, corpora["python"], root / "run-python"),
          "java": prune(folder, corpora["java"], root / "run-java"),
          "java-sgpt": prune(folder, corpora["java"], root / "run-java-sgpt", "--method", "sparsegpt")}
  return folder, loaded, runs, corpora


@pytest.fixture(scope="session")
def tiny_library(tiny_runs, tmp_path_factory):
  """A library of the python and java runs (path)."""
  from jaxprune.library import store

  path = tmp_path_factory.mktemp("lib") / "lib"
  folder, _, runs, corpora = tiny_runs
  store.build(store.LibraryConfig(path=path, model=str(folder), background=str(corpora["prose"]),
                                  runs=(("python", runs["python"]), ("java", runs["java"]))))
  return path
