"""HumanEval in Java, C++ and JavaScript: types, literals, prompts, harnesses, runs."""

from __future__ import annotations

import json
import math

import pytest

from jaxprune.evals import codegen, humaneval, multipl, sandbox, tasks
from jaxprune.evals import translate as tr
from jaxprune.evals.translate import BOOL, FLOAT, INT, NONE, STR, UNKNOWN, Type, Untranslatable, list_of, optional
from jaxprune.errors import JaxpruneError

PY = {p.task_id: p for p in humaneval.load_problems()}
JAVA, CPP, JS = (multipl.language(n) for n in ("java", "cpp", "js"))


def tup(*args: Type) -> Type:
  return Type("tuple", args)


def dict_of(k: Type, v: Type) -> Type:
  return Type("dict", (k, v))


# --------------------------------------------------------------------------- #
# Types
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "value, expected",
    [
        (3, INT), (2.5, FLOAT), (True, BOOL), ("s", STR), (None, NONE),
        ([1, 2.5], list_of(FLOAT)), ([], list_of(UNKNOWN)), ((1, "a"), tup(INT, STR)),
        ({"a": 1}, dict_of(STR, INT)), ([None, 1], list_of(optional(INT))),
        ([[1], []], list_of(list_of(INT))), ([(1, 2), (3, 4.5)], list_of(tup(INT, FLOAT))),
    ],
    ids=["int", "float", "bool", "str", "none", "int+float", "empty-list", "tuple", "dict", "optional",
         "nested-list", "list-of-tuples"],
)
def test_type_of(value, expected):
  assert tr.type_of(value) == expected


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (tup(STR, STR), tup(), list_of(STR)),
        (optional(INT), NONE, optional(INT)),
        (list_of(UNKNOWN), list_of(STR), list_of(STR)),
        (dict_of(STR, INT), dict_of(UNKNOWN, UNKNOWN), dict_of(STR, INT)),
        (tup(NONE, INT), tup(INT, NONE), tup(optional(INT), optional(INT))),
    ],
    ids=["tuples-of-other-lengths-are-lists", "optional-none", "unknown-elements", "empty-dict", "tuple-optionals"],
)
def test_unify(a, b, expected):
  assert tr.unify(a, b) == expected == tr.unify(b, a)


@pytest.mark.parametrize("a, b", [(INT, STR), (list_of(INT), STR), (BOOL, INT)], ids=["int-str", "list-str", "bool-int"])
def test_unify_fails(a, b):
  with pytest.raises(Untranslatable):
    tr.unify(a, b)


@pytest.mark.parametrize(
    "annotation, expected",
    [("List[int]", list_of(INT)), ("Optional[str]", optional(STR)), ("Tuple[int, int]", tup(INT, INT)),
     ("Dict[str, int]", dict_of(STR, INT)), ("list", list_of(UNKNOWN)), ("Any", UNKNOWN), ("float", FLOAT)],
    ids=["List", "Optional", "Tuple", "Dict", "bare-list", "Any", "float"],
)
def test_annotations(annotation, expected):
  import ast

  assert tr.annotation_type(ast.parse(annotation, mode="eval").body) == expected


def test_infer_types_drops_an_outlier_argument_but_not_mixed_results():
  sig = tr.signature(PY["HumanEval/78"].prompt, "hex_key")
  cases = tr.cases(PY["HumanEval/78"].tests)
  params, result, kept = tr.infer_types(sig, cases)
  assert (params, result, len(cases) - len(kept)) == ((STR,), INT, 1)  # the stray `candidate([])`
  with pytest.raises(Untranslatable, match="result"):
    tr.infer_types(tr.signature(PY["HumanEval/103"].prompt, "rounded_avg"), tr.cases(PY["HumanEval/103"].tests))


def test_cases_from_assertions():
  tests = """
def check(candidate):
    assert candidate(1) == 2
    assert abs(candidate(1.0) - 2.0 / 4.0) < 1e-6
    assert candidate("x")
    assert not candidate("y"), "message"
    assert candidate(2) is None
    assert tuple(candidate([1])) == tuple([1])
    assert True
    for i in range(3):
        assert candidate(i) == i
    assert candidate(x) == 1
    assert candidate(1) == helper(1)
"""
  assert tr.cases(tests) == [
      tr.Case((1,), 2), tr.Case((1.0,), 0.5, 1e-6), tr.Case(("x",), True), tr.Case(("y",), False),
      tr.Case((2,), None), tr.Case(([1],), (1,)),
  ]


