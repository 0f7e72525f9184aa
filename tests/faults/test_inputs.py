"""Bad inputs named in one line: flags that contradict each other, data rows that do not fit, stray folders."""

from __future__ import annotations

import json

import pytest

from jaxprune.evals import data, multiple_choice
from jaxprune import calibration, cli
from jaxprune.calibration import corpora
from jaxprune.errors import JaxpruneError
from tests.faults.conftest import one_line_error


@pytest.mark.parametrize("flag", [["--calib", "java"], ["--nsamples", "4"], ["--seqlen", "8"]])
def test_calib_tokens_beside_the_flags_it_replaces_is_refused(flag, model, tokens, tmp_path, capsys, no_model_load):
  code = cli.main(["prune", "--model", str(model), "--calib-tokens", str(tokens), *flag, "--out", str(tmp_path / "r")])
  one_line_error(capsys, code, 2, "--calib-tokens", f"drop {flag[0]}")
  assert list(tmp_path.iterdir()) == []


def _hellaswag_row(label) -> dict:
  return {"activity_label": "Cooking", "ctx_a": "A man cracks an egg.", "ctx_b": "he", "label": label,
          "endings": ["fries it.", "eats the shell.", "flies away.", "sings."]}


@pytest.mark.parametrize("label", [4, -1, "7"])
def test_hellaswag_label_out_of_range_names_the_row(label, tmp_path):
  path = tmp_path / "hellaswag.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in (_hellaswag_row(0), _hellaswag_row(label))) + "\n")
  with pytest.raises(JaxpruneError, match=r"hellaswag: row 2 names answer -?\d+, but has 4 choices"):
    multiple_choice.load_docs("hellaswag", str(path))


def test_accuracy_of_one_question_is_strict_json():
  doc = multiple_choice.Doc(("Q:",), ("a", "b"), 0)
  json.dumps(multiple_choice.accuracy([doc], [0.0, -1.0]), allow_nan=False)


def test_malformed_jsonl_names_its_line(tmp_path):
  path = tmp_path / "hellaswag.jsonl"
  path.write_text(json.dumps(_hellaswag_row(0)) + "\n\n" + '{"label": 1,,}\n')
  with pytest.raises(JaxpruneError, match=r"could not read .*hellaswag.jsonl \(line 3, column 13"):
    data.load_rows("hellaswag", str(path), "layout")


def test_generic_domain_ignores_a_c4_folder_in_the_working_directory(tmp_path, monkeypatch):
  stray = tmp_path / "work" / "c4"
  stray.mkdir(parents=True)
  (stray / "train.jsonl").write_text('{"text": "not the documented place"}\n')
  monkeypatch.chdir(tmp_path / "work")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no hub cache either
  root = corpora.cache_root()
  if (root / "local" / "c4").exists():
    pytest.skip(f"this machine has local C4 data in {root / 'local' / 'c4'}")
  assert corpora.hfdata.find_local("c4", root, paths=False) is None
  info = calibration.describe("generic")
  assert str(stray) not in json.dumps(info) and "c4" not in [g["name"] for g in info.get("groups", [])]
  assert info["ready"] is False or "fallback" in info, info
