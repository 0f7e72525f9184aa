"""scripts/dense_fidelity.py end to end on a tiny model: cells cached with their completions, the table, reuse."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.evals.conftest import make_tiny_with_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import dense_fidelity  # noqa: E402


def test_cells_table_and_reuse(tmp_path):
  folder, _ = make_tiny_with_tokenizer(tmp_path / "model", "llama", max_position_embeddings=4096)
  out = tmp_path / "out"
  argv = ["--model", str(folder), "--out", str(out), "--tasks", "humaneval", "humaneval-js", "--limit", "2",
          "--max-new-tokens", "4", "--gen-batch-size", "2"]
  dense_fidelity.main(argv)
  for prompting in ("raw", "chat"):
    for task in ("humaneval", "humaneval-js"):
      cell = json.loads((out / "dense" / prompting / f"{task}.json").read_text())
      assert cell["settings"]["prompting"] == prompting and cell["settings"]["limit"] == 2
      problems = cell["report"]["per_problem"]
      assert len(problems) == 2
      assert all(len(p["samples"]) == 1 and "completion" in p["samples"][0] for p in problems.values())
  table = (out / "dense.md").read_text()
  assert "| Python | – | 0.0 (0/2) | 0.0 (0/2) | 2 |" in table
  assert "| JavaScript |" in table and "dense_fidelity.py --model" in table

  before = {p: p.stat().st_mtime_ns for p in (out / "dense").rglob("*.json")}
  dense_fidelity.main(argv)  # every cell is reused, none rewritten
  assert {p: p.stat().st_mtime_ns for p in (out / "dense").rglob("*.json")} == before
  dense_fidelity.main([*argv[:-4], "--max-new-tokens", "3", "--gen-batch-size", "2", "--prompting", "raw",
                       "--tasks", "humaneval"])  # other settings: that cell is made again
  cell = json.loads((out / "dense" / "raw" / "humaneval.json").read_text())
  assert cell["settings"]["max_new_tokens"] == 3
