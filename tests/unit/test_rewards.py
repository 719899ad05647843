"""Reward functions: extraction, math equivalence, format, registry, combine.

These call the rewards directly (in the test process, main thread), which is fine for known
inputs; untrusted/pathological inputs are exercised through the executor in test_executor.py.
"""

from __future__ import annotations

import doctest
import subprocess
import sys
import time

import pytest

import tasks.rewards
import tasks.rewards.code
import tasks.rewards.executor
import tasks.rewards.format
import tasks.rewards.length
import tasks.rewards.math
from tasks.rewards import REWARDS, combine
from tasks.rewards.format import format_reward, tag_count
from tasks.rewards.math import MAX_ANSWER_CHARS, GoldParseError, accuracy, extract_answer


@pytest.mark.parametrize(
    "module",
    [
        tasks.rewards,
        tasks.rewards.math,
        tasks.rewards.format,
        tasks.rewards.length,
        tasks.rewards.code,
        tasks.rewards.executor,
    ],
)
def test_docstring_examples(module):
    failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failed == 0


# ----------------------------------------------------------------------------- accuracy
def wrap(answer: str) -> str:
    return f"<think>work</think><answer>{answer}</answer>"


@pytest.mark.parametrize(
    "answer, gold, expected",
    [
        ("132", "132", 1.0),
        ("133", "132", 0.0),
        ("-7", "-7", 1.0),
        ("7", "-7", 0.0),
        ("1,000", "1000", 1.0),
        ("1000", "1,000", 1.0),
        ("1,234,567", "1234567", 1.0),
        ("1{,}000", "1000", 1.0),
        (r"\$1,000", "1000", 1.0),
        ("1,2", "12", 0.0),  # not a thousands separator
        (r"\frac{3}{4}", "0.75", 1.0),
        ("0.75", r"\frac{3}{4}", 1.0),
        ("3/4", r"\frac{3}{4}", 1.0),
        (r"\frac{3}{4}", "3/4", 1.0),
        (r"\dfrac{3}{4}", "0.75", 1.0),
        (r"\frac{3}{4}", "0.7", 0.0),
        ("2^{10}", "1024", 1.0),
        (r"3\frac{1}{2}", "3.5", 1.0),
        ("132.0", "132", 1.0),
        ("18 dollars", "18", 1.0),
        ("x^2+1", "1+x^{2}", 1.0),
        ("", "132", 0.0),
        ("banana", "132", 0.0),
        # issue 10: LaTeX answers once read as a single number by the plain-text reader
        ("5", "6 - 5i", 0.0),
        ("7", "3, 5, 7", 0.0),
        ("(-2, 1)", "(-2,1)", 1.0),
        (r"\boxed{(2, 12) \cup (12, 102)}", r"(2,12) \cup (12,102)", 1.0),
        ("2k+2+1", "2k+2", 0.0),
        ("-13x+3+1", "-13x+3", 0.0),
        ("1+274i+1", "1+274i", 0.0),
        ("1,-2+1", "1,-2", 0.0),
        ("-2x", "y = -2x", 1.0),
        ("y = -2x+1", "y = -2x", 0.0),
        (".0000672+1", ".0000672", 0.0),
        (".0000672", "6.72 \\times 10^{-5}", 1.0),
        ("5,000 dollars", "5000", 1.0),
        (r"\dfrac{1}{29,\!322,\!216}", r"\frac{1}{29322216}", 1.0),
        (r"-\frac{5}{3}.", r"-\frac53", 1.0),
    ],
)
def test_accuracy_values(answer, gold, expected):
    assert accuracy(wrap(answer), {"answer": gold}) == expected


@pytest.mark.parametrize(
    "completion, expected",
    [
        (r"First \boxed{5}, no wait: \boxed{\frac{3}{4}}", 1.0),
        (r"\boxed{\frac{3}{4}", 0.0),  # box never closed
        ("\\boxed{\\frac{3}{4}\n#### 0.75", 1.0),  # unbalanced box falls through to ####
        ("7 * 4 = 28\n#### 0.75\n", 1.0),
        ("#### 1\n#### 0.75", 1.0),  # the last #### line
        ("<answer>0.75</answer> \\boxed{1}", 1.0),  # answer tag beats box
        ("<answer>1</answer><answer>0.75</answer>", 1.0),  # the last answer tag
        ("<answer><answer>0.75</answer>", 1.0),
        ("<answer>0.75", 0.0),  # truncated
        ("0.75</answer>", 0.0),  # no opening tag
        ("</answer>0.75<answer>", 0.0),  # tags reversed
        ("the answer is 0.75", 0.0),  # nothing marked
    ],
)
def test_accuracy_extraction(completion, expected):
    assert accuracy(completion, {"answer": "3/4"}) == expected


