"""Java, C++ and JavaScript as targets of HumanEval translation (see `evals.multipl`).

A `Target` writes types, literals, prompts and test harnesses in its
language, MultiPL-E's layout, and turns a completion into a sandbox program;
it is also the `codegen.Language` of its task.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
from typing import Any

from jaxprune.evals import problems, sandbox, stdcpp_pch
from jaxprune.evals import translate as tr
from jaxprune.evals.codegen import Problem
from jaxprune.evals.translate import Type, Untranslatable

log = logging.getLogger(__name__)

_INT64 = 2**63

PAIR_JAVA = """package org.javatuples;

import java.util.Objects;

/** The part of javatuples' Pair that MultiPL-E's Java problems use. */
public final class Pair<A, B> {
    private final A value0;
    private final B value1;
    public Pair(A value0, B value1) { this.value0 = value0; this.value1 = value1; }
    public static <A, B> Pair<A, B> with(A value0, B value1) { return new Pair<>(value0, value1); }
    public A getValue0() { return value0; }
    public B getValue1() { return value1; }
    @Override public boolean equals(Object o) {
        return o instanceof Pair<?, ?> p && Objects.equals(value0, p.value0) && Objects.equals(value1, p.value1);
    }
    @Override public int hashCode() { return Objects.hash(value0, value1); }
    @Override public String toString() { return "[" + value0 + ", " + value1 + "]"; }
}
"""


def _c_string(s: str) -> str:
  """A C/Java string literal: escapes for quotes and controls, octal for the rest (never \\u)."""
  named = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
  return '"' + "".join(named.get(c, f"\\{ord(c):03o}" if ord(c) < 32 or ord(c) == 127 else c) for c in s) + '"'


def _float(v: float) -> str:
  text = repr(float(v))
  if text in ("inf", "-inf", "nan"):
    raise Untranslatable(f"no literal for {text}")
  return text


def _int(v: int, bound: int = _INT64) -> str:
  if not -bound <= v < bound:
    raise Untranslatable(f"{v} does not fit the target's integers")
  return str(v)


@dataclasses.dataclass(frozen=True)
class Target:
  """A target language: translation hooks and the `codegen.Language` protocol."""

  name: str
  stop: tuple[str, ...]
  sandbox: sandbox.SandboxConfig
  typed: bool = True
  reserved: frozenset[str] = frozenset()
  comment: str = "// "

  # -- translation hooks ------------------------------------------------------
  def ident(self, name: str) -> str:
    return name + "_" if name in self.reserved else name

  def function(self, name: str) -> str:
    return name

  def callee(self, fn: str) -> str:
    """How the test harness names the function under test."""
    return fn

  def key(self, call: str, args: tuple) -> str:
    """Calls with equal keys are the same call in this language."""
    return call

  def type(self, t: Type) -> str:
    raise NotImplementedError

  def literal(self, v: Any, t: Type | None) -> str:
    raise NotImplementedError

  def header(self, sig: tr.Signature, params, result) -> str:
    raise NotImplementedError

  def harness(self, fn: str, lines: list[str], params, result) -> str:
    raise NotImplementedError

  def assertion(self, call: str, case: tr.Case, result: Type | None) -> str:
    raise NotImplementedError

  def call(self, fn: str, args, params) -> str:
    types = params or [None] * len(args)
    return f"{fn}({', '.join(self.literal(a, t) for a, t in zip(args, types))})"

  # -- codegen.Language -------------------------------------------------------
  def problems(self, path: str | None = None) -> tuple[list[Problem], dict[str, str]]:
    if path is not None:
      return problems.load_multipl_e(path, self.name), {}
    return problems.translate_all(self)

  def program(self, problem: Problem, completion: str) -> sandbox.Program:
    raise NotImplementedError


def _doc_lines(target: Target, sig: tr.Signature, params, result) -> list[str]:
  """The docstring, with ``>>> f(args)`` / result pairs in the target's syntax."""
  lines, out, i = sig.docstring.splitlines(), [], 0
  while i < len(lines):
    stripped = lines[i].strip()
    if stripped.startswith(">>>") and i + 1 < len(lines):
      try:
        node = ast.parse(stripped[3:].strip(), mode="eval").body
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == sig.name:
          args = [tr.value(a) for a in node.args]
          expected = tr.value(ast.parse(lines[i + 1].strip(), mode="eval").body)
          out += [">>> " + target.call(target.function(sig.name), args, params), target.literal(expected, result)]
          i += 2
          continue
      except (SyntaxError, Untranslatable, ValueError, TypeError):
        pass
    out.append(lines[i])
    i += 1
  return out