# --------------------------------------------------------------------------- #
# Literals and types per language
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "target, value, t, expected",
    [
        (JAVA, 3, INT, "3l"), (JAVA, 3, FLOAT, "3.0"), (JAVA, -0.25, FLOAT, "-0.25"), (JAVA, True, BOOL, "true"),
        (JAVA, 'a"b\n\x01é', STR, '"a\\"b\\n\\001é"'),
        (JAVA, [1, 2], list_of(INT), "new ArrayList<Long>(Arrays.asList(1l, 2l))"),
        (JAVA, [], list_of(STR), "new ArrayList<String>(Arrays.asList())"),
        (JAVA, [[1.5]], list_of(list_of(FLOAT)),
         "new ArrayList<ArrayList<Double>>(Arrays.asList(new ArrayList<Double>(Arrays.asList(1.5))))"),
        (JAVA, {"a": 1}, dict_of(STR, INT), 'new HashMap<String,Long>(Map.ofEntries(Map.entry("a", 1l)))'),
        (JAVA, (1, 2.0), tup(INT, FLOAT), "Pair.with(1l, 2.0)"),
        (JAVA, None, optional(INT), "Optional.empty()"), (JAVA, "x", optional(STR), 'Optional.of("x")'),
        (JAVA, ("a", "b"), list_of(STR), 'new ArrayList<String>(Arrays.asList("a", "b"))'),
        (CPP, 3, INT, "3"), (CPP, 125411328000, INT, "125411328000"), (CPP, 3, FLOAT, "3.0"),
        (CPP, "a\\b", STR, 'std::string("a\\\\b")'), (CPP, False, BOOL, "false"),
        (CPP, [1, 2], list_of(INT), "std::vector<long>({1, 2})"), (CPP, [], list_of(INT), "std::vector<long>()"),
        (CPP, {"k": [1]}, dict_of(STR, list_of(INT)),
         'std::map<std::string, std::vector<long>>({{std::string("k"), std::vector<long>({1})}})'),
        (CPP, (None, 1), tup(optional(INT), optional(INT)),
         "std::tuple<std::optional<long>, std::optional<long>>(std::nullopt, std::optional<long>(1))"),
        (JS, None, None, "undefined"), (JS, (1, 2.5), None, "[1, 2.5]"), (JS, {"a": [True]}, None, '{"a": [true]}'),
        (JS, {5: "x"}, None, '{5: "x"}'), (JS, "é\n", None, '"é\\n"'), (JS, 1e-06, None, "1e-06"),
    ],
    ids=lambda v: v.name if isinstance(v, multipl.Target) else None,
)
def test_literals(target, value, t, expected):
  assert target.literal(value, t) == expected


@pytest.mark.parametrize(
    "target, t, expected",
    [
        (JAVA, list_of(optional(STR)), "ArrayList<Optional<String>>"), (JAVA, tup(INT, FLOAT), "Pair<Long, Double>"),
        (JAVA, dict_of(STR, BOOL), "HashMap<String,Boolean>"), (JAVA, FLOAT, "double"),
        (CPP, dict_of(STR, list_of(INT)), "std::map<std::string, std::vector<long>>"),
        (CPP, tup(FLOAT, STR), "std::tuple<double, std::string>"), (CPP, optional(BOOL), "std::optional<bool>"),
    ],
    ids=["java-list-optional", "java-pair", "java-map", "java-double", "cpp-map", "cpp-tuple", "cpp-optional"],
)
def test_types(target, t, expected):
  assert target.type(t) == expected


@pytest.mark.parametrize(
    "target, value, t",
    [(JAVA, 2**63, INT), (CPP, -(2**63) - 1, INT), (JS, 2**53 + 1, None), (JAVA, math.inf, FLOAT),
     (JAVA, (1, 2, 3), tup(INT, INT, INT)), (JS, {(1, 2): 3}, None)],
    ids=["java-int64", "cpp-int64", "js-2^53", "inf", "java-triple", "js-tuple-key"],
)
def test_untranslatable_literals(target, value, t):
  with pytest.raises(Untranslatable):
    target.literal(value, t)


