"""Synthetic verifiable arithmetic tasks, deterministic from a seed.

Each *family* is one data distribution ("source") with its own difficulty. The worked solution is a
column-wise scratchpad, the way a person does long arithmetic, so a tiny model can learn an
algorithm instead of memorising answers:

    47+85=   ->  <think>7+5+0=12 4+8+1=13</think><answer>132</answer>

Addition writes every column as ``top+bottom+carry=sum``; subtraction writes a borrowed column as
``1x-y-b=r``; 2-digit-by-1-digit multiplication writes ``digit*m+carry=product``; 2-by-2
multiplication writes its two partial products and their sum without showing the column work,
which is what makes it too hard for the embedded model at first. The answer is always the exact
integer, so any verifier can check it.

Families (difficulty 1 = easiest): add_1d (1), add_2d (1), sub_2d (2), add_3d (2), mul_1x2 (3),
add_4d (3), mul_2x2 (5). Problems are drawn without replacement inside a family, so a family with
few distinct problems (add_1d has 100) yields fewer rows than asked rather than duplicates.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tasks.config.base import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN


def format_solution(think: str, answer: str) -> str:
    return f"{THINK_OPEN}{think}{THINK_CLOSE}{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"


def _digits(n: int, width: int) -> list[int]:
    """Least-significant digit first, zero-padded to width."""
    return [int(c) for c in str(n).zfill(width)][::-1]


def add_trace(a: int, b: int) -> str:
    width = max(len(str(a)), len(str(b)))
    da, db = _digits(a, width), _digits(b, width)
    carry, cols = 0, []
    for x, y in zip(da, db):
        s = x + y + carry
        cols.append(f"{x}+{y}+{carry}={s}")
        carry = s // 10
    return " ".join(cols)


def sub_trace(a: int, b: int) -> str:
    assert a >= b
    width = len(str(a))
    da, db = _digits(a, width), _digits(b, width)
    borrow, cols = 0, []
    for x, y in zip(da, db):
        r = x - y - borrow
        if r < 0:
            cols.append(f"1{x}-{y}-{borrow}={r + 10}")
            borrow = 1
        else:
            cols.append(f"{x}-{y}-{borrow}={r}")
            borrow = 0
    return " ".join(cols)


def mul1_trace(a: int, m: int) -> str:
    carry, cols = 0, []
    for x in _digits(a, len(str(a))):
        p = x * m + carry
        cols.append(f"{x}*{m}+{carry}={p}")
        carry = p // 10
    return " ".join(cols)


def mul2_trace(a: int, b: int) -> str:
    lo, hi = b % 10, b // 10
    p1, p2 = a * lo, a * hi * 10
    return f"{a}*{lo}={p1} {a}*{hi}0={p2} {p1}+{p2}={p1 + p2}"


def _rand(rng: random.Random, digits: int) -> int:
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def _add(digits: int) -> Callable[[random.Random], tuple[str, int, str]]:
    def make(rng: random.Random) -> tuple[str, int, str]:
        a, b = _rand(rng, digits), _rand(rng, digits)
        return f"{a}+{b}=", a + b, add_trace(a, b)

    return make


def _sub2(rng: random.Random) -> tuple[str, int, str]:
    a, b = sorted((_rand(rng, 2), _rand(rng, 2)), reverse=True)
    return f"{a}-{b}=", a - b, sub_trace(a, b)


def _mul1x2(rng: random.Random) -> tuple[str, int, str]:
    a, m = _rand(rng, 2), rng.randint(2, 9)
    return f"{a}*{m}=", a * m, mul1_trace(a, m)


def _mul2x2(rng: random.Random) -> tuple[str, int, str]:
    a, b = _rand(rng, 2), _rand(rng, 2)
    return f"{a}*{b}=", a * b, mul2_trace(a, b)


# name -> (difficulty, generator of (prompt, answer, think))
FAMILIES: dict[str, tuple[int, Callable[[random.Random], tuple[str, int, str]]]] = {
    "add_1d": (1, _add(1)),
    "add_2d": (1, _add(2)),
    "sub_2d": (2, _sub2),
    "add_3d": (2, _add(3)),
    "mul_1x2": (3, _mul1x2),
    "add_4d": (3, _add(4)),
    "mul_2x2": (5, _mul2x2),
}


def generate_family(family: str, n: int, seed: int) -> list[dict]:
    """Up to ``n`` distinct problems of one family, deterministic in (family, seed).

    Rows: id, source, prompt, answer, difficulty, solution (the worked trace).
    """
    difficulty, make = FAMILIES[family]
    # A string seed is hashed deterministically by random.Random (unlike hash()).
    rng = random.Random(f"{family}:{seed}")
    seen: set[str] = set()
    rows: list[dict] = []
    misses = 0
    while len(rows) < n and misses < 20 * n + 1000:  # stop when the family runs out of problems
        prompt, answer, think = make(rng)
        if prompt in seen:
            misses += 1
            continue
        seen.add(prompt)
        rows.append(
            {
                "id": f"{family}-{len(rows):06d}",
                "source": family,
                "prompt": prompt,
                "answer": str(answer),
                "difficulty": difficulty,
                "solution": format_solution(think, str(answer)),
            }
        )
    return rows
