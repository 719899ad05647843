"""The synthetic suite: deterministic, correct answers, and scratchpads whose arithmetic is right."""

import operator
import re

import pytest

from tasks.config import SYNTHETIC_FAMILIES
from tasks.data.synthetic import (
    FAMILIES,
    add_trace,
    format_solution,
    generate_family,
    mul1_trace,
    mul2_trace,
    sub_trace,
)

SOLUTION = re.compile(r"^<think>([^<>]*)</think><answer>(-?\d+)</answer>$")
PROMPT = re.compile(r"^(\d+)([+\-*])(\d+)=$")
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def test_config_and_generator_agree_on_families():
    assert set(SYNTHETIC_FAMILIES) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_same_seed_same_rows_and_different_seed_different_rows(family):
    a, b = generate_family(family, 50, seed=3), generate_family(family, 50, seed=3)
    assert a == b
    c = generate_family(family, 50, seed=4)
    assert [r["prompt"] for r in a] != [r["prompt"] for r in c]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_answers_are_python_arithmetic_and_solutions_well_formed(family):
    rows = generate_family(family, 300, seed=0)
    difficulty = FAMILIES[family][0]
    assert len({r["prompt"] for r in rows}) == len(rows)  # drawn without replacement
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        a, op, b = PROMPT.fullmatch(r["prompt"]).groups()
        assert r["answer"] == str(OPS[op](int(a), int(b)))
        m = SOLUTION.fullmatch(r["solution"])
        assert m is not None, r["solution"]
        assert m.group(2) == r["answer"]
        assert r["source"] == family and r["difficulty"] == difficulty
        if op == "-":
            assert int(a) >= int(b)  # no negative answers


def _check_add_columns(think: str, answer: str) -> None:
    """Every column x+y+c=s has the right sum, carries chain, and the digits spell the answer."""
    carry, digits = 0, []
    for col in think.split():
        x, y, c, s = map(int, re.fullmatch(r"(\d)\+(\d)\+(\d)=(\d+)", col).groups())
        assert c == carry and s == x + y + c
        carry, digits = s // 10, digits + [s % 10]
    assert int("".join(map(str, ([carry] if carry else []) + digits[::-1]))) == int(answer)


def _check_sub_columns(think: str, answer: str) -> None:
    borrow, digits = 0, []
    for col in think.split():
        ten, x, y, b, r = re.fullmatch(r"(1?)(\d)-(\d)-(\d)=(\d)", col).groups()
        assert int(b) == borrow and int(r) == int(ten + x) - int(y) - borrow
        borrow, digits = (1 if ten else 0), digits + [r]
    assert borrow == 0 and int("".join(digits[::-1])) == int(answer)


@pytest.mark.parametrize("family", ["add_1d", "add_2d", "add_3d", "add_4d"])
def test_every_addition_scratchpad_adds_up(family):
    for r in generate_family(family, 200, seed=1):
        _check_add_columns(SOLUTION.fullmatch(r["solution"]).group(1), r["answer"])


def test_every_subtraction_scratchpad_adds_up():
    for r in generate_family("sub_2d", 200, seed=1):
        _check_sub_columns(SOLUTION.fullmatch(r["solution"]).group(1), r["answer"])


def test_hand_worked_traces():
    # 47+85: 7+5=12 write 2 carry 1; 4+8+1=13 -> 132
    assert add_trace(47, 85) == "7+5+0=12 4+8+1=13"
    # 73-25: 3<5 so borrow: 13-5=8; 7-2-1=4 -> 48
    assert sub_trace(73, 25) == "13-5-0=8 7-2-1=4"
    # 999+1: the carry ripples through every column
    assert add_trace(999, 1) == "9+1+0=10 9+0+1=10 9+0+1=10"
    assert add_trace(5, 4) == "5+4+0=9"
    assert sub_trace(50, 50) == "0-0-0=0 5-5-0=0"
    # 40-18: borrow in the ones column, paid back in the tens -> 22
    assert sub_trace(40, 18) == "10-8-0=2 4-1-1=2"
    # 47*6: 7*6=42 write 2 carry 4; 4*6+4=28 -> 282
    assert mul1_trace(47, 6) == "7*6+0=42 4*6+4=28"
    # 23*45 = 23*5 + 23*40 = 115 + 920 = 1035
    assert mul2_trace(23, 45) == "23*5=115 23*40=920 115+920=1035"
    assert format_solution("7+5+0=12 4+8+1=13", "132") == "<think>7+5+0=12 4+8+1=13</think><answer>132</answer>"


def test_small_family_yields_fewer_rows_not_duplicates():
    rows = generate_family("add_1d", 500, seed=0)
    assert len(rows) == 100  # 10 x 10 one-digit pairs
    assert len({r["prompt"] for r in rows}) == 100


def test_mul_1x2_has_720_distinct_problems():
    # 90 two-digit numbers x multipliers 2..9: the default rl_per_family (2000) is more than exists.
    assert len(generate_family("mul_1x2", 5000, seed=0)) == 720