# --------------------------------------------------------------------------- #
# Problems
# --------------------------------------------------------------------------- #

HELPERS = {"HumanEval/10", "HumanEval/32", "HumanEval/38", "HumanEval/50"}


@pytest.mark.parametrize("target", [JAVA, CPP, JS], ids=["java", "cpp", "js"])
def test_translation_counts(target):
  problems, excluded = target.problems()
  assert len(problems) + len(excluded) == 164
  assert HELPERS <= set(excluded) and all(excluded.values())
  assert len(problems) >= 155  # MultiPL-E kept 158-161


def test_prompts_and_harnesses():
  java = multipl.translate(JAVA, PY["HumanEval/0"])
  assert java.prompt.endswith(
      "    public static boolean hasCloseElements(ArrayList<Double> numbers, double threshold) {\n")
  assert "    // >>> hasCloseElements(new ArrayList<Double>(Arrays.asList(1.0, 2.0, 3.0)), 0.5)\n    // false\n" in java.prompt
  assert java.tests.startswith("    }\n    public static void main(String[] args) {\n    assert(hasCloseElements(")
  cpp = multipl.translate(CPP, PY["HumanEval/23"])
  assert cpp.prompt.endswith("long strlen(std::string string) {\n")
  assert "long (*candidate)(std::string) = strlen;" in cpp.tests
  js = multipl.translate(JS, PY["HumanEval/160"])
  assert js.prompt.endswith("function do_algebra(operator, operand){\n")
  assert multipl.translate(CPP, PY["HumanEval/160"]).prompt.endswith(
      "long do_algebra(std::vector<std::string> operator_, std::vector<long> operand) {\n")


def test_calls_a_language_cannot_tell_apart_are_dropped():
  js = multipl.translate(JS, PY["HumanEval/92"])  # any_int(3, 4, 7) is True, any_int(3.0, 4, 7) False
  assert "candidate(3, 4, 7)" not in js.tests and "candidate(3.0, 4, 7)" not in js.tests
  assert "candidate(2, 3, 1),true" in js.tests


# --------------------------------------------------------------------------- #
# Running: a correct solution passes, a wrong one fails
# --------------------------------------------------------------------------- #

