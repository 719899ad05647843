"""One batch, two task types: math rows and code rows scored by the rewards that apply to each,
plus the length reward's wiring (the token facts travel on the row)."""

from __future__ import annotations

import json

import pytest

from tasks.rewards import combine
from tasks.rewards.executor import RewardExecutor, applicable_rewards
from tasks.rewards.length import length_reward, overlong_penalty

FENCE = "`" * 3
GOOD_CODE = f"<think>add</think><answer>{FENCE}python\na, b = map(int, input().split())\nprint(a + b)\n{FENCE}</answer>"
BAD_CODE = f"<think>add</think><answer>{FENCE}python\nprint(0)\n{FENCE}</answer>"
TESTS = json.dumps([{"input": "1 2", "output": "3"}, {"input": "5 5", "output": "10"}])


@pytest.fixture(scope="module")
def executor():
    with RewardExecutor(workers=2, timeout_s=5.0) as ex:
        yield ex


def test_mixed_batch_scores_each_row_with_its_rewards(executor):
    rows = [
        {"id": "m1", "answer": "3", "rewards": ["accuracy", "format"]},
        {"id": "m2", "answer": "3", "rewards": ["accuracy", "format"]},
        {"id": "c1", "tests": TESTS, "rewards": "code,format"},  # parquet-style comma string
        {"id": "c2", "tests": TESTS, "rewards": "code,format"},
    ]
    completions = ["<think>1+2</think><answer>3</answer>", "<think>1+2</think><answer>4</answer>", GOOD_CODE, BAD_CODE]
    res = executor.score(completions, rows, ["accuracy", "code", "format"])
    assert res.per_reward["accuracy"] == [1.0, 0.0, None, None]
    assert res.per_reward["code"] == [None, None, 1.0, 0.0]
    assert res.per_reward["format"] == [1.0, 1.0, 1.0, 1.0]
    assert (res.not_applicable, res.errors, res.timeouts) == (4, 0, 0)
    # weights: a not-applicable reward adds nothing, so both task types share one scale
    assert combine(res.per_reward, {"accuracy": 1.0, "code": 1.0, "format": 0.1}) == pytest.approx([1.1, 0.1, 1.1, 0.1])
    m = res.metrics()
    assert m["reward/accuracy"] == 0.5 and m["reward/code"] == 0.5 and m["reward/not_applicable"] == 4


def test_without_a_rewards_column_each_reward_decides(executor):
    # the code reward returns None on a row without tests; accuracy returns None without a gold
    rows = [{"answer": "3"}, {"tests": TESTS}]
    res = executor.score(["<answer>3</answer>", GOOD_CODE], rows, ["accuracy", "code"])
    assert res.per_reward["code"] == [None, 1.0]
    assert res.per_reward["accuracy"][0] == 1.0 and res.per_reward["accuracy"][1] is None
    assert res.not_applicable == 2


def test_a_row_that_wants_nothing_scored_is_all_not_applicable(executor):
    res = executor.score(["x", "y"], [{"rewards": []}, {"rewards": "format"}], ["format", "tag_count"])
    assert res.per_reward == {"format": [None, 0.0], "tag_count": [None, None]}
    assert res.not_applicable == 3


def test_bad_rewards_field_names_the_row():
    with pytest.raises(ValueError, match="row 'r7'.*'rewards' must be a list"):
        applicable_rewards({"id": "r7", "rewards": 5}, ("format",))


# ----------------------------------------------------------------------------- length
@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, 0.0), (48, 0.0), (49, -1 / 16), (56, -0.5), (63, -15 / 16), (64, -1.0), (65, -1.0), (1000, -1.0)],
)
def test_overlong_penalty_dapo_formula(n, expected):
    # L_max = 64, L_cache = 16: free up to 48 tokens, then linear down to -1 at 64, -1 beyond
    assert overlong_penalty(n, 64, 16) == pytest.approx(expected)


@pytest.mark.parametrize(("n", "max_tokens", "cache"), [(-1, 64, 16), (3, 0, 0), (3, 8, 9)])
def test_overlong_penalty_rejects_nonsense(n, max_tokens, cache):
    with pytest.raises(ValueError, match="overlong_penalty"):
        overlong_penalty(n, max_tokens, cache)


def test_length_reward_without_token_facts_is_a_counted_error(executor):
    facts = {"completion_tokens": 60, "max_completion_tokens": 64, "overlong_cache": 16}
    assert length_reward(None, facts) == -0.75  # the text is never read, even if it is not a string
    res = executor.score(["a", "b"], [facts, {"answer": "1"}], ["length"])
    assert res.per_reward["length"] == [-0.75, 0.0]
    assert res.errors == 1 and "row lacks completion_tokens" in res.error_messages[0]
