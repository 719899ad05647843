"""MBPP through the code reward: turn MBPP tasks into code-reward rows and check the reward on them.

Each reference solution (``code``) should score 1.0 on its own tests, and a wrong solution (the
reference with every tested function it defines replaced by one returning ``object()``, which is
never a plain value) 0.0. ``check`` scores both through the real ``RewardExecutor`` and sandbox;
``tests/unit/test_mbpp_code_reward.py`` runs it on a sample and ``make bench-rewards`` on all 974.
"""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

from tasks.rewards.executor import RewardExecutor, ScoreResult

MBPP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"


def mbpp_rows(path: Path = MBPP) -> list[dict]:
    """The MBPP tasks, one dict a line; a missing file is an error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"MBPP data missing: {path} (expected ../shared beside the checkout)")
    return [json.loads(line) for line in path.open()]


def as_code_row(task: dict) -> dict:
    """A code-reward row: the task's ``test_list`` as assert tests, each after ``test_setup_code``."""
    setup = task["test_setup_code"].strip()
    tests = [{"assert": f"{setup}\n{t}" if setup else t} for t in task["test_list"]]
    return {"id": task["task_id"], "tests": json.dumps(tests), "rewards": ["code"]}


def fenced(code: str) -> str:
    """A completion holding ``code`` the way the policy is asked to write it."""
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


def check(tasks: list[dict], workers: int = 2) -> tuple[set[int], set[int], ScoreResult, float]:
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
