"""Claiming outputs: jaxprune never writes over what it did not make, and checks before working."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from jaxprune import cli, outputs
from tests.faults.conftest import one_line_error, snapshot


def _user_folder(tmp_path):
  """A folder of the user's own files (what a careless --out may point at)."""
  folder = tmp_path / "mine"
  folder.mkdir()
  (folder / "thesis.tex").write_text("years of work")
  (folder / "data").mkdir()
  (folder / "data" / "x.csv").write_text("1,2\n")
  return folder


def _fake_export(tmp_path):
  folder = tmp_path / "exported"
  folder.mkdir()
  (folder / outputs.EXPORT_MARKER).write_text(json.dumps({"format": outputs.EXPORT_FORMAT}))
  (folder / "model.safetensors").write_bytes(b"weights")
  return folder


# name: (where --out points, given (tmp_path, user folder, model, run), text of the error)
OUT_CASES = {
    "empty": (lambda t, u, m, r: "", "is empty"),
    "dot": (lambda t, u, m, r: ".", "current folder"),
    "cwd-parent": (lambda t, u, m, r: "..", "current folder or one above"),
    "foreign-folder": (lambda t, u, m, r: str(u / "data"), "did not write"),
    "model-folder": (lambda t, u, m, r: str(m), "input of this command"),
    "model-parent": (lambda t, u, m, r: str(m.parent), "input of this command"),
    "a-file": (lambda t, u, m, r: str(u / "thesis.tex"), "is a file"),
    "under-a-file": (lambda t, u, m, r: str(u / "thesis.tex" / "out"), "is a file, not a folder"),
}
COMMANDS = {
    "prune": lambda m, tok, r, out: ["prune", "--model", str(m), "--calib-tokens", str(tok), "--out", out,
                                     "--overwrite"],
    "export": lambda m, tok, r, out: ["export", "--model", str(m), "--masks", str(r), "--out", out, "--overwrite"],
    "compare": lambda m, tok, r, out: ["compare", str(r), str(r), "--out", out, "--overwrite"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(OUT_CASES))
def test_bad_out_is_refused_before_work_and_touches_nothing(case, command, model, tokens, run_dir, tmp_path,
                                                            monkeypatch, capsys, no_model_load):
  user = _user_folder(tmp_path)
  monkeypatch.chdir(user)
  out = OUT_CASES[case][0](tmp_path, user, model, run_dir)
  before = {p: snapshot(p) for p in (tmp_path, model.parent, run_dir)}
  code = cli.main(COMMANDS[command](model, tokens, run_dir, out))
  expected = OUT_CASES[case][1]
  if command == "compare" and case.startswith("model-"):
    expected = "did not write"  # the model is no input of compare, but still not jaxprune's to replace
  line = one_line_error(capsys, code, 2, expected)
  assert "--overwrite" not in line  # never the fix for a folder jaxprune did not make
  assert {p: snapshot(p) for p in before} == before


@pytest.mark.parametrize("command", list(COMMANDS))
def test_other_kind_of_jaxprune_output_is_refused(command, model, tokens, run_dir, tmp_path, capsys,
                                                 no_model_load):
  if command == "prune":
    target, found = _fake_export(tmp_path), "holds an export of jaxprune, not a prune run"
  else:
    target, found = shutil.copytree(run_dir, tmp_path / "another-run"), "holds a prune run of jaxprune, not a"
  before = snapshot(target)
  code = cli.main(COMMANDS[command](model, tokens, run_dir, str(target)))
  one_line_error(capsys, code, 2, found)
  assert snapshot(target) == before


def test_finished_run_is_replaced_only_with_overwrite_and_only_at_the_end(model, tokens, tmp_path, capsys):
  out = tmp_path / "r"
  args = ["prune", "--model", str(model), "--calib-tokens", str(tokens), "--out", str(out)]
  assert cli.main(args) == 0
  capsys.readouterr()
  first = snapshot(out)
  one_line_error(capsys, cli.main(args + ["--sparsity", "0.3"]), 2, "already holds a finished run",
                 "pass --overwrite")
  assert snapshot(out) == first
  assert cli.main(args + ["--sparsity", "0.3", "--overwrite"]) == 0
  record = json.loads((out / "run.json").read_text())
  assert record["options"]["sparsity"] == 0.3 and record["format"] == outputs.RUN_FORMAT
  assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no partial or old folder left


def test_export_clears_what_a_killed_export_left(model, run_dir, tmp_path, capsys):
  out = tmp_path / "hf"
  stale = tmp_path / ".hf.jaxprune-partial"  # what a SIGKILLed export leaves
  stale.mkdir()
  (stale / "model.safetensors").write_bytes(b"half")
  assert cli.main(["export", "--model", str(model), "--masks", str(run_dir), "--out", str(out)]) == 0
  assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
  assert json.loads((out / outputs.EXPORT_MARKER).read_text())["format"] == outputs.EXPORT_FORMAT
  mode = os.stat(out / "config.json").st_mode & 0o777
  umask = os.umask(0)
  os.umask(umask)
  assert mode == 0o666 & ~umask and os.stat(out).st_mode & 0o777 == 0o777 & ~umask
  capsys.readouterr()
  one_line_error(capsys, cli.main(["export", "--model", str(model), "--masks", str(run_dir), "--out", str(out)]),
                 2, "already holds an export", "--overwrite")
  assert cli.main(["export", "--model", str(model), "--masks", str(run_dir), "--out", str(out), "--overwrite"]) == 0
  assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


EVAL_OUT = {
    "a-folder": (lambda t, u, m: str(u), "is a folder"),
    "foreign-file": (lambda t, u, m: str(u / "thesis.tex"), "jaxprune did not write it"),
    "model-config": (lambda t, u, m: str(m / "config.json"), "jaxprune did not write it"),
    "under-a-file": (lambda t, u, m: str(u / "thesis.tex" / "r.json"), "is a file, not a folder"),
    "missing-folder": (lambda t, u, m: str(t / "nope" / "r.json"), "does not exist"),
    "empty": (lambda t, u, m: "", "is empty"),
}


@pytest.mark.parametrize("case", list(EVAL_OUT))
def test_eval_out_is_checked_before_loading(case, model, tmp_path, capsys, no_model_load):
  user = _user_folder(tmp_path)
  out = EVAL_OUT[case][0](tmp_path, user, model)
  before = {p: snapshot(p) for p in (tmp_path, model)}
  code = cli.main(["eval", "--model", str(model), "--tasks", "ppl:python", "--out", out])
  one_line_error(capsys, code, 2, EVAL_OUT[case][1])
  assert {p: snapshot(p) for p in before} == before


def test_finished_run_names_no_machine_path(run_dir):
  """Orbax's commit markers name their folder relative to the run, not by this machine's absolute path."""
  markers = list(run_dir.rglob("commit_success.txt"))
  assert markers
  for marker in markers:
    text = marker.read_text()
    assert str(run_dir.parent) not in text and "jaxprune-partial" not in text, text
