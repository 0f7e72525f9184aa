"""Loader memory: a bfloat16 HF folder loads within 1.3x its checkpoint's bytes of peak RSS growth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxprune import converters
from tests.helpers import make_tiny_hf

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bf16_folder(tmp_path_factory):
  """A ~140 MB bfloat16 checkpoint: large enough that one tensor in flight is a small share of it."""
  work = tmp_path_factory.mktemp("load_memory")
  dense = make_tiny_hf(work / "f32", "llama", hidden_size=768, intermediate_size=3072, num_hidden_layers=6,
                       num_attention_heads=12, num_key_value_heads=12, vocab_size=8000)
  converters.export_hf(converters.load_model(str(dense), dtype="bfloat16"), work / "bf16")
  tiny = make_tiny_hf(work / "tiny", "llama")
  return work / "bf16", tiny


@pytest.mark.parametrize("loader", ["jaxprune", "jaxprune-host"])
def test_bf16_folder_loads_within_1_3x_its_bytes(bf16_folder, loader):
  bf16_folder, tiny = bf16_folder
  size = sum(p.stat().st_size for p in bf16_folder.glob("*.safetensors"))
  assert json.loads((bf16_folder / "config.json").read_text())["dtype"] == "bfloat16"
  # scripts/bench_load.py's worker: a fresh process, growth = peak RSS after the load - after the imports
  # and a tiny model's load (the ~30 MB of code paths every load runs once: tokenizer libraries, builders).
  out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_load.py"), "--worker", loader, "--source",
                        str(bf16_folder), "--warmup", str(tiny)], cwd=ROOT, capture_output=True, text=True,
                       check=True).stdout
  row = json.loads(out.strip().splitlines()[-1])
  growth = (row["peak_mib"] - row["baseline_mib"]) * 2**20
  assert growth <= 1.3 * size, (growth / size, row)