SOLUTIONS = {
    "java": {
        "HumanEval/0": ("        for (int i = 0; i < numbers.size(); i++)\n"
                        "            for (int j = i + 1; j < numbers.size(); j++)\n"
                        "                if (Math.abs(numbers.get(i) - numbers.get(j)) < threshold) return true;\n"
                        "        return false;\n", "        return false;\n"),
        "HumanEval/2": ("        return number - Math.floor(number);\n", "        return number;\n"),
        "HumanEval/12": ("        if (strings.isEmpty()) return Optional.empty();\n        String best = strings.get(0);\n"
                         "        for (String s : strings) if (s.length() > best.length()) best = s;\n"
                         "        return Optional.of(best);\n", "        return Optional.empty();\n"),
        "HumanEval/20": ("        double best = Double.MAX_VALUE; Pair<Double, Double> out = null;\n"
                         "        for (int i = 0; i < numbers.size(); i++) for (int j = i + 1; j < numbers.size(); j++) {\n"
                         "            double a = numbers.get(i), b = numbers.get(j);\n"
                         "            if (Math.abs(a - b) < best) { best = Math.abs(a - b); out = Pair.with(Math.min(a, b), Math.max(a, b)); }\n"
                         "        }\n        return out;\n", "        return Pair.with(numbers.get(0), numbers.get(1));\n"),
        "HumanEval/111": ("        HashMap<String, Long> counts = new HashMap<>();\n"
                          "        for (String w : test.split(\" \")) if (!w.isEmpty()) counts.merge(w, 1L, Long::sum);\n"
                          "        long most = counts.values().stream().mapToLong(x -> x).max().orElse(0);\n"
                          "        HashMap<String, Long> out = new HashMap<>();\n"
                          "        for (var e : counts.entrySet()) if (e.getValue() == most) out.put(e.getKey(), e.getValue());\n"
                          "        return out;\n", "        return new HashMap<String, Long>();\n"),
        "HumanEval/136": ("        Optional<Long> neg = Optional.empty(), pos = Optional.empty();\n        for (long x : lst) {\n"
                          "            if (x < 0 && (neg.isEmpty() || x > neg.get())) neg = Optional.of(x);\n"
                          "            if (x > 0 && (pos.isEmpty() || x < pos.get())) pos = Optional.of(x);\n"
                          "        }\n        return Pair.with(neg, pos);\n",
                          "        return Pair.with(Optional.empty(), Optional.empty());\n"),
    },
    "cpp": {
        "HumanEval/0": ("    for (size_t i = 0; i < numbers.size(); i++)\n        for (size_t j = i + 1; j < numbers.size(); j++)\n"
                        "            if (std::abs(numbers[i] - numbers[j]) < threshold) return true;\n    return false;\n",
                        "    return false;\n"),
        "HumanEval/2": ("    return number - std::floor(number);\n", "    return number;\n"),
        "HumanEval/12": ("    if (strings.empty()) return std::nullopt;\n    std::string best = strings[0];\n"
                         "    for (auto& s : strings) if (s.size() > best.size()) best = s;\n    return best;\n",
                         "    return std::nullopt;\n"),
        "HumanEval/20": ("    double best = 1e300; std::tuple<double, double> out;\n"
                         "    for (size_t i = 0; i < numbers.size(); i++) for (size_t j = i + 1; j < numbers.size(); j++) {\n"
                         "        double a = numbers[i], b = numbers[j];\n"
                         "        if (std::abs(a - b) < best) { best = std::abs(a - b); out = {std::min(a, b), std::max(a, b)}; }\n"
                         "    }\n    return out;\n", "    return {numbers[0], numbers[1]};\n"),
        "HumanEval/111": ("    std::map<std::string, long> counts; std::stringstream ss(test); std::string w;\n"
                          "    while (ss >> w) counts[w]++;\n    long most = 0; for (auto& [k, v] : counts) most = std::max(most, v);\n"
                          "    std::map<std::string, long> out; for (auto& [k, v] : counts) if (v == most) out[k] = v;\n"
                          "    return out;\n", "    return {};\n"),
        "HumanEval/136": ("    std::optional<long> neg, pos;\n    for (long x : lst) {\n"
                          "        if (x < 0 && (!neg || x > *neg)) neg = x;\n        if (x > 0 && (!pos || x < *pos)) pos = x;\n"
                          "    }\n    return {neg, pos};\n", "    return {std::nullopt, std::nullopt};\n"),
    },
    "js": {
        "HumanEval/0": ("  for (let i = 0; i < numbers.length; i++)\n    for (let j = i + 1; j < numbers.length; j++)\n"
                        "      if (Math.abs(numbers[i] - numbers[j]) < threshold) return true;\n  return false;\n}\n",
                        "  return false;\n}\n"),
        "HumanEval/2": ("  return number % 1.0;\n}\n", "  return number;\n}\n"),
        "HumanEval/12": ("  if (strings.length === 0) return undefined;\n"
                         "  return strings.reduce((a, b) => b.length > a.length ? b : a);\n}\n", "  return strings[0];\n}\n"),
        "HumanEval/20": ("  let best = Infinity, out = null;\n"
                         "  for (let i = 0; i < numbers.length; i++) for (let j = i + 1; j < numbers.length; j++) {\n"
                         "    const a = numbers[i], b = numbers[j];\n"
                         "    if (Math.abs(a - b) < best) { best = Math.abs(a - b); out = [Math.min(a, b), Math.max(a, b)]; }\n"
                         "  }\n  return out;\n}\n", "  return [numbers[0], numbers[1]];\n}\n"),
        "HumanEval/111": ("  const counts = {};\n  for (const w of test.split(' ')) if (w) counts[w] = (counts[w] || 0) + 1;\n"
                          "  const most = Math.max(0, ...Object.values(counts));\n  const out = {};\n"
                          "  for (const [k, v] of Object.entries(counts)) if (v === most) out[k] = v;\n  return out;\n}\n",
                          "  return {};\n}\n"),
        "HumanEval/136": ("  const neg = lst.filter(x => x < 0), pos = lst.filter(x => x > 0);\n"
                          "  return [neg.length ? Math.max(...neg) : undefined, pos.length ? Math.min(...pos) : undefined];\n}\n",
                          "  return [undefined, undefined];\n}\n"),
    },
}
BROKEN = {  # for truncate_number: a compile (or syntax) error, an endless loop, exit(0) before the tests end
    "java": ("        return 1 +;\n", "        while (true) {}\n", "        System.exit(0);\n        return 0.5;\n"),
    "cpp": ("    return 1 +;\n", "    while (true) {}\n", "    exit(0);\n"),
    "js": ("  return 1 +;\n}\n", "  while (true) {}\n}\n", "  process.exit(0);\n}\n"),
}


