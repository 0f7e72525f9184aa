"""Jaccard distances of masks, and `jaxprune compare` end to end on run dirs."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import cli, compare, store
from jaxprune.compare import report as compare_report
from jaxprune.pruning import masks
from jaxprune.errors import JaxpruneError
from tests import chromium


def row(*bits: int) -> np.ndarray:
  return np.array([bits], bool)


def both_ways(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
  """Distance by the bool API and by the packed API."""
  bool_d = compare.jaccard({"w": a}, {"w": b})["w"]
  packed_d = compare.jaccard_packed({"w": masks.pack(a)}, {"w": masks.pack(b)})["w"]
  return bool_d, packed_d


# --------------------------------------------------------------------------- #
# Known distances
# --------------------------------------------------------------------------- #

WIDE_A = np.zeros((5, 70), bool)
WIDE_A[:, :40] = True
WIDE_B = np.zeros((5, 70), bool)
WIDE_B[:, 20:60] = True
ODD_A = np.zeros((3, 13), bool)
ODD_A[:, :7] = True
ODD_B = np.zeros((3, 13), bool)
ODD_B[:, 3:] = True

KNOWN = {
    # name: (A, B, distance)
    "half-overlap": (row(1, 1, 0, 0), row(1, 0, 1, 0), 1 - 1 / 3),
    "identical": (row(1, 0, 1, 0), row(1, 0, 1, 0), 0.0),
    "disjoint": (row(1, 1, 0, 0), row(0, 0, 1, 1), 1.0),
    "subset": (row(1, 1, 1, 1), row(1, 0, 0, 0), 0.75),
    "both-empty-is-identical": (row(0, 0, 0, 0), row(0, 0, 0, 0), 0.0),
    "one-empty": (row(0, 0, 0, 0), row(0, 1, 0, 0), 1.0),
    "both-full": (row(1, 1, 1), row(1, 1, 1), 0.0),
    "bands-70-wide": (WIDE_A, WIDE_B, 1 - 20 / 60),  # inter [20,40), union [0,60)
    "odd-width-13": (ODD_A, ODD_B, 1 - 4 / 13),  # inter cols 3..6, union all 13
}


@pytest.mark.parametrize("case", list(KNOWN), ids=list(KNOWN))
def test_known_distances(case):
  a, b, expected = KNOWN[case]
  bool_d, packed_d = both_ways(a, b)
  assert bool_d == pytest.approx(expected, abs=1e-12)
  assert packed_d == pytest.approx(expected, abs=1e-12)


SHAPES = {"8x8": (8, 8), "3x13": (3, 13), "2x33": (2, 33), "16x4096": (16, 4096), "5x1376": (5, 1376)}


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_identical_is_0_and_complement_is_1(shape):
  a = np.random.default_rng(0).random(shape) < 0.5
  assert both_ways(a, a.copy()) == (0.0, 0.0)
  assert both_ways(a, ~a) == (1.0, 1.0)


PACKED_INPUTS = {
    "numpy": lambda p: p,  # zero-copy uint32 view when the row width allows
    "jax-array": lambda p: jnp.asarray(p),  # bitcast inside XLA
    "non-contiguous": lambda p: np.asfortranarray(p),
}


@pytest.mark.parametrize("kind", list(PACKED_INPUTS), ids=list(PACKED_INPUTS))
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_packed_equals_unpacked_and_numpy(shape, kind):
  rng = np.random.default_rng(1)
  a, b = rng.random(shape) < 0.4, rng.random(shape) < 0.6
  inter, union = int((a & b).sum()), int((a | b).sum())
  convert = PACKED_INPUTS[kind]
  assert compare.overlap_counts(convert(masks.pack(a)), convert(masks.pack(b))) == (inter, union)
  assert compare.kept_count(convert(masks.pack(a))) == int(a.sum())
  packed_d = compare.jaccard_packed({"w": convert(masks.pack(a))}, {"w": convert(masks.pack(b))})["w"]
  assert packed_d == compare.jaccard({"w": a}, {"w": b})["w"] == 1 - inter / union


def test_jaccard_is_per_matrix():
  a = {"x": row(1, 1, 0, 0), "y": row(1, 0, 0, 0)}
  b = {"x": row(1, 1, 0, 0), "y": row(0, 1, 0, 0)}
  assert compare.jaccard(a, b) == {"x": 0.0, "y": 1.0}


API_ERRORS = {
    "different-names": (lambda: compare.jaccard({"x": row(1)}, {"y": row(1)}), "in only one of the two mask sets"),
    "different-shapes": (lambda: compare.jaccard({"x": row(1, 0)}, {"x": row(1, 0, 1)}), "shape"),
    "packed-not-uint8": (lambda: compare.jaccard_packed({"x": row(1)}, {"x": row(1)}), "pass uint8"),
    "packed-shapes": (
        lambda: compare.jaccard_packed({"x": np.zeros((2, 1), np.uint8)}, {"x": np.zeros((3, 1), np.uint8)}),
        "same model",
    ),
}


@pytest.mark.parametrize("case", list(API_ERRORS), ids=list(API_ERRORS))
def test_api_errors_are_one_line(case):
  call, message = API_ERRORS[case]
  with pytest.raises(JaxpruneError, match=message) as err:
    call()
  assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- #
# Helpers of the report
# --------------------------------------------------------------------------- #

NAMES = [f"model.layers.{l}.{p}.weight" for l in range(4) for p in ("self_attn.q_proj", "mlp.up_proj")]


@pytest.mark.parametrize(
    "names, expected",
    [(NAMES, "model.layers.2.self_attn.q_proj.weight"),
     (["model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight"], "model.layers.1.mlp.up_proj.weight"),
     (["lm_head.weight"], "lm_head.weight")],
    ids=["middle-q_proj", "no-q_proj", "no-layers"],
)
def test_default_matrix(names, expected):
  assert compare_report.default_matrix(names) == expected


@pytest.mark.parametrize(
    "calibration, expected",
    [({"source": "python", "seed": 3}, "python"), ({}, None), ({"source": None}, None),
     ({"source": "tokens-file", "path": "/x/a.npy"}, "tokens-file:/x/a.npy")],
    ids=["named-domain", "no-calibration", "magnitude-no-source", "token-file-by-path"],
)
def test_domain_of(calibration, expected):
  assert compare.domain_of(calibration) == expected


def test_projection_of():
  assert compare.projection_of("model.layers.12.self_attn.q_proj.weight") == "self_attn.q_proj"
  assert compare.projection_of("lm_head.weight") == "lm_head"


# --------------------------------------------------------------------------- #
# Run directories and the CLI
# --------------------------------------------------------------------------- #

SHAPE = {"self_attn.q_proj": (24, 32), "self_attn.k_proj": (8, 32), "mlp.down_proj": (32, 40)}
LAYERS = 3


def make_run(path: Path, domain: str | None, seed: int, noise: float, model_id: str = "tiny",
             shapes: dict | None = None, run_json: bool = True) -> dict[str, np.ndarray]:
  """A run dir: masks from shared base scores plus per-run noise (more noise, farther apart)."""
  base = np.random.default_rng(123)
  rng = np.random.default_rng(seed)
  result = {}
  for layer in range(LAYERS):
    for proj, shape in (shapes or SHAPE).items():
      scores = base.random(shape) + noise * rng.random(shape)
      result[f"model.layers.{layer}.{proj}.weight"] = np.asarray(masks.unstructured(scores, 0.5))
  model = {"id": model_id, "hash": f"hash-{model_id}"}
  store.save_masks(path / "masks", result, {"model": model})  # as jaxprune.runs does
  if run_json:
    info = {"model": model,
            "options": {"sparsity": 0.5, "pattern": "unstructured", "method": "wanda", "seed": seed}}
    if domain:
      info["calibration"] = {"source": domain}
    (path / "run.json").write_text(json.dumps(info))
  return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
  root = tmp_path_factory.mktemp("runs")
  spec = {"py-a": ("python", 0, 0.2), "py-b": ("python", 1, 0.2), "java": ("java", 2, 3.0)}
  return {name: (root / name, make_run(root / name, *args)) for name, args in spec.items()}


def run_cli(*argv: str, capsys) -> tuple[int, str, str]:
  rc = cli.main(["compare", *argv])
  captured = capsys.readouterr()
  return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
  out = tmp_path_factory.mktemp("report") / "rep"
  assert cli.main(["compare", *(str(p) for p, _ in runs.values()), "--out", str(out)]) == 0
  return out


def test_report_files(report):
  names = {p.name for p in report.iterdir()}
  expected = {"index.html", "distances.csv", "distances.json", "heatmap.png", "domains.png",
              "layers_0_1.png", "layers_0_2.png", "layers_1_2.png",
              "mask_diff_0_1.html", "mask_diff_0_2.html", "mask_diff_1_2.html"}
  assert names == expected
  assert not [p for p in report.parent.iterdir() if p.name.startswith(".")], "temp dir left behind"
  for png in report.glob("*.png"):
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_distances_match_the_masks(report, runs):
  doc = json.loads((report / "distances.json").read_text())
  with open(report / "distances.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == len(doc["distances"]) == 3 * LAYERS * len(SHAPE)
  for r in rows:
    a, b = runs[r["run_a"]][1][r["name"]], runs[r["run_b"]][1][r["name"]]
    assert float(r["distance"]) == pytest.approx(1 - (a & b).sum() / (a | b).sum(), abs=1e-12)
    assert int(r["kept_a"]) == a.sum() and int(r["layer"]) == int(r["name"].split(".")[2])
  groups = {(p["run_a"], p["run_b"]): p["group"] for p in doc["pairs"]}
  assert groups == {("py-a", "py-b"): "within", ("py-a", "java"): "across", ("py-b", "java"): "across"}
  means = {(p["run_a"], p["run_b"]): p["mean_distance"] for p in doc["pairs"]}
  assert means[("py-a", "py-b")] < means[("py-a", "java")]  # less noise between them
  assert {r["domain"] for r in doc["runs"]} == {"python", "java"}


def test_index_links_resolve(report):
  page = (report / "index.html").read_text()
  targets = set(re.findall(r'(?:src|href)="([^"]+)"', page))
  assert {"heatmap.png", "domains.png", "distances.csv", "mask_diff_0_1.html"} <= targets
  assert all((report / t).is_file() for t in targets), targets
  assert "model.layers.1.self_attn.q_proj.weight" in page  # default: middle layer's q_proj
  assert "<treescope-container" in page


def test_existing_out_is_refused_then_overwritten(runs, tmp_path, capsys):
  out = tmp_path / "rep"
  paths = [str(p) for p, _ in list(runs.values())[:2]]
  rc, _, _ = run_cli(*paths, "--out", str(out), capsys=capsys)
  assert rc == 0
  rc, _, err = run_cli(*paths, "--out", str(out), capsys=capsys)
  assert rc == 2 and "--overwrite" in err and err.count("\n") == 1
  rc, stdout, _ = run_cli(*paths, "--out", str(out), "--overwrite", "--matrix",
                          "model.layers.0.mlp.down_proj.weight", capsys=capsys)
  assert rc == 0 and stdout.strip() == str(out / "index.html")
  assert "model.layers.0.mlp.down_proj.weight" in (out / "index.html").read_text()
  assert not (out / "domains.png").exists()  # one within pair only: nothing to contrast
  assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_report_names_runs_by_paths_relative_to_the_working_folder(runs, tmp_path, monkeypatch, capsys):
  """A report committed with a reproduction names its runs the same way on every machine."""
  import shutil

  for name, (path, _) in list(runs.items())[:2]:
    shutil.copytree(path, tmp_path / "results" / "runs" / name)
  monkeypatch.chdir(tmp_path)
  rc, _, _ = run_cli("results/runs/py-a", "results/runs/py-b", "--out", "results/compare", capsys=capsys)
  assert rc == 0
  doc = json.loads((tmp_path / "results" / "compare" / "distances.json").read_text())
  assert [r["path"] for r in doc["runs"]] == ["results/runs/py-a", "results/runs/py-b"]
  page = (tmp_path / "results" / "compare" / "index.html").read_text()
  assert "results/runs/py-a" in page and str(tmp_path) not in page


def test_foreign_out_is_never_replaced(runs, tmp_path, capsys):
  out = tmp_path / "rep"
  out.mkdir()
  (out / "keep.txt").write_text("old")
  paths = [str(p) for p, _ in list(runs.values())[:2]]
  rc, _, err = run_cli(*paths, "--out", str(out), "--overwrite", capsys=capsys)
  assert rc == 2 and "did not write" in err and "--overwrite" not in err and err.count("\n") == 1
  assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "old"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


CLI_ERRORS = {
    "one-run": (lambda r, t: [str(r["py-a"][0])], "at least two runs"),
    "missing-dir": (lambda r, t: [str(r["py-a"][0]), str(t / "nope")], "does not exist"),
    "other-model-id": (
        lambda r, t: [str(r["py-a"][0]), str(make_run_dir(t / "m", model_id="other"))], "different models"),
    "other-model-no-run-json": (  # falls back to the masks' metadata
        lambda r, t: [str(r["py-a"][0]), str(make_run_dir(t / "n", model_id="other", run_json=False))],
        "different models"),
    "other-shapes-no-run-json": (
        lambda r, t: [str(r["py-a"][0]), str(make_run_dir(t / "s", shapes={"self_attn.q_proj": (24, 16)},
                                                          run_json=False))], "different matrices"),
    "unknown-matrix": (lambda r, t: [str(r["py-a"][0]), str(r["py-b"][0]), "--matrix", "nope.weight"],
                       "is not among"),
    "not-a-run": (lambda r, t: [str(r["py-a"][0]), str(t)], "no masks found"),
}


def make_run_dir(path: Path, **kwargs) -> Path:
  make_run(path, "python", 5, 0.2, **kwargs)
  return path


@pytest.mark.parametrize("case", list(CLI_ERRORS), ids=list(CLI_ERRORS))
def test_cli_errors_are_one_line(case, runs, tmp_path, capsys):
  build, message = CLI_ERRORS[case]
  args = build(runs, tmp_path)
  out = tmp_path / "rep"
  rc, _, err = run_cli(*args, "--out", str(out), capsys=capsys)
  assert rc == 2, err
  assert message in err and err.count("\n") == 1 and err.startswith("jaxprune compare: error:")
  assert not out.exists()


def test_failure_midway_leaves_nothing(runs, tmp_path, monkeypatch):
  def boom(*args, **kwargs):
    raise RuntimeError("disk full")

  monkeypatch.setattr(compare_report, "plot_heatmap", boom)
  config = compare_report.CompareConfig(runs=tuple(str(p) for p, _ in runs.values()), out=str(tmp_path / "rep"))
  with pytest.raises(RuntimeError, match="disk full"):
    compare_report.write_report(config)
  assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- #
# In a browser
# --------------------------------------------------------------------------- #


@pytest.mark.browser
def test_index_loads_in_chromium_and_is_not_blank(report, tmp_path):
  if chromium.find() is None:
    pytest.skip("chromium is not installed (apt-get install -y chromium)")
  png = chromium.screenshot((report / "index.html").as_uri(), tmp_path / "index.png", 1400, 2400)
  image = chromium.pixels(png)
  assert image.shape[:2] == (2400, 1400)
  not_white = (image.sum(-1) < 720).mean()
  colours = len(np.unique(image.reshape(-1, 3)[::7], axis=0))
  assert not_white > 0.03, f"only {not_white:.1%} of the screenshot is not white"
  assert colours > 50, f"only {colours} colours: the plots did not load"


@pytest.mark.browser
def test_index_mask_picture_draws_in_chromium(report):
  if chromium.find() is None:
    pytest.skip("chromium is not installed (apt-get install -y chromium)")
  with chromium.Page((report / "index.html").as_uri(), width=1600, height=1400) as page:
    page.wait_for("document.readyState === 'complete'")
    page.evaluate("document.getElementById('mask-diff').scrollIntoView()")
    assert page.wait_for(chromium.TREESCOPE_DRAWN), "the treescope picture in index.html never drew"
    assert not page.exceptions, page.exceptions


# --------------------------------------------------------------------------- #
# With run directories written by `jaxprune prune`
# --------------------------------------------------------------------------- #


def test_compare_runs_written_by_prune(tmp_path, capsys):
  """The contract with `jaxprune prune`: its run.json (model id/hash, calibration) reads back."""
  pytest.importorskip("torch")
  from tests.helpers import make_tiny_hf

  model = make_tiny_hf(tmp_path / "tiny", "llama", seed=0)
  rng = np.random.default_rng(0)
  for name, low, high in (("a", 0, 50), ("b", 50, 97)):
    np.save(tmp_path / f"tok_{name}.npy", rng.integers(low, high, (4, 16)).astype(np.int32))
    assert cli.main(["prune", "--model", str(model), "--calib-tokens", str(tmp_path / f"tok_{name}.npy"),
                     "--out", str(tmp_path / f"run_{name}")]) == 0
  out = tmp_path / "rep"
  rc, _, err = run_cli(str(tmp_path / "run_a"), str(tmp_path / "run_b"), "--out", str(out), capsys=capsys)
  assert rc == 0, err
  doc = json.loads((out / "distances.json").read_text())
  assert [r["model"]["id"] for r in doc["runs"]] == [str(model)] * 2 and doc["runs"][0]["model"]["hash"]
  assert [r["domain"] for r in doc["runs"]] == [f"tokens-file:{tmp_path / 'tok_a.npy'}",
                                                f"tokens-file:{tmp_path / 'tok_b.npy'}"]
  assert [p["group"] for p in doc["pairs"]] == ["across"]
  masks_a, _ = store.load_masks(tmp_path / "run_a")
  masks_b, _ = store.load_masks(tmp_path / "run_b")
  expected = compare.jaccard(masks_a, masks_b)
  assert {r["name"]: r["distance"] for r in doc["distances"]} == expected
  assert 0 < np.mean(list(expected.values())) < 1
