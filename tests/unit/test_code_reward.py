"""The code rewards: extraction, test parsing, scores, and scoring through the RewardExecutor."""

from __future__ import annotations

import json

import pytest

from tasks.rewards.code import code_binary, code_reward, extract_code, parse_tests
from tasks.rewards.executor import RewardExecutor

ADD = [{"input": "2 3\n", "output": "5\n"}, {"input": "10 -4\n", "output": "6"}]
DOUBLE = json.dumps(
    [{"assert": "assert f(2) == 4"}, {"assert": "assert f(0) == 0"}, {"assert": "assert f(-1) == -2"}]
)


def fenced(code: str, tag: str = "python") -> str:
    return f"<think>easy</think><answer>\n```{tag}\n{code}\n```\n</answer>"


def test_extract_prefers_the_answer_block_and_skips_other_languages():
    text = "```python\nprint('draft')\n```\n<answer>```python\nprint(1)\n```\n```text\n1\n```</answer>"
    assert extract_code(text) == "print(1)\n"
    assert extract_code("<answer>42</answer> ```\nprint(2)\n```") == "print(2)\n"  # no block in the answer
    assert extract_code("```bash\nrm -rf /\n```") is None
    assert extract_code("no code") is None


def test_parse_tests_errors_name_the_problem():
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_tests("[{")
    with pytest.raises(ValueError, match="non-empty list"):
        parse_tests("[]")
    with pytest.raises(ValueError, match=r"tests\[1\]: assert is not valid Python"):
        parse_tests([{"assert": "assert 1"}, {"assert": "assert ("}])
    with pytest.raises(ValueError, match=r"tests\[0\]: .* got keys \['input', 'output', 'x'\]"):
        parse_tests([{"input": "", "output": "", "x": ""}])
    with pytest.raises(ValueError, match="got int"):
        parse_tests([3])


def test_code_reward_scores():
    add = "a, b = map(int, input().split())\nprint(a + b)"
    assert code_reward(fenced(add), {"tests": ADD}) == 1.0
    assert code_binary(fenced(add), {"tests": ADD}) == 1.0
    half = "a, b = map(int, input().split())\nprint(a + abs(b))"  # right for 2 3, wrong for 10 -4
    assert code_reward(fenced(half), {"tests": ADD}) == 0.5
    assert code_binary(fenced(half), {"tests": ADD}) == 0.0
    assert code_reward(fenced("def f(x):\n    return x + x"), {"tests": DOUBLE}) == 1.0
    assert code_reward(fenced("def f(x):\n    return abs(2 * x)"), {"tests": DOUBLE}) == pytest.approx(2 / 3)
    assert code_reward(fenced("print(5)", tag="text"), {"tests": ADD}) == 0.0  # not python: not run
    assert code_reward(12, {"tests": ADD}) == 0.0
    assert code_reward(fenced(add), {"answer": "5"}) is None
    assert code_binary(fenced(add), {"answer": "5"}) is None
    with pytest.raises(ValueError):
        code_reward(fenced(add), {"tests": "not json"})


def test_executor_scores_a_batch_with_an_infinite_loop_in_order():
    good = fenced("a, b = map(int, input().split())\nprint(a + b)")
    loop = fenced("while True:\n    pass")
    completions = [
        good,
        loop,
        None,
        fenced("print(5)"),
        good,
        "no code",
        good,
        fenced("import os\nos._exit(0)"),
    ]
    rows = [{"tests": ADD}] * 8
    rows[4] = {"answer": "5"}  # a math row: not applicable
    with RewardExecutor(2, timeout_s=6.0, rewards={"code": code_reward}) as ex:
        res = ex.score(completions, rows, ["code"])
    assert res.per_reward["code"] == [1.0, 0.0, 0.0, 0.5, None, 0.0, 1.0, 0.0]
    assert (res.timeouts, res.errors, res.not_applicable) == (0, 0, 1)