@pytest.mark.parametrize("name", ["java", "cpp", "js"])
def test_correct_passes_wrong_fails(name):
  target = multipl.language(name)
  problems = [multipl.translate(target, PY[t]) for t in SOLUTIONS[name]]
  completions = [list(SOLUTIONS[name][p.task_id]) for p in problems]
  problems.append(multipl.translate(target, PY["HumanEval/2"]))
  completions.append(list(BROKEN[name]))
  config = dataclasses_replace(target.sandbox, timeout_s=20, cpu_s=4)
  report = codegen.score(problems, completions, target, sandbox_config=config, keep_samples=True)
  per_problem = report["per_problem"]  # the second HumanEval/2 adds its samples to the first's
  statuses = {t: [s["status"] for s in e["samples"]] for t, e in per_problem.items()}
  expected = {t: ["passed", "failed"] for t in SOLUTIONS[name]}
  syntax = "failed" if name == "js" else "compile_error"  # node reads the source only when it runs it
  expected["HumanEval/2"] = ["passed", "failed", syntax, "timeout", "failed"]
  assert statuses == expected, [s for e in per_problem.values() for s in e["samples"] if s["status"] != "passed"][:2]
  assert {t: e["statuses"] for t, e in per_problem.items()} == {
      t: {s: v.count(s) for s in v} for t, v in expected.items()}
  samples = per_problem["HumanEval/2"]["samples"]
  assert [s["completion"] for s in samples] == [*SOLUTIONS[name]["HumanEval/2"], *BROKEN[name]]
  passed, wrong, broken, _, early_exit = (s["output"] for s in samples)
  assert "jaxprune-tests-passed" not in passed  # the success marker's line is left out
  assert {"java": "AssertionError", "cpp": "Assertion `", "js": "AssertionError"}[name] in wrong
  assert {"java": "error: illegal start of expression", "cpp": "error: expected primary-expression",
          "js": "SyntaxError"}[name] in broken
  assert "without printing its success marker" in early_exit
  assert all(len(s["output"]) <= codegen.OUTPUT_CHARS for e in per_problem.values() for s in e["samples"])
  wrong_ids = ", ".join(list(SOLUTIONS[name])[:5]) + ", …"
  tail = "failed 8" if name == "js" else "failed 7"
  tail += f" ({wrong_ids})" + ("" if name == "js" else ", compile error 1 (HumanEval/2)") + ", timeout 1 (HumanEval/2)"
  report = {"tasks": {f"humaneval-{name}": report}, "config": {"samples": True, "out": "r.json"}}
  assert tasks.failure_lines(report)[0] == f"humaneval-{name}: 6/15 samples passed; {tail}"


def dataclasses_replace(config: sandbox.SandboxConfig, **changes) -> sandbox.SandboxConfig:
  import dataclasses

  return dataclasses.replace(config, **changes)


# --------------------------------------------------------------------------- #
# MultiPL-E files
# --------------------------------------------------------------------------- #


