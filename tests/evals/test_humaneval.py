"""HumanEval: data, truncation, pass@k, and whole runs through the sandbox."""

from __future__ import annotations

import json
import math

import pytest

from jaxprune.evals import codegen, humaneval, sandbox, tasks
from jaxprune.evals.codegen import SamplingConfig
from jaxprune.evals.humaneval import HumanEvalConfig
from jaxprune.errors import JaxpruneError

PROBLEMS = humaneval.load_problems()
GREEDY = HumanEvalConfig(sampling=SamplingConfig.greedy())


def test_problems_load():
  assert len(PROBLEMS) == 164
  assert PROBLEMS[0].task_id == "HumanEval/0" and PROBLEMS[-1].task_id == "HumanEval/163"
  assert all(p.prompt and p.tests and p.entry_point and p.canonical_solution for p in PROBLEMS)


# --------------------------------------------------------------------------- #
# Whole runs (CI: 2 cores)
# --------------------------------------------------------------------------- #


def test_canonical_solutions_pass_all():
  completions = {p.task_id: [p.canonical_solution] for p in PROBLEMS}
  report = humaneval.score_completions(completions, config=GREEDY)
  failing = [t for t, e in report["per_problem"].items() if e["correct"] != 1]
  assert failing == [] and report["metrics"] == {"pass@1": 1.0}
  assert report["num_problems"] == 164 and report["timings"]["programs"] == 164
  json.dumps(report)  # JSON-ready


def test_empty_completions_score_zero():
  report = humaneval.score_completions({p.task_id: [""] for p in PROBLEMS}, config=GREEDY)
  assert report["metrics"] == {"pass@1": 0.0}
  assert sum(e["statuses"].get("failed", 0) for e in report["per_problem"].values()) == 164


HOSTILE = {
    "write-outside": "open({outside!r}, 'w').write('pwned')",
    "socket": "__import__('socket').create_connection(('127.0.0.1', 9), timeout=1)",
    "fork-bomb": "import os\n    while True:\n        try: os.fork()\n        except OSError: pass",
    "infinite-loop": "while True: pass",
    "alloc-50GB": "x = bytearray(50 * 2**30)",
    "kill-parent": "import os, signal; os.kill(os.getppid(), signal.SIGKILL)",
    "delete-parent": "import os; [os.remove(os.path.join('..', f)) for f in os.listdir('..')]",
    "exit-0-before-tests-end": "import os; os._exit(0)",
}


def test_hostile_completions_fail_and_the_run_goes_on(tmp_path):
  """Hostile bodies in front of correct ones: each is contained and counted as a failure."""
  outside = tmp_path / "escaped.txt"
  root = tmp_path / "root"
  root.mkdir()
  (root / "sentinel").write_text("keep")
  problems = PROBLEMS[:12]
  hostile = dict(zip((p.task_id for p in problems), HOSTILE.items()))
  completions = {}
  for p in problems:
    if p.task_id in hostile:
      body = HOSTILE[hostile[p.task_id][0]].format(outside=str(outside))
      completions[p.task_id] = ["    " + body + "\n" + p.canonical_solution]
    else:
      completions[p.task_id] = [p.canonical_solution]
  config = HumanEvalConfig(
      sampling=SamplingConfig.greedy(), limit=12, sandbox=sandbox.SandboxConfig(timeout_s=3, tmp_root=str(root)),
  )
  report = humaneval.score_completions(completions, config=config)
  for task_id, entry in report["per_problem"].items():
    expected = 0 if task_id in hostile else 1
    assert entry["correct"] == expected, (task_id, hostile.get(task_id), entry)
  assert report["metrics"]["pass@1"] == pytest.approx((12 - len(HOSTILE)) / 12)
  assert not outside.exists() and (root / "sentinel").read_text() == "keep"


# --------------------------------------------------------------------------- #
# Sampling through a generator
# --------------------------------------------------------------------------- #

WRONG = "    return None\n"


def fake_generator(correct: dict[str, int], calls: list):
  """n samples per prompt, the first correct[task] of them the canonical solution."""
  by_prompt = {p.prompt: p for p in PROBLEMS}

  def generate(prompts, *, num_samples, temperature, top_p, max_new_tokens, stop):
    calls.append(dict(n=num_samples, t=temperature, p=top_p, m=max_new_tokens, stop=stop, prompts=len(prompts)))
    out = []
    for prompt in prompts:
      p = by_prompt[prompt]
      c = correct[p.task_id]
      # Trailing text past a stop sequence must be cut off before running.
      good = p.canonical_solution + "\ndef junk(:\n"
      out.append([good] * c + [WRONG] * (num_samples - c))
    return out

  return generate


