"""The reward executor's worker process: score items in the main thread under a per-item timer.

Started by ``RewardExecutor`` with the ``spawn`` context (see ``tasks.rewards.executor`` for the
design): it ignores SIGINT, may run under an address-space limit, runs the rewards' ``warmup``
hooks, then scores work slices until it reads None or the parent goes away. Each result goes back
as its own message ``(index, name, status, value, error message)``.
"""

from __future__ import annotations

import math
import pickle
import signal
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any

_OK, _NA, _TIMEOUT, _ERROR = "ok", "na", "timeout", "error"


class ItemTimeout(BaseException):
    """Raised inside a reward by the worker's timer. A BaseException so ``except Exception`` in
    reward code (sympy and math-verify have many) cannot swallow it."""


def _raise_timeout(signum: int, frame: Any) -> None:
    raise ItemTimeout()


def _run_one(fn: Callable, completion: object, row: Any, timeout_s: float) -> tuple[str, float | None, str]:
    start = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            value = fn(completion, row)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except ItemTimeout:
        return _TIMEOUT, 0.0, ""
    except BaseException as e:  # SystemExit, MemoryError, RecursionError...: the worker lives on
        return _ERROR, 0.0, f"{type(e).__name__}: {e}"[:300]
    if time.monotonic() - start > timeout_s:  # the reward swallowed the alarm and finished late
        return _TIMEOUT, 0.0, ""
    if value is None:
        return _NA, None, ""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return _ERROR, 0.0, f"returned {type(value).__name__}, not a number"
    if not math.isfinite(value):
        return _ERROR, 0.0, f"returned {value}"
    return _OK, value, ""


def worker_main(
    conn: Connection, rewards: Mapping[str, Callable], timeout_s: float, memory_limit_mb: int | None
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_limit_mb:
        import resource

        limit = memory_limit_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for fn in rewards.values():
        warmup = getattr(fn, "warmup", None)
        if callable(warmup):
            warmup()
    signal.signal(signal.SIGALRM, _raise_timeout)
    conn.send(("ready",))
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if chunk is None:
            return
        for index, blob, names in chunk:
            try:
                completion, row = pickle.loads(blob)
            except Exception as e:
                for name in names:
                    conn.send((index, name, _ERROR, 0.0, f"could not unpickle item: {e}"[:300]))
                continue
            for name in names:
                conn.send((index, name, *_run_one(rewards[name], completion, row, timeout_s)))