def _comments(target: Target, sig, params, result, indent: str = "") -> str:
  return "".join(f"{indent}{target.comment}{line}".rstrip() + "\n" for line in _doc_lines(target, sig, params, result))


# --------------------------------------------------------------------------- #
# Java
# --------------------------------------------------------------------------- #

_JAVA_IMPORTS = "".join(f"import {m};\n" for m in (
    "java.util.*", "java.lang.reflect.*", "org.javatuples.*", "java.security.*", "java.math.*",
    "java.io.*", "java.util.stream.*"))
_JVM = ("-Xmx512m", "-Xss16m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData",
        "-XX:ReservedCodeCacheSize=64m", "-XX:CompressedClassSpaceSize=64m")
_JAVA_PRIMITIVES = {"int": "long", "float": "double", "bool": "boolean"}
_JAVA_BOXED = {"int": "Long", "float": "Double", "bool": "Boolean", "str": "String"}


@dataclasses.dataclass(frozen=True)
class Java(Target):
  name: str = "java"
  stop: tuple[str, ...] = ("\n    }\n",)
  sandbox: sandbox.SandboxConfig = sandbox.SandboxConfig(timeout_s=30, memory_mb=4096, max_processes=512)
  reserved: frozenset[str] = frozenset(
      "abstract assert boolean break byte case catch char class const continue default do double else enum"
      " extends final finally float for goto if implements import instanceof int interface long native new"
      " package private protected public return short static super switch synchronized this throw throws"
      " transient try void volatile while var record yield".split())

  def function(self, name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)

  def box(self, t: Type) -> str:
    return _JAVA_BOXED.get(t.kind) or self.type(t)

  def type(self, t: Type) -> str:
    if t.kind in _JAVA_PRIMITIVES or t.kind == "str":
      return _JAVA_PRIMITIVES.get(t.kind, "String")
    if t.kind == "list":
      return f"ArrayList<{self.box(t.args[0])}>"
    if t.kind == "dict":
      return f"HashMap<{self.box(t.args[0])},{self.box(t.args[1])}>"
    if t.kind == "optional":
      return f"Optional<{self.box(t.args[0])}>"
    if t.kind == "tuple" and len(t.args) == 2:
      return f"Pair<{self.box(t.args[0])}, {self.box(t.args[1])}>"
    raise Untranslatable(f"no Java type for {t}")

  def literal(self, v: Any, t: Type) -> str:
    k = t.kind
    if k == "optional":
      return "Optional.empty()" if v is None else f"Optional.of({self.literal(v, t.args[0])})"
    if k == "bool":
      return "true" if v else "false"
    if k == "int":
      return _int(v) + "l"
    if k == "float":
      return _float(v)
    if k == "str":
      return _c_string(v)
    if k == "list":
      return f"new {self.type(t)}(Arrays.asList({', '.join(self.literal(x, t.args[0]) for x in v)}))"
    if k == "tuple" and len(t.args) == 2:
      return f"Pair.with({self.literal(v[0], t.args[0])}, {self.literal(v[1], t.args[1])})"
    if k == "dict":
      entries = ", ".join(f"Map.entry({self.literal(a, t.args[0])}, {self.literal(b, t.args[1])})" for a, b in v.items())
      return f"new {self.type(t)}(Map.ofEntries({entries}))"
    raise Untranslatable(f"no Java literal for {t}")

  def header(self, sig, params, result) -> str:
    args = ", ".join(f"{self.type(t)} {self.ident(p)}" for p, t in zip(sig.params, params))
    return (f"{_JAVA_IMPORTS}class Problem {{\n{_comments(self, sig, params, result, '    ')}"
            f"    public static {self.type(result)} {self.function(sig.name)}({args}) {{\n")

  def assertion(self, call: str, case: tr.Case, result: Type) -> str:
    expected = self.literal(case.expected, result)
    if case.tolerance is not None:
      return f"    assert(Math.abs({call} - ({expected})) < {case.tolerance!r});"
    if result.kind in _JAVA_PRIMITIVES:
      return f"    assert({call} == ({expected}));"
    return f"    assert({call}.equals(({expected})));"

  def harness(self, fn: str, lines: list[str], params, result) -> str:
    return "    }\n    public static void main(String[] args) {\n" + "\n".join(lines) + "\n    }\n\n}\n"

  def program(self, problem: Problem, completion: str) -> sandbox.Program:
    marker = sandbox.success_marker()
    files = {
        "Problem.java": f"{problem.prompt}{completion}\n{problem.tests}",
        "org/javatuples/Pair.java": PAIR_JAVA,
        # Problem.main holds the tests; the marker shows they ran to the end.
        "Runner.java": "class Runner {\n    public static void main(String[] args) {\n"
                       f"        Problem.main(args);\n        System.out.println({_c_string(marker)});\n    }}\n}}\n",
    }
    javac = ("javac", "-encoding", "UTF-8", *(f"-J{o}" for o in _JVM), *files)
    return sandbox.Program(files, (javac, ("java", "-ea", *_JVM, "Runner")), success_marker=marker,
                           compile_commands=1)


