"""Zero-shot multiple choice: lm-eval's prompts, log-likelihoods equal to transformers', acc/acc_norm."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxprune.evals import multiple_choice as mc
from jaxprune import cli
from jaxprune.errors import JaxpruneError

torch = pytest.importorskip("torch")

ROWS = {
    "hellaswag": [
        {"activity_label": "Baking cookies", "ctx_a": "A woman puts dough on a tray.", "ctx_b": "she",
         "endings": ["puts the tray in the oven.", "eats the [title] tray.", "runs away.", "sings."], "label": "0"},
        {"activity_label": "Fishing", "ctx_a": "A man casts a line.", "ctx_b": "then he",
         "endings": ["waits.", "flies.", "reels in a fish.", "sleeps."], "label": "2"},
    ],
    "arc_easy": [
        {"question": "Which is a liquid?", "choices": {"text": ["ice", "water", "stone"], "label": ["A", "B", "C"]},
         "answerKey": "B"},
        {"question": "What gives light?", "choices": {"text": ["sun", "rock"], "label": ["1", "2"]}, "answerKey": "1"},
    ],
    "arc_challenge": [
        {"question": "Why do leaves fall?", "choices": {"text": ["cold", "wind", "age", "light"],
                                                        "label": ["A", "B", "C", "D"]}, "answerKey": "A"},
    ],
    "boolq": [
        {"passage": "Cats are mammals.", "question": "are cats mammals", "label": 1},
        {"passage": "The sea is salty.", "question": "is the sea sweet", "answer": False},
    ],
    "winogrande": [
        {"sentence": "The cup fell off the table because _ was slippery.", "option1": "the cup",
         "option2": "the table", "answer": "1"},
        {"sentence": "Anna gave Beth a gift because _ was kind.", "option1": "Anna", "option2": "Beth",
         "answer": "1"},
    ],
    "openbookqa": [
        {"question_stem": "Plants need", "choices": {"text": ["sunlight", "darkness", "noise", "salt"],
                                                     "label": ["A", "B", "C", "D"]}, "answerKey": " A"},
    ],
    "piqa": [
        {"goal": "Open a jar", "sol1": "Twist the lid.", "sol2": "Shout at it.", "label": 0},
    ],
}


def write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def torch_loglikelihood(model, context: list[int], continuation: list[int]) -> float:
  ids = torch.tensor([context + continuation])
  with torch.no_grad():
    logprobs = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
  targets = ids[0, 1:]
  return float(logprobs[torch.arange(len(targets)), targets][len(context) - 1:].sum())


@pytest.mark.parametrize("task", list(ROWS), ids=list(ROWS))
def test_choice_loglikelihoods_equal_transformers(tiny, tmp_path, task):
  from transformers import AutoModelForCausalLM

  folder, loaded = tiny
  docs = mc.load_docs(task, write_jsonl(tmp_path / f"{task}.jsonl", ROWS[task]))
  pairs = [mc.encode_pair(loaded.tokenizer, c, x) for d in docs for c, x in d.requests()]
  ours, _ = mc.loglikelihoods(loaded.model, pairs, batch_size=3)
  ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
  expected = [torch_loglikelihood(ref, c, x) for c, x in pairs]
  np.testing.assert_allclose(ours, expected, rtol=1e-4)
  assert len(ours) == sum(len(d.choices) for d in docs)


def test_prompts_follow_lm_eval():
  hs = mc.FORMATS["hellaswag"].parse(ROWS["hellaswag"][0])
  assert hs.contexts == ("Baking cookies: A woman puts dough on a tray. She",)
  assert hs.choices[1] == "eats the. tray." and hs.gold == 0
  arc = mc.FORMATS["arc_easy"].parse(ROWS["arc_easy"][0])
  assert arc.requests()[1] == ("Question: Which is a liquid?\nAnswer:", " water") and arc.gold == 1
  boolq = mc.FORMATS["boolq"].parse(ROWS["boolq"][1])
  assert boolq.requests() == [("The sea is salty.\nQuestion: is the sea sweet?\nAnswer:", " no"),
                              ("The sea is salty.\nQuestion: is the sea sweet?\nAnswer:", " yes")]
  assert boolq.gold == 0
  wino = mc.FORMATS["winogrande"].parse(ROWS["winogrande"][0])
  assert wino.requests() == [("The cup fell off the table because the cup", " was slippery."),
                             ("The cup fell off the table because the table", " was slippery.")]
  assert mc.FORMATS["openbookqa"].parse(ROWS["openbookqa"][0]).gold == 0  # " A" stripped
  piqa = mc.FORMATS["piqa"].parse(ROWS["piqa"][0])
  assert piqa.requests()[0] == ("Question: Open a jar\nAnswer:", " Twist the lid.")


def test_trailing_context_space_moves_to_the_continuation(tiny):
  tok = tiny[1].tokenizer
  ctx, cont = mc.encode_pair(tok, "Answer: ", "yes")
  assert tok.decode(ctx) == "Answer:" and tok.decode(cont) == " yes"
  ctx, cont = mc.encode_pair(tok, "", "yes")
  assert ctx == [tok.eos_token_id] and tok.decode(cont) == "yes"


def test_acc_and_acc_norm_as_lm_eval_defines_them():
  docs = [mc.Doc(("q",), ("a", "bbbbbbbb"), gold=1), mc.Doc(("q",), ("cc", "d"), gold=0)]
  lls = np.array([-2.0, -8.0, -1.0, -3.0])  # doc 1: raw picks "a", per character picks "bbbbbbbb"
  result = mc.accuracy(docs, lls)
  assert result["acc"] == 0.5 and result["acc_norm"] == 1.0
  assert result["acc_stderr"] == pytest.approx(0.5)


def test_cli_reports_accuracy(tiny, tmp_path):
  folder, _ = tiny
  data = write_jsonl(tmp_path / "arc.jsonl", ROWS["arc_easy"])
  out = tmp_path / "r.json"
  assert cli.main(["eval", "--model", str(folder), "--tasks", "arc_easy,winogrande", "--data", f"arc_easy={data}",
                   "--data", f"winogrande={write_jsonl(tmp_path / 'w.jsonl', ROWS['winogrande'])}",
                   "--out", str(out)]) == 0
  report = json.loads(out.read_text())["tasks"]
  assert set(report["arc_easy"]["metrics"]) == {"acc", "acc_norm"} and report["arc_easy"]["num_examples"] == 2
  assert set(report["winogrande"]["metrics"]) == {"acc"} and report["winogrande"]["requests"] == 4


def test_parquet_and_limit(tiny, tmp_path):
  import datasets

  path = tmp_path / "piqa.parquet"
  datasets.Dataset.from_list(ROWS["piqa"] * 3).to_parquet(str(path))
  assert len(mc.load_docs("piqa", str(path), limit=2)) == 2


@pytest.mark.parametrize("given, rows, message", [
    (None, None, "pass --data hellaswag=FILE"),
    ("/no/such.jsonl", None, "no such file or folder"),
    ("FILE", [{"foo": 1}], "lack field 'activity_label'"),
    ("FILE", [{**ROWS["hellaswag"][0], "label": "x"}], "does not fit the format"),
], ids=["no-data", "missing-file", "wrong-fields", "bad-label"])
def test_bad_data_gives_one_line(tmp_path, monkeypatch, given, rows, message):
  monkeypatch.setenv("JAXPRUNE_DATA", str(tmp_path / "empty"))
  if given == "FILE":
    given = write_jsonl(tmp_path / "h.jsonl", rows)
  with pytest.raises(JaxpruneError, match=message) as err:
    mc.load_docs("hellaswag", given)
  assert "\n" not in str(err.value) and "Rowan/hellaswag" in str(err.value)


def test_default_data_location(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXPRUNE_DATA", str(tmp_path))
  write_jsonl(tmp_path / "boolq.jsonl", ROWS["boolq"])
  assert [d.gold for d in mc.load_docs("boolq")] == [1, 0]
