"""The Python side of translating HumanEval problems (MultiPL-E's method).

A HumanEval problem is a Python signature with a docstring and a ``check``
function of assertions. To pose it in another language we need: the function's
name, parameters and docstring; its test cases as values (arguments, expected
result, tolerance); and, for typed languages, a type for every parameter and
the result. Most HumanEval prompts carry no annotations, so types are
inferred from the test values and unified with whatever annotation there is
(``int`` with ``float`` gives ``float``, anything with ``None`` an
``optional``). Problems that cannot be posed raise `Untranslatable` with the
reason; the caller lists and counts them.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterable
from typing import Any


class Untranslatable(Exception):
  """This problem (or this part of it) has no faithful translation."""


@dataclasses.dataclass(frozen=True)
class Type:
  """A value type: ``int float str bool none unknown`` or ``list dict tuple optional`` of args."""

  kind: str
  args: tuple[Type, ...] = ()

  def __str__(self) -> str:
    return self.kind + (f"[{', '.join(map(str, self.args))}]" if self.args else "")


INT, FLOAT, STR, BOOL, NONE, UNKNOWN = (Type(k) for k in ("int", "float", "str", "bool", "none", "unknown"))


def list_of(t: Type) -> Type:
  return Type("list", (t,))


def optional(t: Type) -> Type:
  return t if t.kind in ("optional", "none") else Type("optional", (t,))


@dataclasses.dataclass(frozen=True)
class Case:
  """One test: ``candidate(*args) == expected``, or within ``tolerance`` of it."""

  args: tuple[Any, ...]
  expected: Any
  tolerance: float | None = None


@dataclasses.dataclass(frozen=True)
class Signature:
  """What a prompt says about the function."""

  name: str
  params: tuple[str, ...]
  annotations: tuple[Type, ...]
  returns: Type
  docstring: str


# --------------------------------------------------------------------------- #
# Types
# --------------------------------------------------------------------------- #


def type_of(value: Any) -> Type:
  """The type of a test value."""
  if isinstance(value, bool):
    return BOOL
  if isinstance(value, int):
    return INT
  if isinstance(value, float):
    return FLOAT
  if isinstance(value, str):
    return STR
  if value is None:
    return NONE
  if isinstance(value, list):
    return list_of(unify_all(type_of(v) for v in value))
  if isinstance(value, tuple):
    return Type("tuple", tuple(type_of(v) for v in value))
  if isinstance(value, dict):
    return Type("dict", (unify_all(type_of(k) for k in value), unify_all(type_of(v) for v in value.values())))
  raise Untranslatable(f"no type for a {type(value).__name__} value")


def unify(a: Type, b: Type) -> Type:
  """The narrowest type holding both, or `Untranslatable` (``int`` vs ``str``)."""
  if a == b:
    return a
  if UNKNOWN in (a, b):
    return b if a == UNKNOWN else a
  if {a.kind, b.kind} == {"int", "float"}:
    return FLOAT
  if NONE in (a, b):
    return optional(b if a == NONE else a)
  if "optional" in (a.kind, b.kind):
    inner = lambda t: t.args[0] if t.kind == "optional" else t
    return optional(unify(inner(a), inner(b)))
  if a.kind == b.kind and a.kind in ("list", "dict"):
    return Type(a.kind, tuple(unify(x, y) for x, y in zip(a.args, b.args)))
  if a.kind == b.kind == "tuple" and len(a.args) == len(b.args):
    return Type("tuple", tuple(unify(x, y) for x, y in zip(a.args, b.args)))
  if {a.kind, b.kind} <= {"tuple", "list"}:  # tuples of varying length act as lists
    return list_of(unify_all([*a.args, *b.args]))  # a list's args are its element type
  raise Untranslatable(f"values of types {a} and {b} mix")


def unify_all(types: Iterable[Type]) -> Type:
  """`unify` over many types; ``unknown`` for none (an empty list's elements)."""
  result = UNKNOWN
  for t in types:
    result = unify(result, t)
  return result


def is_concrete(t: Type) -> bool:
  """Whether a typed language can declare ``t`` (no unknown or bare None inside)."""
  return t.kind not in ("unknown", "none") and all(is_concrete(a) for a in t.args)


_NAMES = {"int": INT, "float": FLOAT, "str": STR, "bool": BOOL, "None": NONE, "Any": UNKNOWN}
_GENERIC = {"List": "list", "list": "list", "Dict": "dict", "dict": "dict", "Tuple": "tuple", "tuple": "tuple"}


def annotation_type(node: ast.expr | None) -> Type:
  """A typing annotation as a `Type`; anything unclear is ``unknown``."""
  if node is None:
    return UNKNOWN
  if isinstance(node, ast.Constant) and node.value is None:
    return NONE
  if isinstance(node, ast.Name):
    if node.id in _GENERIC:
      return {"list": list_of(UNKNOWN), "dict": Type("dict", (UNKNOWN, UNKNOWN))}.get(_GENERIC[node.id], UNKNOWN)
    return _NAMES.get(node.id, UNKNOWN)
  if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
    inner = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    args = tuple(annotation_type(n) for n in inner)
    if node.value.id == "Optional":
      return optional(args[0])
    kind = _GENERIC.get(node.value.id)
    if kind == "tuple" and any(isinstance(n, ast.Constant) and n.value is Ellipsis for n in inner):
      return list_of(args[0])
    if kind is not None:
      return Type(kind, args)
  return UNKNOWN


# --------------------------------------------------------------------------- #
# Prompt and tests
# --------------------------------------------------------------------------- #


def signature(prompt: str, entry_point: str) -> Signature:
  """Name, parameters, annotations and docstring of the prompt's function."""
  tree = ast.parse(prompt + "    pass\n")
  functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
  helpers = [f.name for f in functions if f.name != entry_point]
  if helpers:
    raise Untranslatable(f"the prompt defines helper functions in Python ({', '.join(helpers)})")
  fn = next((f for f in functions if f.name == entry_point), None)
  if fn is None:
    raise Untranslatable(f"the prompt does not define {entry_point}")
  a = fn.args
  if a.vararg or a.kwarg or a.kwonlyargs or a.defaults or a.posonlyargs:
    raise Untranslatable("the signature has defaults or variable arguments")
  return Signature(
      name=entry_point,
      params=tuple(p.arg for p in a.args),
      annotations=tuple(annotation_type(p.annotation) for p in a.args),
      returns=annotation_type(fn.returns),
      docstring=ast.get_docstring(fn) or "",
  )


_VALUE_NODES = (
    ast.Expression, ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.Load, ast.BinOp, ast.UnaryOp,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd,
)


def value(node: ast.expr) -> Any:
  """The value of a test expression made of literals and arithmetic (``2.0 / 3.0``)."""
  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("tuple", "list") \
      and len(node.args) == 1 and not node.keywords:
    inner = value(node.args[0])
    return tuple(inner) if node.func.id == "tuple" else list(inner)
  expression = ast.Expression(node)
  if not all(isinstance(n, _VALUE_NODES) for n in ast.walk(expression)):
    raise Untranslatable(f"not a literal: {ast.unparse(node)[:60]}")
  return eval(compile(expression, "<test>", "eval"), {"__builtins__": {}})  # literals only, checked above


def _call_args(node: ast.expr) -> tuple | None:
  """Arguments of ``candidate(...)`` (also inside ``tuple()``/``list()``), else None."""
  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
    if node.func.id in ("tuple", "list") and len(node.args) == 1:
      return _call_args(node.args[0])
    if node.func.id == "candidate" and not node.keywords:
      return tuple(value(a) for a in node.args)
  return None


def _case(test: ast.expr) -> Case | None:
  if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
    args = _call_args(test.operand)
    return None if args is None else Case(args, False)
  args = _call_args(test)
  if args is not None:
    return Case(args, True)
  if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
    return None
  left, op, right = test.left, test.ops[0], test.comparators[0]
  if isinstance(op, (ast.Eq, ast.Is)):
    for call, other in ((left, right), (right, left)):
      args = _call_args(call)
      if args is not None:
        return Case(args, value(other))
  if isinstance(op, (ast.Lt, ast.LtE)) and isinstance(left, ast.Call) and getattr(left.func, "id", "") == "abs" \
      and isinstance(left.args[0], ast.BinOp) and isinstance(left.args[0].op, ast.Sub):
    diff = left.args[0]
    for call, other in ((diff.left, diff.right), (diff.right, diff.left)):
      args = _call_args(call)
      if args is not None:
        return Case(args, value(other), tolerance=float(value(right)))
  return None


def cases(tests: str) -> list[Case]:
  """Test cases of the top-level assertions in ``check``; others are skipped.

  Loops, random inputs, ``assert True`` and comparisons against computed
  values (another function, a local variable) have no literal translation.
  """
  tree = ast.parse(tests)
  check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
  if check is None:
    raise Untranslatable("the tests define no check(candidate)")
  found = []
  for statement in check.body:
    if isinstance(statement, ast.Assert):
      try:
        case = _case(statement.test)
      except Untranslatable:
        continue
      if case is not None:
        found.append(case)
  if not found:
    raise Untranslatable("no test assertion has literal arguments and result")
  return found


def _arg_types(case: Case) -> tuple[Type, ...] | None:
  try:
    return tuple(type_of(a) for a in case.args)
  except Untranslatable:
    return None


def _fits(acc: tuple[Type, ...], types: tuple[Type, ...]) -> tuple[Type, ...] | None:
  try:
    return tuple(unify(a, t) for a, t in zip(acc, types))
  except Untranslatable:
    return None


def infer_types(sig: Signature, tests: list[Case]) -> tuple[tuple[Type, ...], Type, list[Case]]:
  """Parameter and result types from the annotations and the test values, and the cases kept.

  A few HumanEval tests pass an argument of another type than the rest (a list
  where strings go); such outliers, at most a fifth of the cases, are dropped.
  Results of mixed types (a string or -1) make the problem untranslatable.
  """
  typed = [(c, _arg_types(c)) for c in tests]
  # Cases that agree with most others first, so a stray one cannot set the types.
  agree = lambda t: -sum(t is not None and u is not None and _fits(t, u) is not None for _, u in typed)
  params, kept = sig.annotations, []
  for case, types in sorted(typed, key=lambda ct: agree(ct[1])):
    fitted = None if types is None else _fits(params, types)
    if fitted is not None:
      params, kept = fitted, kept + [case]
  dropped = len(tests) - len(kept)
  if dropped * 5 > len(tests):
    raise Untranslatable(f"arguments of mixed types in {dropped} of {len(tests)} tests")
  for name, t in zip(sig.params, params):
    if not is_concrete(t):
      raise Untranslatable(f"parameter {name}: cannot infer a type (got {t})")
  try:
    result = unify(sig.returns, unify_all(type_of(c.expected) for c in kept))
  except Untranslatable as err:
    raise Untranslatable(f"result: {err}") from None
  if not is_concrete(result):
    raise Untranslatable(f"result: cannot infer a type (got {result})")
  return params, result, [c for c in tests if c in kept]


def check_arity(sig: Signature, tests: list[Case]) -> None:
  """Every test must call the function with as many arguments as it declares."""
  bad = [c for c in tests if len(c.args) != len(sig.params)]
  if bad:
    raise Untranslatable(f"a test passes {len(bad[0].args)} arguments to a {len(sig.params)}-parameter function")