# --------------------------------------------------------------------------- #
# C++
# --------------------------------------------------------------------------- #

_CPP_SCALARS = {"int": "long", "float": "double", "bool": "bool", "str": "std::string"}


@dataclasses.dataclass(frozen=True)
class Cpp(Target):
  name: str = "cpp"
  stop: tuple[str, ...] = ("\n}",)
  sandbox: sandbox.SandboxConfig = sandbox.SandboxConfig(timeout_s=30, memory_mb=4096)
  reserved: frozenset[str] = frozenset(
      "alignas alignof and and_eq asm auto bitand bitor bool break case catch char class compl const"
      " constexpr const_cast continue decltype default delete do double dynamic_cast else enum explicit"
      " export extern false float for friend goto if inline int long mutable namespace new noexcept not"
      " not_eq nullptr operator or or_eq private protected public register reinterpret_cast return short"
      " signed sizeof static static_assert static_cast struct switch template this throw true try typedef"
      " typeid typename union unsigned using virtual void volatile wchar_t while xor xor_eq".split())

  def type(self, t: Type) -> str:
    if t.kind in _CPP_SCALARS:
      return _CPP_SCALARS[t.kind]
    inner = ", ".join(self.type(a) for a in t.args)
    template = {"list": "std::vector", "dict": "std::map", "tuple": "std::tuple", "optional": "std::optional"}
    if t.kind not in template:
      raise Untranslatable(f"no C++ type for {t}")
    return f"{template[t.kind]}<{inner}>"

  def literal(self, v: Any, t: Type) -> str:
    k = t.kind
    if k == "optional":
      return "std::nullopt" if v is None else f"{self.type(t)}({self.literal(v, t.args[0])})"
    if k == "bool":
      return "true" if v else "false"
    if k == "int":
      return _int(v)
    if k == "float":
      return _float(v)
    if k == "str":
      return f"std::string({_c_string(v)})"
    if k == "list":
      return f"{self.type(t)}({{{', '.join(self.literal(x, t.args[0]) for x in v)}}})" if v else f"{self.type(t)}()"
    if k == "tuple":
      return f"{self.type(t)}({', '.join(self.literal(x, a) for x, a in zip(v, t.args))})"
    if k == "dict":
      items = ", ".join(f"{{{self.literal(a, t.args[0])}, {self.literal(b, t.args[1])}}}" for a, b in v.items())
      return f"{self.type(t)}({{{items}}})"
    raise Untranslatable(f"no C++ literal for {t}")

  def header(self, sig, params, result) -> str:
    args = ", ".join(f"{self.type(t)} {self.ident(p)}" for p, t in zip(sig.params, params))
    return (f"#include<assert.h>\n#include<bits/stdc++.h>\n{_comments(self, sig, params, result)}"
            f"{self.type(result)} {sig.name}({args}) {{\n")

  def callee(self, fn: str) -> str:
    return "candidate"

  def assertion(self, call: str, case: tr.Case, result: Type) -> str:
    expected = self.literal(case.expected, result)
    if case.tolerance is not None:
      return f"    assert(std::abs({call} - ({expected})) < {case.tolerance!r});"
    return f"    assert({call} == ({expected}));"

  def harness(self, fn: str, lines: list[str], params, result) -> str:
    # A typed pointer picks our function where the library overloads the name (strlen).
    pointer = f"{self.type(result)} (*candidate)({', '.join(map(self.type, params))}) = {fn};"
    return f"}}\nint main() {{\n    {pointer}\n" + "\n".join(lines) + "\n}\n"

  def program(self, problem: Problem, completion: str) -> sandbox.Program:
    marker = sandbox.success_marker()
    tests = problem.tests.rstrip()
    if tests.endswith("}"):  # main's closing brace, here and in MultiPL-E's files
      tests = f"{tests[:-1]}    std::puts({_c_string(marker)});\n}}\n"
    else:
      marker = None
    pch = stdcpp_pch.build()
    # -include puts the precompiled <bits/stdc++.h> first, where GCC can use
    # it; the prompt's own #include lines then add nothing (4x faster builds).
    extra = ("-I", pch, "-include", "bits/stdc++.h") if pch else ()
    compile_ = ("g++", *stdcpp_pch.FLAGS, *extra, "-o", "main", "main.cpp")
    files = {"main.cpp": f"{problem.prompt}{completion}\n{tests}"}
    return sandbox.Program(files, (compile_, ("./main",)), expose=(pch,) if pch else (), success_marker=marker,
                           compile_commands=1)


