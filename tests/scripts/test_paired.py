"""scripts/_paired.py: McNemar's exact test and the pooled randomization test against scipy's binomial test."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from _paired import paired_test, pooled_test  # noqa: E402

HUMANEVAL = ("humaneval", "humaneval-java", "humaneval-cpp", "humaneval-js")
LANGUAGE_OF = dict(zip(HUMANEVAL, ("python", "java", "cpp", "javascript")))


def test_paired_test_is_mcnemars_exact_test():
  a = {"problems": 10, "solved": ["1", "2", "3", "4", "5"]}
  b = {"problems": 10, "solved": ["1", "6"]}
  r = paired_test(a, b)
  assert (r["only_a"], r["only_b"]) == (4, 1) and r["difference"] == pytest.approx(0.3)
  assert r["p"] == pytest.approx(2 * (1 + 5) / 2**5)  # two-sided exact binomial of 4 in 5 at 1/2
  assert paired_test(a, a)["p"] == 1.0
  assert paired_test(a, {"problems": 10, "pass@1": 0.2}) is None  # no per-problem results


def test_pooled_test_is_the_exact_sign_test_for_two_sub_models():
  from scipy.stats import binomtest

  ids = [f"HumanEval/{i}" for i in range(40)]
  java = {"problems": 40, "solved": ids[:12] + ids[20:25]}  # 12 only-diagonal, 5 both
  python = {"problems": 40, "solved": ids[20:28]}  # 3 only-other
  he = {"dense": {}, "wanda50-java": {"humaneval-java": java}, "wanda50-python": {"humaneval-java": python}}
  problems = {t: ids for t in HUMANEVAL}
  pooled = pooled_test(he, problems, LANGUAGE_OF)
  assert pooled["columns"] == ["humaneval-java"] and pooled["problems"] == 40
  assert pooled["advantage"] == pytest.approx((12 - 3) / 40) and pooled["diagonal_best"] == 1
  assert pooled["p"] == pytest.approx(binomtest(12, 15, 0.5, alternative="greater").pvalue, abs=0.006)
  assert pooled["ci95"][0] < pooled["advantage"] < pooled["ci95"][1]
  same = pooled_test({"wanda50-java": {"humaneval-java": java}, "wanda50-python": {"humaneval-java": java}},
                     problems, LANGUAGE_OF)
  assert same["advantage"] == 0 and same["p"] == 1.0
  assert pooled_test({"wanda50-java": {"humaneval-java": java}}, problems, LANGUAGE_OF) is None


def test_pooled_test_shuffles_a_problems_translations_together():
  ids = [f"HumanEval/{i}" for i in range(30)]
  # the Java sub-model solves 0-9 in Java, the Python sub-model 0-9 in Python: the same problems, so one
  # shuffle per problem moves both columns' results at once
  first, none = {"problems": 30, "solved": ids[:10]}, {"problems": 30, "solved": []}
  he = {"wanda50-java": {"humaneval-java": first, "humaneval": none},
        "wanda50-python": {"humaneval-java": none, "humaneval": first}}
  pooled = pooled_test(he, {t: ids for t in HUMANEVAL}, LANGUAGE_OF, resamples=2000)
  assert pooled["columns"] == ["humaneval", "humaneval-java"] and pooled["problems"] == 60
  assert pooled["advantage"] == pytest.approx(20 / 60) and pooled["diagonal_best"] == 2
  # a shuffle gives each of the 10 problems +2/60 or -2/60 at once: p = P(all 10 positive) = 2**-10
  assert pooled["p"] == pytest.approx(1 / 1024, abs=0.0015)
