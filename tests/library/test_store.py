"""Libraries: build, info, export parity with `jaxprune export`, add/remove atomically, runs of other models refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxprune import cli
from jaxprune.pruning import masks as masks_lib
from jaxprune import store as run_store
from jaxprune.errors import JaxpruneError
from jaxprune.library import store, submodels
from tests.evals.conftest import make_tiny_with_tokenizer
from tests.library.conftest import prune


def _tensors(folder):
  return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def test_build_stores_the_base_once_and_each_mask_packed(tiny_library, tiny_runs):
  _, loaded, runs, _ = tiny_runs
  lib = store.open_library(tiny_library)
  assert lib.names == ("python", "java")
  assert lib.manifest["base"]["hash"] == loaded.content_hash
  for name in lib.names:
    packed, shapes, kept = store.read_submodel(lib, name)
    want, record, _ = run_store.load_run(runs[name])
    assert kept == {}
    for key, mask in want.items():
      np.testing.assert_array_equal(masks_lib.unpack(packed[key], shapes[key][1]), mask)
      assert packed[key].dtype == np.uint8 and packed[key].nbytes * 8 < mask.size + 8 * mask.shape[0]
    assert json.loads((lib.submodel(name) / "run.json").read_text()) == record
  report = store.info(tiny_library)
  assert report["bytes"]["total"] == sum(p.stat().st_size for p in tiny_library.rglob("*") if p.is_file())
  assert report["dense_exports_bytes"] == 2 * report["bytes"]["base"]
  assert report["storage_gain"] == pytest.approx(report["dense_exports_bytes"] / report["bytes"]["total"])
  assert "python" in store.format_info(report)


@pytest.mark.parametrize("name", ["java", "java-sgpt"])
def test_library_export_equals_jaxprune_export(tiny_runs, tiny_library, tmp_path, name):
  folder, _, runs, _ = tiny_runs
  path = tiny_library
  if name == "java-sgpt":  # SparseGPT's updated weights are stored as kept values only
    path = store.build(store.LibraryConfig(path=tmp_path / "sg", model=str(folder), runs=((name, runs[name]),))).path
    _, _, kept = store.read_submodel(store.open_library(path), name)
    masks, _, new_weights = run_store.load_run(runs[name])
    assert set(kept) == set(new_weights)
    assert all(kept[k].size == masks[k].sum() for k in kept)
  assert cli.main(["export", "--model", str(folder), "--masks", runs[name], "--out", str(tmp_path / "ref")]) == 0
  store.export(path, name, tmp_path / "lib-export")
  ref, ours = _tensors(tmp_path / "ref"), _tensors(tmp_path / "lib-export")
  assert set(ref) == set(ours)
  for key in ref:
    np.testing.assert_array_equal(ours[key], ref[key], err_msg=key)


def test_runs_of_another_model_are_refused(tiny_runs, tiny_library, tmp_path):
  folder, _, runs, corpora = tiny_runs
  other, _ = make_tiny_with_tokenizer(tmp_path / "other", "llama", max_position_embeddings=1024, seed=1)
  foreign = prune(other, corpora["python"], tmp_path / "foreign")
  with pytest.raises(JaxpruneError, match="not the library's base"):
    store.build(store.LibraryConfig(path=tmp_path / "lib", model=str(folder),
                                    runs=(("python", runs["python"]), ("x", foreign))))
  assert not (tmp_path / "lib").exists()
  before = (tiny_library / store.MANIFEST).read_text()
  with pytest.raises(JaxpruneError, match="not the library's base"):
    store.add(store.LibraryConfig(path=tiny_library, runs=(("x", foreign),)))
  assert (tiny_library / store.MANIFEST).read_text() == before


def test_add_and_remove_rewrite_the_library_atomically(tiny_runs, tmp_path, monkeypatch):
  folder, _, runs, _ = tiny_runs
  path = tmp_path / "lib"
  store.build(store.LibraryConfig(path=path, model=str(folder), runs=(("python", runs["python"]),)))
  base_inode = (path / "base" / "model.safetensors").stat().st_ino
  lib = store.add(store.LibraryConfig(path=path, runs=(("java", runs["java"]),)))
  assert lib.names == ("python", "java") and (path / "router" / "classifier.safetensors").exists()
  assert (path / "base" / "model.safetensors").stat().st_ino == base_inode  # linked, not copied
  with pytest.raises(JaxpruneError, match="already has one"):
    store.add(store.LibraryConfig(path=path, runs=(("java", runs["java"]),)))

  def crash(*args, **kwargs):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(store.run_store, "write_json_atomic", crash)  # a failure while writing the manifest
  with pytest.raises(OSError):
    store.remove(path, ("java",))
  monkeypatch.undo()
  assert store.open_library(path).names == ("python", "java")
  assert (path / "submodels" / "java" / "mask.safetensors").exists()
  assert not any(p.name.endswith("jaxprune-partial") for p in tmp_path.iterdir())
  lib = store.remove(path, ("java",))
  assert lib.names == ("python",) and not (path / "submodels" / "java").exists()
  assert not (path / "router" / "classifier.safetensors").exists()  # one sub-model: nothing to classify
  with pytest.raises(JaxpruneError, match="empty"):
    store.remove(path, ("python",))


def test_names_and_existing_folders_are_checked(tiny_runs, tiny_library, tmp_path):
  folder, _, runs, _ = tiny_runs
  for bad in ("auto", "dense", "a/b", ""):
    with pytest.raises(JaxpruneError, match="sub-model name"):
      store.build(store.LibraryConfig(path=tmp_path / "l", model=str(folder), runs=((bad, runs["python"]),)))
  with pytest.raises(JaxpruneError, match="--overwrite"):
    store.build(store.LibraryConfig(path=tiny_library, model=str(folder), runs=(("python", runs["python"]),)))
  with pytest.raises(JaxpruneError, match="not a jaxprune library"):
    store.open_library(tmp_path)
  with pytest.raises(JaxpruneError, match="no sub-model"):
    store.export(tiny_library, "cpp", tmp_path / "x")


def test_kept_values_round_trip():
  rng = np.random.default_rng(0)
  mask = rng.random((5, 11)) < 0.5
  w = rng.standard_normal((5, 11)).astype(np.float32) * mask
  packed, shapes, kept = submodels.encode({"m": mask}, {"m": w})
  assert kept["m"].size == mask.sum()
  np.testing.assert_array_equal(submodels.dense_weights(submodels.unpack(packed, shapes), kept)["m"], w)
  for shape in ((5, 11), (4, 16), (3, 1)):  # the device-side unpacking keeps exactly the mask's weights
    mask, w = rng.random(shape) < 0.5, rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(submodels._keep(w, masks_lib.pack(mask)), np.where(mask, w, 0))


def test_cli_builds_edits_and_exports_a_library(tiny_runs, tmp_path, capsys):
  folder, _, runs, corpora = tiny_runs
  lib = tmp_path / "lib"
  assert cli.main(["library", "build", str(lib), "--model", str(folder), "--run", f"python={runs['python']}",
                   "--background", str(corpora["prose"]), "--default", "python", "--min-confidence", "0.7"]) == 0
  assert "1 dense exports" in capsys.readouterr().out
  manifest = store.open_library(lib).manifest
  assert manifest["route"]["default"] == "python" and manifest["route"]["min_confidence"] == 0.7
  assert manifest["route"]["router"] == "classifier" and manifest["background"] == str(corpora["prose"])
  assert cli.main(["library", "add", str(lib), "--run", f"java={runs['java']}",
                   "--router-text", f"java={corpora['java']}"]) == 0
  assert store.open_library(lib).manifest["submodels"]["java"]["router_text"] == str(corpora["java"])
  capsys.readouterr()
  assert cli.main(["library", "info", str(lib), "--json"]) == 0
  assert set(json.loads(capsys.readouterr().out)["submodels"]) == {"python", "java"}
  assert cli.main(["library", "export", str(lib), "java", "--out", str(tmp_path / "hf")]) == 0
  assert (tmp_path / "hf" / "config.json").exists()
  assert cli.main(["library", "remove", str(lib), "java"]) == 0
  assert store.open_library(lib).names == ("python",)
  assert cli.main(["library", "add", str(lib), "--run", "java"]) == 2  # one line, exit 2
  assert "NAME=PATH" in capsys.readouterr().err


def test_cli_serve_passes_its_flags_to_the_server(tiny_library, monkeypatch):
  from jaxprune.library import engine, server

  seen = []
  monkeypatch.setattr(server, "serve", seen.append)
  assert cli.main(["serve", str(tiny_library), "--port", "8123", "--api-key", "k", "--router", "perplexity"]) == 0
  config = seen[0]
  assert (config.port, config.api_key, config.host) == (8123, "k", engine.ServeConfig.host)
  assert dict(config.route) == {"router": "perplexity"} and config.timeout_s == engine.ServeConfig.timeout_s