# --------------------------------------------------------------------------- #
# JavaScript
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class JavaScript(Target):
  name: str = "js"
  stop: tuple[str, ...] = ("\nfunction ", "\n/*", "\n//", "\nconsole.log")
  sandbox: sandbox.SandboxConfig = sandbox.SandboxConfig(timeout_s=15, memory_mb=4096)
  typed: bool = False
  comment: str = "//"
  reserved: frozenset[str] = frozenset(
      "arguments await break case catch class const continue debugger default delete do else enum eval"
      " export extends false finally for function if implements import in instanceof interface let new"
      " null package private protected public return static super switch this throw true try typeof var"
      " void while with yield".split())

  def literal(self, v: Any, t: Type | None = None) -> str:
    if v is None:
      return "undefined"
    if isinstance(v, bool):
      return "true" if v else "false"
    if isinstance(v, int):
      return _int(v, 2**53)
    if isinstance(v, float):
      return _float(v)
    if isinstance(v, str):
      return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
      return f"[{', '.join(self.literal(x) for x in v)}]"
    if isinstance(v, dict):
      if not all(isinstance(k, str) or type(k) is int for k in v):
        raise Untranslatable("a dict key is neither a string nor an integer")
      return "{" + ", ".join(f"{self.literal(k)}: {self.literal(x)}" for k, x in v.items()) + "}"
    raise Untranslatable(f"no JavaScript literal for a {type(v).__name__}")

  def key(self, call: str, args: tuple) -> str:
    def plain(v):  # JavaScript has one number type and no tuples
      if isinstance(v, float) and v.is_integer():
        return int(v)
      if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
      return {k: plain(x) for k, x in v.items()} if isinstance(v, dict) else v
    return repr(plain(list(args)))

  def header(self, sig, params, result) -> str:
    return f"{_comments(self, sig, params, result)}function {sig.name}({', '.join(map(self.ident, sig.params))}){{\n"

  def callee(self, fn: str) -> str:
    return "candidate"

  def assertion(self, call: str, case: tr.Case, result) -> str:
    if case.tolerance is not None:
      return f"  assert(Math.abs({call} - ({self.literal(case.expected)})) < {case.tolerance!r});"
    return f"  assert.deepEqual({call},{self.literal(case.expected)});"

  def harness(self, fn: str, lines: list[str], params, result) -> str:
    return (f"\nconst assert = require('node:assert');\n\n\nfunction test() {{\n  let candidate = {fn};\n"
            + "\n".join(lines) + "\n}\n\ntest();\n")

  def program(self, problem: Problem, completion: str) -> sandbox.Program:
    marker = sandbox.success_marker()
    source = f"{problem.prompt}{completion}\n{problem.tests}\nconsole.log({json.dumps(marker)});\n"
    return sandbox.Program({"main.js": source}, (("node", "main.js"),), success_marker=marker)


