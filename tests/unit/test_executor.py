"""RewardExecutor: order, counts and containment of hostile or pathological rewards and inputs.

One executor is shared by most tests (workers start in ~2-3 s); each test checks that results
come back in input order with exact values and exact counts, and tests that break a worker also
check that the dead process was reaped and that the executor keeps working.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

import pytest

from tasks.rewards import combine
from tasks.rewards.executor import RewardExecutor
from tasks.rewards.format import format_reward
from tasks.rewards.math import accuracy

TIMEOUT_S = 1.0


def chaos(completion: object, row: dict) -> float | None:
    """A reward whose behaviour the completion picks; otherwise len(completion)."""
    if completion == "sleep":  # interruptible: the worker's own timer stops it
        time.sleep(3600)
    if completion == "stubborn":  # ignores the worker's timer: only the parent's kill stops it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(3600)
    if completion == "exit":
        os._exit(3)
    if completion == "segfault":
        ctypes.string_at(0)
    if completion == "raise":
        raise ValueError("boom")
    if completion == "alloc":  # beyond the worker's address-space limit
        bytearray(64 * 2**30)
    if completion == "none":
        return None
    if completion == "nan":
        return float("nan")
    if completion == "text":
        return "high"  # type: ignore[return-value]
    if completion == "pid":
        return float(os.getpid())
    return float(len(completion))  # type: ignore[arg-type]


REWARDS = {"accuracy": accuracy, "format": format_reward, "chaos": chaos}


@pytest.fixture(scope="module")
def executor():
    with RewardExecutor(workers=2, timeout_s=TIMEOUT_S, rewards=REWARDS) as ex:
        ex.score(["<answer>1</answer>"] * 4, [{"answer": "1"}] * 4, ["accuracy"])  # wait for start-up
        yield ex


def reaped(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")  # a zombie keeps its /proc entry until reaped


def run_chaos(ex: RewardExecutor, completions: list):
    return ex.score(completions, [{}] * len(completions), ["chaos"])


def test_math_and_format_in_order(executor):
    completions = [
        "<think>7+5+0=12 4+8+1=13</think><answer>132</answer>",
        "<think>x</think><answer>133</answer>",
        r"so \boxed{\frac{3}{4}}",
        "20 + 980\n#### 1,000",
        None,
        "<answer>1</answer>",
    ]
    rows = [
        {"answer": "132"},
        {"answer": "132"},
        {"answer": "0.75"},
        {"answer": "1000"},
        {"answer": "5"},
        {"id": 7},
    ]
    res = executor.score(completions, rows, ["accuracy", "format"])
    assert res.per_reward == {
        "accuracy": [1.0, 0.0, 1.0, 1.0, 0.0, None],
        "format": [1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    }
    assert (res.timeouts, res.errors, res.not_applicable) == (0, 0, 1)
    assert combine(res.per_reward, {"accuracy": 1.0, "format": 0.5}) == [1.5, 0.5, 1.0, 1.0, 0.0, 0.0]
    metrics = res.metrics()
    assert metrics["reward/accuracy"] == 3 / 5 and metrics["reward/format"] == 2 / 6
    assert metrics["reward/errors"] == 0


def test_rewards_never_run_in_the_callers_process(executor):
    res = run_chaos(executor, ["pid"] * 8)
    pids = {int(v) for v in res.per_reward["chaos"]}
    assert os.getpid() not in pids and pids <= set(executor.pids)


def test_large_batch_keeps_order(executor):
    n = 300
    completions = [f"<answer>{i}</answer>" for i in range(n)]
    rows = [{"answer": str(i if i % 3 else i + 1)} for i in range(n)]
    res = executor.score(completions, rows, ["accuracy"])
    assert res.per_reward["accuracy"] == [0.0 if i % 3 == 0 else 1.0 for i in range(n)]


@pytest.mark.parametrize("expr", ["9^{9^{9^{9}}}", "(10^{10})!", "10^{10^{10}}"])
def test_pathological_expression_times_out_and_batch_finishes(executor, expr):
    n, bad = 64, 37
    completions = [f"<answer>{i}</answer>" for i in range(n)]
    completions[bad] = f"<answer>{expr}</answer>"
    rows = [{"answer": str(i)} for i in range(n)]
    pids = executor.pids
    start = time.monotonic()
    res = executor.score(completions, rows, ["accuracy"])
    wall = time.monotonic() - start
    assert res.per_reward["accuracy"] == [0.0 if i == bad else 1.0 for i in range(n)]
    assert (res.timeouts, res.errors) == (1, 0)
    assert wall < TIMEOUT_S + 0.5, wall
    assert executor.pids == pids  # stopped by the worker's own timer: no worker was lost


def test_sleeping_reward_is_interrupted_in_the_worker(executor):
    pids = executor.pids
    res = run_chaos(executor, ["a", "sleep", "bbb", "cc"])
    assert res.per_reward["chaos"] == [1.0, 0.0, 3.0, 2.0]
    assert (res.timeouts, res.errors) == (1, 0)
    assert executor.pids == pids


def test_stubborn_reward_gets_its_worker_killed_and_replaced(executor):
    before = executor.pids
    completions = ["a", "stubborn", "bbb", "cc", "dddd", "e", "ff", "ggg"]
    start = time.monotonic()
    res = run_chaos(executor, completions)
    wall = time.monotonic() - start
    assert res.per_reward["chaos"] == [1.0, 0.0, 3.0, 2.0, 4.0, 1.0, 2.0, 3.0]
    assert (res.timeouts, res.errors) == (1, 0)
    assert wall < TIMEOUT_S + 1.0, wall
    lost = set(before) - set(executor.pids)
    assert len(lost) == 1 and all(reaped(p) for p in lost)
    assert run_chaos(executor, ["abc", "de"]).per_reward["chaos"] == [3.0, 2.0]  # still usable


@pytest.mark.parametrize("how", ["exit", "segfault"])
def test_dying_worker_is_contained(executor, how):
    before = executor.pids
    res = run_chaos(executor, ["a", "bb", how, "ccc", "dddd", "e"])
    assert res.per_reward["chaos"] == [1.0, 2.0, 0.0, 3.0, 4.0, 1.0]
    assert (res.timeouts, res.errors) == (0, 1)
    assert "worker died" in res.error_messages[0] and "item 2" in res.error_messages[0]
    lost = set(before) - set(executor.pids)
    assert len(lost) == 1 and all(reaped(p) for p in lost)
    assert run_chaos(executor, ["xy"]).per_reward["chaos"] == [2.0]


class Interrupt(Exception):
    pass


def _interrupt(signum, frame):
    raise Interrupt()


def test_interrupted_call_does_not_leak_into_the_next(executor):
    old = signal.signal(signal.SIGALRM, _interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)  # like Ctrl-C in the trainer during scoring
    try:
        with pytest.raises(Interrupt):
            run_chaos(executor, ["sleep", "a"])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    time.sleep(TIMEOUT_S)  # the abandoned "sleep" result is now waiting in a pipe
    res = run_chaos(executor, ["ab", "c", "def"])
    assert res.per_reward["chaos"] == [2.0, 1.0, 3.0]
    assert (res.timeouts, res.errors) == (0, 0)


def test_exceptions_and_bad_returns_are_counted_errors(executor):
    res = run_chaos(executor, ["raise", "nan", "text", "none", "alloc", "ok"])
    assert res.per_reward["chaos"] == [0.0, 0.0, 0.0, None, 0.0, 2.0]
    assert (res.timeouts, res.errors, res.not_applicable) == (0, 4, 1)
    joined = "\n".join(res.error_messages)
    assert "ValueError: boom" in joined and "MemoryError" in joined and "returned str" in joined


def test_unparseable_gold_is_an_error_not_a_crash(executor):
    rows = [{"answer": "132"}, {"answer": r"\frac{3}{"}, {"answer": "7"}]
    res = executor.score(
        ["<answer>132</answer>", "<answer>1</answer>", "<answer>7</answer>"], rows, ["accuracy"]
    )
    assert res.per_reward["accuracy"] == [1.0, 0.0, 1.0]
    assert res.errors == 1 and "GoldParseError" in res.error_messages[0]


def test_hostile_completions(executor):
    megabyte = "<think>" + "9" * 2**20 + "</think><answer>132</answer>"
    completions = [megabyte, "x" * 2**20, None, 132, b"<answer>132</answer>", "<answer>13", "", lambda: 1]
    res = executor.score(completions, [{"answer": "132"}] * len(completions), ["accuracy", "format"])
    assert res.per_reward["accuracy"] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert res.per_reward["format"] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert res.errors == 2 and "could not pickle item 7" in res.error_messages[0]  # the lambda


def test_bad_calls_name_the_problem(executor):
    with pytest.raises(ValueError, match="2 completions but 1 rows"):
        executor.score(["a", "b"], [{}], ["format"])
    with pytest.raises(ValueError, match="unknown reward 'acc'"):
        executor.score(["a"], [{}], ["acc"])
    with pytest.raises(ValueError, match=r"rows\[0\] is str"):
        executor.score(["a"], ["row"], ["format"])
    assert executor.score([], [], ["format"]).per_reward == {"format": []}


def test_close_leaves_no_processes_and_is_final():
    ex = RewardExecutor(workers=2, timeout_s=TIMEOUT_S, rewards={"format": format_reward})
    assert ex.score(["<think></think><answer>1</answer>"], [{}], ["format"]).per_reward == {"format": [1.0]}
    pids = ex.pids
    ex.close()
    ex.close()  # idempotent
    assert all(reaped(p) for p in pids)
    with pytest.raises(RuntimeError, match="closed"):
        ex.score(["a"], [{}], ["format"])


def _broken_warmup() -> None:
    raise ImportError("reward dependencies missing")


def broken(completion: object, row: dict) -> float:
    return 0.0


broken.warmup = _broken_warmup  # type: ignore[attr-defined]


def test_workers_that_cannot_start_raise_a_clear_error():
    with RewardExecutor(workers=1, timeout_s=TIMEOUT_S, rewards={"broken": broken}) as ex:
        with pytest.raises(RuntimeError, match="failed to start 3 times"):
            ex.score(["a"], [{}], ["broken"])


def test_oversize_completion_scores_zero_without_being_sent(executor):
    huge = "<answer>132</answer>" + "9" * (executor.max_completion_chars + 1)
    good = "<think>a</think><answer>132</answer>"
    res = executor.score([huge, good, huge.encode()], [{"answer": "132"}] * 3, ["accuracy", "format"])
    assert res.per_reward["accuracy"] == [0.0, 1.0, 0.0]
    assert res.per_reward["format"] == [0.0, 1.0, 0.0]
    assert (res.oversize, res.errors, res.timeouts) == (2, 0, 0)
    assert res.metrics()["reward/oversize"] == 2
