"""Assert tests judged by the trusted parent: only the calls go into the sandbox, never the answers.

An assert test such as ``assert f(2) == 4`` is split, in the parent, into

- *holes*: the maximal sub-expressions that depend on the program (they mention a name: ``f(2)``,
  ``sorted(f(x))``), which the sandbox evaluates in the program's namespace and returns as a
  literal (``repr`` of plain built-in values only, read back here with ``ast.literal_eval``;
  never pickle);
- the *frame*: everything else (literals such as the expected ``4``, comparisons, ``not``,
  ``and``/``or``, and a few pure built-ins: ``set``, ``sorted``, ``len``, ``abs``, ``round``,
  ``math.isclose``...), which stays here and is evaluated here on the returned values.

So the expected values are never in the sandbox's memory, files or environment, and what the
program can send back is only values: an object whose ``__eq__`` always returns True never leaves
the sandbox (it is not a plain built-in value). The program shares the launcher's interpreter, so
it can always make a hole report a value of its choosing (tamper with the encoder, write result
lines from a thread): that is exactly the power of hard-coding the answer in ``f``, and it gains
nothing without knowing the expected values, which it cannot read. Lines it writes before the
tests run are superseded by the launcher's.

A test may hold several statements (MBPP's ``test_setup_code`` then the assert): statements that
are not asserts run in the sandbox as they are. Its limit: an expected value written as something
``ast.literal_eval`` cannot read and that mentions a name (``== sys.getsizeof(t)``) is a hole too,
so it is computed in the sandbox and visible there; MBPP has 3 such asserts, all of the form
``sys.getsizeof(...)``, which give nothing away.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

MAX_RESULT_CHARS = 1 << 20  # one returned value, as repr text

_COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not,
}  # fmt: skip
_PURE = {
    "set": set, "frozenset": frozenset, "sorted": sorted, "len": len, "abs": abs, "round": round,
    "list": list, "tuple": tuple, "sum": sum, "min": min, "max": max, "bool": bool,
    "math.isclose": math.isclose,
}  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One thing the sandbox does for a test: ``exec`` a statement or ``eval`` a hole."""

    test: int
    kind: str  # "exec" or "eval"
    source: str


@dataclass(frozen=True)
class Plan:
    """What the sandbox runs (``steps``) and how the parent judges each test from the results."""

    steps: list[Step]
    frames: list[list[tuple[ast.expr, list[int]]]]  # per test: (assert frame, its steps' indices)


def plan(tests: Sequence[str], program: str = "") -> Plan:
    """Split every test's asserts into holes (sent) and frames (kept); other statements are sent.

    A built-in the program (or a test's set-up) defines at top level (its own ``sum``) is not
    pure: calls to it are holes."""
    shadowed = _top_level_names(program) | {n for t in tests for n in _top_level_names(t)}
    pure = {name for name in _PURE if name.split(".")[0] not in shadowed}
    steps: list[Step] = []
    frames: list[list[tuple[ast.expr, list[int]]]] = []
    for i, test in enumerate(tests):
        own = []
        for stmt in ast.parse(test).body:
            if not isinstance(stmt, ast.Assert):
                steps.append(Step(i, "exec", ast.unparse(stmt)))
                own.append((ast.Constant(True), [len(steps) - 1]))
                continue
            holes: list[int] = []
            frame = _frame(stmt.test, i, steps, holes, pure)
            own.append((frame, holes))
        frames.append(own)
    return Plan(steps, frames)


def _top_level_names(source: str) -> set[str]:
    try:
        body = ast.parse(source).body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return set()
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names - {"math"} if "math" in names and _imports_stdlib_math(body) else names


def _imports_stdlib_math(body: list[ast.stmt]) -> bool:
    """``import math`` binds the real module: ``math.isclose`` stays pure."""
    return any(
        isinstance(n, ast.Import) and any(a.name == "math" and not a.asname for a in n.names) for n in body
    )


def _frame(node: ast.expr, test: int, steps: list[Step], holes: list[int], pure: set[str]) -> ast.expr:
    """``node`` with every program-dependent sub-expression replaced by a reference to its hole."""
    if _is_literal(node):
        return node
    sub = lambda child: _frame(child, test, steps, holes, pure)  # noqa: E731
    if isinstance(node, (ast.Compare, ast.BoolOp, ast.UnaryOp)) and _frame_ok(node):
        return _rebuild(node, sub)
    if isinstance(node, ast.Call) and ast.unparse(node.func) in pure and _frame_ok(node):
        return _rebuild(node, sub)
    steps.append(Step(test, "eval", ast.unparse(node)))
    holes.append(len(steps) - 1)
    return ast.Name(id=f"_hole{len(steps) - 1}", ctx=ast.Load())


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _frame_ok(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, ast.Not)
    if isinstance(node, ast.Compare):
        return all(type(op) in _COMPARE for op in node.ops)
    if isinstance(node, ast.Call):
        return not any(isinstance(a, ast.Starred) for a in node.args) and all(k.arg for k in node.keywords)
    return True  # BoolOp


def _rebuild(node: ast.expr, sub) -> ast.expr:
    if isinstance(node, ast.Compare):
        return ast.Compare(sub(node.left), node.ops, [sub(c) for c in node.comparators])
    if isinstance(node, ast.BoolOp):
        return ast.BoolOp(node.op, [sub(v) for v in node.values])
    if isinstance(node, ast.UnaryOp):
        return ast.UnaryOp(node.op, sub(node.operand))
    assert isinstance(node, ast.Call)
    return ast.Call(
        node.func, [sub(a) for a in node.args], [ast.keyword(k.arg, sub(k.value)) for k in node.keywords]
    )


def judge(p: Plan, results: dict[int, str | None]) -> list[bool]:
    """Verdict per test from the sandbox's results (step index -> repr text, "" for an exec step
    that ran, None or absent for one that raised or never reported)."""
    verdicts = []
    for own in p.frames:
        ok = True
        for frame, idx in own:
            try:
                values = {f"_hole{j}": _decode(results.get(j)) for j in idx}
                ok = ok and bool(_eval(frame, values))
            except Exception:  # a missing, unreadable or mistyped value: the test fails
                ok = False
            if not ok:
                break
        verdicts.append(ok)
    return verdicts


def _decode(text: str | None) -> object:
    if text is None or len(text) > MAX_RESULT_CHARS:
        raise ValueError("no result")
    if text == "":
        return True  # an exec step that ran
    return ast.literal_eval(text)


def _eval(node: ast.expr, values: dict[str, object]) -> object:
    """Evaluate a frame: literals, hole references, comparisons, not/and/or, the pure built-ins."""
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.Compare):
        left = _eval(node.left, values)
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, values)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        parts = (_eval(v, values) for v in node.values)
        return all(parts) if isinstance(node.op, ast.And) else any(parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):  # -2 is a literal, below
        return not _eval(node.operand, values)
    if isinstance(node, ast.Call):
        fn = _PURE[ast.unparse(node.func)]
        kwargs = {k.arg: _eval(k.value, values) for k in node.keywords}
        return fn(*[_eval(a, values) for a in node.args], **kwargs)
    return ast.literal_eval(node)