def test_extract_answer_rules():
    assert extract_answer("<answer> 12 </answer>") == "12"
    assert extract_answer(r"\boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert extract_answer(r"\boxed{a{b}c}") == "a{b}c"
    assert extract_answer("Total\n  ####   1,000  \n") == "1,000"
    assert extract_answer("no answer here #### inline") is None  # #### must start a line
    assert extract_answer(r"\boxed{") is None
    assert extract_answer(r"so $\boxed 2$.") == "2"  # brace-less, as two MATH solutions write it
    assert extract_answer(r"\boxed {17}.") == "17"


@pytest.mark.parametrize(
    "completion", [None, "", 132, 1.0, b"<answer>132</answer>", ["<answer>132</answer>"]]
)
def test_accuracy_non_string_or_empty_completion_is_zero(completion):
    assert accuracy(completion, {"answer": "132"}) == 0.0


def test_accuracy_megabyte_completions_are_cheap():
    junk = "x{<answer>\\boxed{" * (2**20 // 16)
    start = time.perf_counter()
    assert accuracy(junk + "<answer>132</answer>", {"answer": "132"}) == 1.0
    assert accuracy(junk, {"answer": "132"}) == 0.0  # unbalanced everything: nothing extracted
    assert accuracy("<answer>" + "1" * 2**20 + "</answer>", {"answer": "132"}) == 0.0  # over the cap
    assert time.perf_counter() - start < 2.0


def test_accuracy_length_cap_is_exact():
    ok = "0" * (MAX_ANSWER_CHARS - 3) + "132"
    assert accuracy(wrap(ok), {"answer": "132"}) == 1.0
    assert accuracy(wrap("0" + ok), {"answer": "132"}) == 0.0


def test_accuracy_without_gold_is_not_applicable():
    assert accuracy(wrap("1"), {"prompt": "p"}) is None
    assert accuracy(wrap("1"), {"answer": None}) is None


@pytest.mark.parametrize("gold", ["", "   ", r"\frac{3}{", "}{"])
def test_unparseable_gold_raises_named_error(gold):
    with pytest.raises(GoldParseError, match="gold answer"):
        accuracy(wrap("1"), {"answer": gold})


def test_numeric_gold_is_read_as_text():
    assert accuracy(wrap("132"), {"answer": 132}) == 1.0


# ----------------------------------------------------------------------------- format
@pytest.mark.parametrize(
    "completion, fmt, tags",
    [
        ("<think>7+5+0=12 4+8+1=13</think><answer>132</answer>", 1.0, 1.0),
        ("\n <think>a</think>\n<answer>1</answer> \n", 1.0, 1.0),
        ("<think></think><answer>1</answer>", 1.0, 1.0),  # empty think is allowed
        ("<think>a</think><answer></answer>", 0.0, 1.0),  # empty answer is not
        ("<think>a</think><answer>1</answer> trailing", 0.0, 1.0),
        ("lead <think>a</think><answer>1</answer>", 0.0, 1.0),
        ("<think>a</think><answer>1", 0.0, 0.75),
        ("<think>a</think>1", 0.0, 0.5),
        ("<think>a", 0.0, 0.25),
        ("132", 0.0, 0.0),
        ("<answer>1</answer><think>a</think>", 0.0, 0.0),
        ("<think>a</answer><answer>1</think>", 0.0, 0.25),  # only <think> is in order with all others
        ("<think>a</think><think>b</think><answer>1</answer>", 0.0, 0.5),
        ("<think>a<answer>1</answer></think>", 0.0, 0.25),  # nested: </think> after the answer
        (None, 0.0, 0.0),
        (42, 0.0, 0.0),
    ],
)
def test_format_and_tag_count(completion, fmt, tags):
    assert format_reward(completion, {}) == fmt
    assert tag_count(completion, {}) == tags


def test_format_on_a_megabyte():
    big = "<think>" + "7+5=12 " * (2**20 // 7) + "</think><answer>132</answer>"
    assert format_reward(big, {}) == 1.0
    assert tag_count(big, {}) == 1.0


# ----------------------------------------------------------------------------- registry + combine
def test_registry_names():
    assert set(REWARDS) == {"accuracy", "format", "tag_count", "length", "code", "code_binary"}
    assert REWARDS["format"] is format_reward


def test_importing_the_registry_is_cheap():
    code = (
        "import sys, tasks.rewards; "
        "heavy = [m for m in ('math_verify', 'sympy', 'torch') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_validates_reward_names_against_registry():
    from tasks.config import GRPOConfig

    assert GRPOConfig(rewards={"accuracy": 1.0, "tag_count": 0.25}).rewards["tag_count"] == 0.25
    with pytest.raises(ValueError, match="unknown reward 'acuracy'"):
        GRPOConfig(rewards={"acuracy": 1.0})


def test_combine_weights_and_none():
    per = {"accuracy": [1.0, 0.0, None, 1.0], "format": [1.0, 1.0, 1.0, None], "tag_count": [9.0] * 4}
    assert combine(per, {"accuracy": 1.0, "format": 0.5}) == [1.5, 0.5, 0.5, 1.0]
    assert combine(per, {"format": -2.0}) == [-2.0, -2.0, -2.0, 0.0]
    assert combine({"accuracy": []}, {"accuracy": 1.0}) == []


def test_combine_rejects_bad_input():
    with pytest.raises(ValueError, match="weights is empty"):
        combine({"accuracy": [1.0]}, {})
    with pytest.raises(ValueError, match="'format' but no scores"):
        combine({"accuracy": [1.0]}, {"format": 1.0})
    with pytest.raises(ValueError, match="differ in length"):
        combine({"accuracy": [1.0], "format": [1.0, 0.0]}, {"accuracy": 1.0, "format": 1.0})
