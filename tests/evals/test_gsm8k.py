"""GSM8K 8-shot: our exemplars, answer extraction, exact match on a fixture, the task end to end."""

from __future__ import annotations

import json
import re

import pytest

from jaxprune.evals import gsm8k
from jaxprune import cli

ROWS = [
    {"question": "Ann has 3 apples and buys 4 more. How many apples does she have?",
     "answer": "She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A book costs $1,200 in total for 3 copies. What does one copy cost?",
     "answer": "One copy costs 1200 / 3 = <<1200/3=400>>400 dollars.\n#### 400"},
    {"question": "Bo runs 5 km a day for 6 days. How far does he run?",
     "answer": "He runs 5 * 6 = <<5*6=30>>30 km.\n#### 30"},
]


def test_exemplars_are_eight_and_their_arithmetic_holds():
  assert len(gsm8k.EXEMPLARS) == 8
  for question, answer in gsm8k.EXEMPLARS:
    steps = re.findall(r"(\d+(?: [-+*/] \d+)+) = (\d+)", answer)
    assert steps, answer
    for expression, result in steps:
      assert eval(expression) == int(result), expression  # noqa: S307 - our own literal arithmetic
    assert gsm8k.gold(answer) == steps[-1][1]
    assert question.endswith("?")


def test_prompt_has_every_shot_then_the_question():
  text = gsm8k.prompt(" How much is 2 + 2? ")
  assert text.count("Question:") == 9 and text.count("####") == 8
  assert text.endswith("Question: How much is 2 + 2?\nAnswer:")


@pytest.mark.parametrize("completion, expected", [
    (" 3 + 4 = 7.\n#### 7", ("7", "7")),
    (" It costs $1,200.00 in total.\n#### $1,200", ("1200", "1200")),
    (" so the answer is 12.", (None, "12")),
    (" nothing numeric", (None, None)),
    (" -5 degrees\n#### -5.", ("-5", "-5")),
    (" #### 2.50", ("2.5", "2.5")),
], ids=["strict", "commas-dollars", "flexible-only", "none", "negative", "decimal"])
def test_extract(completion, expected):
  assert gsm8k.extract(completion) == expected


def test_exact_match_on_a_fixture():
  answers = {r["question"]: c for r, c in zip(ROWS, [" 3 + 4 = 7\n#### 7", " 1200 / 3 = 400 so 400", " #### 31"])}
  seen = {}

  def generate(prompts, *, num_samples, temperature, top_p, max_new_tokens, stop):
    seen.update(num_samples=num_samples, temperature=temperature, stop=stop)
    return [[answers[p.rsplit("Question: ", 1)[1].removesuffix("\nAnswer:")]] for p in prompts]

  report = gsm8k.evaluate(generate, ROWS)
  assert report["metrics"] == {"exact_match": pytest.approx(1 / 3), "exact_match_flexible": pytest.approx(2 / 3)}
  assert seen == {"num_samples": 1, "temperature": 0.0, "stop": list(gsm8k.STOP)}
  assert [s["target"] for s in report["samples"]] == ["7", "400", "30"]
  assert [s["completion"] for s in report["samples"]] == [" 3 + 4 = 7\n#### 7", " 1200 / 3 = 400 so 400", " #### 31"]
  without = gsm8k.evaluate(generate, ROWS, keep_samples=False)
  assert "samples" not in without and without["metrics"] == report["metrics"]


def test_task_runs_end_to_end_on_a_tiny_model(tiny_long, tmp_path):
  folder, _ = tiny_long
  data = tmp_path / "gsm8k.jsonl"
  data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
  out = tmp_path / "r.json"
  assert cli.main(["eval", "--model", str(folder), "--tasks", "gsm8k", "--data", f"gsm8k={data}", "--limit", "2",
                   "--max-new-tokens", "8", "--gen-batch-size", "2", "--out", str(out), "--no-samples"]) == 0
  result = json.loads(out.read_text())["tasks"]["gsm8k"]
  assert result["num_examples"] == 2 and result["metrics"]["exact_match"] == 0.0
  assert "samples" not in result


def test_missing_data_names_the_format(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("JAXPRUNE_DATA", str(tmp_path))
  from jaxprune.evals import data

  with pytest.raises(Exception, match=r"pass --data gsm8k=FILE with GSM8K rows .*question, answer"):
    data.load_rows("gsm8k", None, gsm8k.LAYOUT)