def test_multipl_e_file(tmp_path):
  row = {
      "name": "HumanEval_53_add", "language": "js", "prompt": "//Add two numbers x and y\nfunction add(x, y){\n",
      "doctests": "transform", "original": "x", "prompt_terminology": "reworded",
      "tests": "const assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = add;\n"
               "  assert.deepEqual(candidate(0, 1),1);\n}\n\ntest();",
      "stop_tokens": ["\nfunction ", "\n/*", "\n//", "\nconsole.log"],
  }
  path = tmp_path / "humaneval-js.jsonl"
  path.write_text(json.dumps(row) + "\n\n")
  problems, excluded = JS.problems(str(path))
  assert [p.task_id for p in problems] == ["HumanEval_53_add"] and excluded == {}
  assert problems[0].stop == tuple(row["stop_tokens"]) and problems[0].entry_point == "add"
  report = codegen.score(problems, [["  return x + y;\n}\n// trailing", "  return x - y;\n}\n"]], JS, ks=(1, 2))
  assert report["metrics"] == pytest.approx({"pass@1": 0.5, "pass@2": 1.0})
  with pytest.raises(JaxpruneError, match="is a 'js' problem, not 'java'"):
    multipl.load_multipl_e(path, "java")
  with pytest.raises(JaxpruneError, match="no MultiPL-E file"):
    multipl.load_multipl_e(tmp_path / "nope.jsonl", "js")
  (tmp_path / "bad.jsonl").write_text('{"name": "x"}\n')
  with pytest.raises(JaxpruneError, match="bad.jsonl:1 is not MultiPL-E JSONL"):
    multipl.load_multipl_e(tmp_path / "bad.jsonl", "js")


def test_tasks_reach_the_languages():
  assert humaneval.language("humaneval-java").name == "java"
  assert humaneval.language("humaneval-js").stop == JS.stop
  with pytest.raises(JaxpruneError, match="unknown HumanEval language"):
    multipl.language("cobol")


# --------------------------------------------------------------------------- #
# Every translated problem (slow): a lookup-table solution must pass
# --------------------------------------------------------------------------- #


def lookup_solution(target: multipl.Target, problem: codegen.Problem) -> str:
  """A body returning each test's expected value for its arguments: passes iff the harness is sound."""
  sig = tr.signature(problem.prompt, problem.entry_point)
  cases = tr.cases(problem.tests)
  params, result = None, None
  if target.typed:
    params, result, cases = tr.infer_types(sig, cases)
  names = [target.ident(n) for n in sig.params]
  lines = []
  for case in cases:
    try:
      conds = []
      for i, (name, arg) in enumerate(zip(names, case.args)):
        t = params[i] if params else None
        lit = target.literal(arg, t)
        if target.name == "java":
          conds.append(f"{name} == {lit}" if t.kind in ("int", "float", "bool") else f"{name}.equals({lit})")
        elif target.name == "cpp":
          conds.append(f"{name} == {lit}")
        else:
          conds.append(f"JSON.stringify({name}) === JSON.stringify({lit})")
      lines.append(f"        if ({' && '.join(conds) or 'true'}) return {target.literal(case.expected, result)};")
    except Untranslatable:
      pass
  tail = {"java": "        throw new RuntimeException();", "cpp": "    throw 0;", "js": "  return null;\n}"}[target.name]
  return "\n".join([*lines, tail]) + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["js", "java", "cpp"])
def test_every_translation_runs(name):
  target = multipl.language(name)
  problems, _ = target.problems()
  completions = [[lookup_solution(target, PY[p.task_id])] for p in problems]
  config = dataclasses_replace(target.sandbox, timeout_s=60)
  report = codegen.score(problems, completions, target, sandbox_config=config, keep_samples=True)
  failing = [(t, s["output"][-300:]) for t, e in report["per_problem"].items() for s in e["samples"]
             if s["status"] != "passed"]
  assert failing == []


def test_precompiled_header_is_used(tmp_path):
  """g++ -H marks a precompiled header it loads with '!'; a stale or mismatched one would be skipped."""
  import subprocess

  from jaxprune.evals import stdcpp_pch

  pch = stdcpp_pch.build()
  assert pch is not None
  program = CPP.program(multipl.translate(CPP, PY["HumanEval/2"]), "    return 0.5;\n")
  (tmp_path / "main.cpp").write_text(program.files["main.cpp"])
  compile_ = [*program.commands[0][:-3], "-H", "-fsyntax-only", "main.cpp"]
  assert "-include" in compile_
  shown = subprocess.run(compile_, cwd=tmp_path, capture_output=True, text=True).stderr
  assert f"! {pch}/bits/stdc++.h.gch" in shown