def test_evaluate_paper_defaults():
  ids = ("HumanEval/0", "HumanEval/2", "HumanEval/7")
  correct = {"HumanEval/0": 20, "HumanEval/2": 3, "HumanEval/7": 0}
  calls = []
  report = humaneval.evaluate(fake_generator(correct, calls), "humaneval", HumanEvalConfig(task_ids=ids))
  assert calls == [dict(n=20, t=0.8, p=0.95, m=512, stop=list(humaneval.STOP), prompts=3)]
  assert [e["correct"] for e in report["per_problem"].values()] == [20, 3, 0]
  pass1 = (1 + 3 / 20 + 0) / 3
  pass10 = (1 + (1 - math.comb(17, 10) / math.comb(20, 10)) + 0) / 3
  assert report["metrics"] == pytest.approx({"pass@1": pass1, "pass@10": pass10})
  assert report["config"]["sampling"]["num_samples"] == 20 and report["task"] == "humaneval"
  assert {"generate_s", "execute_s", "total_s"} <= set(report["timings"])
  assert report["sandbox"]["network"] in ("net-ns", "audit-hook")
  json.dumps(report)


def test_evaluate_greedy():
  calls = []
  report = humaneval.evaluate(fake_generator({"HumanEval/0": 1}, calls), config=HumanEvalConfig(
      sampling=SamplingConfig.greedy(), task_ids=("HumanEval/0",), keep_samples=True,
  ))
  assert calls[0]["n"] == 1 and calls[0]["t"] == 0.0
  assert report["metrics"] == {"pass@1": 1.0}
  assert "def junk" not in report["per_problem"]["HumanEval/0"]["samples"][0]["completion"]


def test_chat_prompting_opens_a_code_block_and_stops_at_its_fence():
  seen = {}

  def generate(prompts, *, num_samples, stop, **_):
    seen.update(prompts=prompts, stop=stop)
    return [[PROBLEMS[0].canonical_solution + "```\nThis function checks pairs.\n"] for _ in prompts]

  report = humaneval.evaluate(generate, config=HumanEvalConfig(
      sampling=SamplingConfig.greedy(), task_ids=("HumanEval/0",), keep_samples=True, chat=True))
  (prompt,) = seen["prompts"]
  assert prompt.answer_prefix == "```python\n" + PROBLEMS[0].prompt
  assert prompt.user.startswith("Complete the following Python function.\n```python\nfrom typing import List")
  assert codegen.CHAT_FENCE in seen["stop"] and "\ndef " in seen["stop"]
  assert report["metrics"] == {"pass@1": 1.0}
  assert "```" not in report["per_problem"]["HumanEval/0"]["samples"][0]["completion"]


STORED = {  # task id: (completion, its status)
    "HumanEval/0": (PROBLEMS[0].canonical_solution + "\ndef junk(:\n", "passed"),
    "HumanEval/1": ("    print('looking', file=__import__('sys').stderr)\n    return []\n", "failed"),
    "HumanEval/2": ("    while True:\n        pass\n", "timeout"),
    "HumanEval/3": ("    return )(\n", "failed"),
}


@pytest.mark.parametrize("keep", [True, False], ids=["samples", "no-samples"])
def test_samples_keep_completion_status_and_output(keep):
  by_id = {p.task_id: p for p in PROBLEMS}
  generate = codegen.from_completions({by_id[t].prompt: [c] for t, (c, _) in STORED.items()})
  config = HumanEvalConfig(sampling=SamplingConfig.greedy(), task_ids=tuple(STORED), keep_samples=keep,
                           sandbox=sandbox.SandboxConfig(timeout_s=3))
  report = humaneval.evaluate(generate, "humaneval", config)
  per_problem = report["per_problem"]
  assert {t: e["statuses"] for t, e in per_problem.items()} == {t: {s: 1} for t, (_, s) in STORED.items()}
  assert [e["num_samples"] for e in per_problem.values()] == [1, 1, 1, 1]
  json.dumps(report)
  if not keep:
    assert all(set(e) == {"num_samples", "correct", "statuses"} for e in per_problem.values())
    return
  samples = {t: e["samples"] for t, e in per_problem.items()}
  assert all(len(s) == 1 for s in samples.values())
  passed, failed, timeout, syntax = (s[0] for s in samples.values())
  assert passed == {"completion": PROBLEMS[0].canonical_solution, "status": "passed", "output": ""}
  assert failed["completion"] == STORED["HumanEval/1"][0]
  assert failed["output"].startswith("looking\n") and failed["output"].rstrip().endswith("AssertionError")
  assert timeout["status"] == "timeout" and timeout["completion"] == STORED["HumanEval/2"][0]
  assert "SyntaxError" in syntax["output"]
  lines = tasks.failure_lines({"tasks": {"humaneval": report}, "config": {"samples": True, "out": "he.json"}})
  assert lines == [
      "humaneval: 1/4 passed; failed 2 (HumanEval/1, HumanEval/3), timeout 1 (HumanEval/2)",
      "completions, statuses and output tails: he.json, at tasks.<task>.per_problem.<task id>.samples",
  ]


