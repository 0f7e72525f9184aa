"""scripts/memory_arithmetic.py: its parameter counts against the published ones, and its generation table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import memory_arithmetic  # noqa: E402


@pytest.mark.parametrize("name, parameters", [
    ("llama-2-7b", 6_738_415_616),  # Llama-2-7b-hf
    ("codellama-7b", 6_738_546_688),  # CodeLlama-7b-hf (16 more vocabulary rows, twice)
    # the packaged Qwen2.5-Coder-0.5B GGUF (our loader's count), less the q/k/v biases the shapes leave out
    ("qwen2.5-coder-0.5b", 630_167_424 - 24 * (896 + 2 * 128)),
])
def test_model_size_is_the_published_parameter_count(name, parameters):
  assert memory_arithmetic._whole(memory_arithmetic.SHAPES[name]) == parameters


def test_generation_memory_is_weights_plus_kv_cache_plus_logits():
  hidden, _, heads, kv, layers, vocab = memory_arithmetic.SHAPES["codellama-7b"]
  items = memory_arithmetic.generation(memory_arithmetic.SHAPES["codellama-7b"], 64, 1536, 2)
  assert items["KV cache"] == 64 * 1536 * layers * 2 * kv * (hidden // heads) * 2  # keys and values, bf16
  assert items["total"] == items["weights"] + items["KV cache"] + items["logits"]


def test_cli_prints_both_tables_and_writes_json(tmp_path):
  out = tmp_path / "memory.json"
  printed = subprocess.run([sys.executable, str(SCRIPTS / "memory_arithmetic.py"), "--models", "qwen2.5-coder-1.5b",
                            "--seqlen", "512", "--json", str(out)], capture_output=True, text=True, check=True).stdout
  assert "| qwen2.5-coder-1.5b | 1 | data=1,model=1 | host |" in printed and "Generating (HumanEval)" in printed
  saved = json.loads(out.read_text())
  assert {r["model"] for r in saved["prune"]} == {"qwen2.5-coder-1.5b"}
  assert saved["generation"]["gb"]["qwen2.5-coder-1.5b"]["bfloat16 cache"]["total"] > 3.5  # weights alone 3.6 GB
