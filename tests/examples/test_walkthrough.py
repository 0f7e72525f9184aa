"""examples/walkthrough.ipynb runs top to bottom and makes the outputs its committed copy shows."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from jaxprune.converters import builtin
from jaxprune import calibration

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "walkthrough.ipynb"
MODEL = "smollm2-135m"
LANGUAGES = ("python", "java")
TIMEOUT_S = 900  # per cell


def kinds(cell) -> list[tuple[str, tuple[str, ...]]]:
  """What a code cell shows: (output type, MIME types or stream name), stderr left out (warnings, progress)."""
  out = []
  for output in cell.get("outputs", []):
    if output["output_type"] == "stream":
      if output["name"] == "stdout" and (not out or out[-1] != ("stream", ("stdout",))):
        out.append(("stream", ("stdout",)))  # the kernel may split one print into several messages
    else:
      out.append((output["output_type"], tuple(sorted(output.get("data", {})))))
  return out


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  entry = builtin.BUILTINS[MODEL]
  if not entry.installed():
    pytest.skip(f"{MODEL} is not installed: {entry.pip}")
  for lang in LANGUAGES:
    if not calibration.describe(lang)["ready"]:
      pytest.skip(f"the {lang} corpus is not fetched: jaxprune corpora fetch {lang}")
  committed = nbformat.read(NOTEBOOK, as_version=4)
  work = tmp_path_factory.mktemp("walkthrough")
  fresh = copy.deepcopy(committed)
  for cell in fresh.cells:
    if cell.cell_type == "code":
      cell.outputs = []
  # The kernel imports this checkout's packages; execute raises CellExecutionError, naming the cell, on any error.
  # It runs as a user runs it: on the machine's one CPU device, not the 8 simulated ones of tests/conftest.py.
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
         "XLA_FLAGS": " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                               if not f.startswith("--xla_force_host_platform_device_count"))}
  nbclient.NotebookClient(fresh, timeout=TIMEOUT_S, kernel_name="python3",
                          resources={"metadata": {"path": str(work)}}).execute(env=env)
  return committed, fresh, work


def test_committed_copy_keeps_its_outputs_and_a_fresh_run_makes_the_same_kinds(executed):
  committed, fresh, _ = executed
  code = [(a, b) for a, b in zip(committed.cells, fresh.cells) if a.cell_type == "code"]
  assert all(a.source == b.source for a, b in code)
  assert [kinds(a) for a, _ in code] == [kinds(b) for _, b in code]
  shown = [kinds(a) for a, _ in code]
  assert sum(map(len, shown)) >= len(code) - 1  # only the setup cell shows nothing
  html = [o["data"]["text/html"] for a, _ in code for o in a.outputs if "text/html" in o.get("data", {})]
  assert any("treescope" in h for h in html)  # pz.show and mask_diff kept as treescope HTML
  assert any("image/png" in mimes for cell in shown for _, mimes in cell)  # the Jaccard plot


def test_notebook_exports_a_sub_model_with_a_model_card(executed):
  from huggingface_hub import ModelCard
  from transformers import AutoModelForCausalLM

  _, _, work = executed
  out = work / "walkthrough-out" / f"{MODEL}-{LANGUAGES[0]}"
  data = ModelCard.load(out / "README.md").data
  entry = builtin.BUILTINS[MODEL]
  assert data.base_model == entry.base_model and data.license == entry.license_id
  assert LANGUAGES[0] in data.tags and "pruned" in data.tags
  _, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
