"""The code reward on all 974 MBPP tasks (``../shared/data/mbpp``), through the real executor and
sandbox: each reference solution (``code``) scores 1.0 on its own tests, and a wrong solution (the
reference with the tested function replaced by one returning ``object()``, which is never a plain
value) scores 0.0. A row's tests are its ``test_list``, each preceded by ``test_setup_code``.

``KNOWN_SLOW`` lists the reference that can run out of time (the sample test skips it; the
benchmark reports what it scored).
"""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest

from tasks.rewards.executor import RewardExecutor

MBPP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"
# A reference whose own tests take longer than the code reward's row budget on a loaded 2-core box.
KNOWN_SLOW = {123: "amicable_numbers_sum(9999) takes seconds of CPU: over ROW_BUDGET_S under load"}


def mbpp_rows() -> list[dict]:
    assert MBPP.is_file(), f"MBPP data missing: {MBPP} (the tests need ../shared beside the checkout)"
    return [json.loads(line) for line in MBPP.open()]


def as_code_row(task: dict) -> dict:
    setup = task["test_setup_code"].strip()
    tests = [{"assert": f"{setup}\n{t}" if setup else t} for t in task["test_list"]]
    return {"id": task["task_id"], "tests": json.dumps(tests), "rewards": ["code"]}


def fenced(code: str) -> str:
    return f"<think>solve</think><answer>\n```python\n{code}\n```\n</answer>"


def wrong(task: dict) -> str:
    """The reference with every function it defines that the tests call replaced."""
    defined = {n.name for n in ast.parse(task["code"]).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    called = {
        n.func.id
        for t in task["test_list"]
        for n in ast.walk(ast.parse(t))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    names = sorted(defined & called)
    assert names, f"task {task['task_id']}: no tested function found"
    return task["code"] + "".join(f"\n\ndef {n}(*args, **kwargs):\n    return object()\n" for n in names)


def check(tasks: list[dict], workers: int = 2) -> tuple[set[int], set[int], object, float]:
    """Score each task's reference and wrong solution through the executor; returns the task ids
    whose reference did not score 1.0, those whose wrong solution did not score 0.0, the
    ``ScoreResult`` and the wall time."""
    rows = [as_code_row(t) for t in tasks]
    completions = [fenced(t["code"]) for t in tasks] + [fenced(wrong(t)) for t in tasks]
    t0 = time.monotonic()
    with RewardExecutor(workers=workers, timeout_s=6.0) as ex:
        res = ex.score(completions, rows + rows, ["code"])
    wall = time.monotonic() - t0
    scores = res.per_reward["code"]
    refs = {t["task_id"] for t, s in zip(tasks, scores[: len(tasks)]) if s != 1.0}
    wrongs = {t["task_id"] for t, s in zip(tasks, scores[len(tasks) :]) if s != 0.0}
    return refs, wrongs, res, wall


@pytest.mark.slow
def test_mbpp_references_pass_and_wrong_solutions_fail():
    """Every 8th task here (~25 s); ``make bench-rewards`` runs all 974 and reports the figures."""
    tasks = mbpp_rows()
    assert len(tasks) == 974
    sample = [t for k, t in enumerate(tasks) if k % 8 == 0 and t["task_id"] not in KNOWN_SLOW]
    refs, wrongs, res, wall = check(sample)
    print(f"MBPP sample: {len(sample)} tasks, {2 * len(sample)} completions in {wall:.1f} s")
    assert (res.errors, res.timeouts) == (0, 0), res.error_messages
    assert refs == set() and wrongs == set()