def test_output_tail_is_bounded_and_drops_the_success_marker():
  program = sandbox.Program({}, (), success_marker="MARK")
  result = sandbox.SandboxResult("passed", 0, "x" * 3000 + "\nMARK\n", "warn", 1.0, (), "none")
  assert codegen.output_tail(program, result) == ("x" * 3000 + "\nwarn")[-codegen.OUTPUT_CHARS:]
  assert codegen.output_tail(program, result, chars=9) == "xxxx\nwarn"
  no_newline = sandbox.SandboxResult("failed", 1, "out", "err", 1.0, (), "none")
  assert codegen.output_tail(program, no_newline) == "out\nerr"


def test_generator_returning_wrong_shape():
  bad = lambda prompts, **kw: [["x"]] * len(prompts)
  with pytest.raises(ValueError, match="expected 20 per prompt"):
    humaneval.evaluate(bad, config=HumanEvalConfig(limit=2))


# --------------------------------------------------------------------------- #
# Pieces
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("    return 1\n", "    return 1\n"),
        ("    return 1\ndef other():\n    pass", "    return 1"),
        ("    return 1\n\n\nif __name__ == '__main__':\n    main()", "    return 1\n\n"),
        ("    return 1\nprint(f(2))", "    return 1"),
        ("    return 1\n# test\n", "    return 1"),
        ("    return 1\nclass A: pass", "    return 1"),
        ("    def inner():\n        pass\n    return inner", "    def inner():\n        pass\n    return inner"),
        ("    if x:\n        return 1\n    # note\n    return 2", "    if x:\n        return 1\n    # note\n    return 2"),
        ("", ""),
    ],
    ids=["no-stop", "def", "if-main", "print", "comment", "class", "nested-def-kept", "indented-kept", "empty"],
)
def test_truncate(completion, expected):
  assert codegen.truncate(completion, humaneval.STOP) == expected


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 1, 0.4),
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (20, 3, 10, 1 - 19448 / 184756),  # 1 - C(17,10)/C(20,10)
        (20, 0, 10, 0.0),
        (20, 20, 1, 1.0),
        (10, 1, 10, 1.0),  # n - c < k: every draw of 10 holds the correct one
        (1, 1, 1, 1.0),
    ],
    ids=["n5c2k1", "n5c2k2", "n20c3k10", "none-correct", "all-correct", "n-c<k", "greedy"],
)
def test_pass_at_k_single_problem(n, c, k, expected):
  assert codegen.pass_at_k([n], [c], [k])[f"pass@{k}"] == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_means_over_problems_and_skips_large_k():
  metrics = codegen.pass_at_k([5, 5], [2, 5], [1, 2, 6])
  assert metrics == pytest.approx({"pass@1": (0.4 + 1.0) / 2, "pass@2": (0.7 + 1.0) / 2})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_samples=0), "at least 1 sample"),
        (dict(num_samples=5, ks=(1, 10)), "1 <= k <= num_samples=5"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
    ],
    ids=["no-samples", "k-too-large", "negative-temperature", "zero-top-p"],
)
def test_sampling_config_errors(kwargs, message):
  with pytest.raises(JaxpruneError, match=message) as err:
    SamplingConfig(**kwargs)
  assert "\n" not in str(err.value)


def test_user_errors(tmp_path):
  with pytest.raises(JaxpruneError, match="no HumanEval file"):
    humaneval.load_problems(tmp_path / "missing.jsonl")
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"task_id": "x"}) + "\n")
  with pytest.raises(JaxpruneError, match="is not HumanEval JSONL"):
    humaneval.load_problems(bad)
  with pytest.raises(JaxpruneError, match="unknown code task"):
    humaneval.language("humaneval-cobol")
  with pytest.raises(JaxpruneError, match="unknown task id"):
    humaneval.select(PROBLEMS, HumanEvalConfig(task_ids=("HumanEval/999",)))
  with pytest.raises(JaxpruneError, match="no completions for 163 problems"):
    humaneval.score_completions({"HumanEval/0": [""]})


def test_local_problem_file(tmp_path):
  path = tmp_path / "mini.jsonl"
  rows = [
      {"task_id": "Mini/0", "prompt": "def inc(x):\n", "entry_point": "inc",
       "test": "def check(f):\n    assert f(1) == 2\n", "canonical_solution": "    return x + 1\n"},
  ]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  config = HumanEvalConfig(sampling=SamplingConfig.greedy(), problems_path=str(path))
  report = humaneval.score_completions({"Mini/0": ["    return x + 1\n"]}, config=config)
  assert report["metrics"] == {"pass@1": 1.0}
