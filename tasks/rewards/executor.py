"""Run reward functions on untrusted completions in worker processes, with per-item deadlines.

The trainer never runs a reward itself: it calls ``RewardExecutor.score`` and gets back one score
per (reward, completion) in input order, whatever the completions do to the workers.

Design choices:

- Workers are started with the ``spawn`` context: a fresh interpreter that inherits no torch
  threads, CUDA state, locks or open handles from the trainer. They ignore SIGINT (the parent owns
  shutdown), may run under an address-space limit so a memory bomb raises MemoryError, and exit on
  EOF if the parent dies. At start each worker calls the rewards' ``warmup`` hooks (math-verify
  builds its LaTeX parser), so the first real item is not slow.
- Work goes out in chunks (about ``chunks_per_worker`` per worker per call) to keep IPC off the
  hot path while still balancing load; each result comes back as its own small message, which
  is what lets the parent know how far a worker has got.
- Two lines of defence per item. (1) In the worker, an ``ITIMER_REAL`` timer raises ``ItemTimeout``
  in the reward after ``timeout_s``; it works because the reward runs in the worker's main
  thread, and it stops pure-Python loops, sympy and sleeps without losing the worker. (2) In the
  parent, a wall-clock deadline of ``timeout_s + grace_s`` since the worker's last result: a
  worker stuck in C code, blocking signals, or dead (segfault, ``os._exit``, OOM kill) is killed,
  reaped and replaced; the item it was on is blamed (timeout if it overran, error if the worker
  died), and the rest of its chunk goes back to the front of the queue for any live worker.
- Size cap: a completion (str/bytes) longer than ``max_completion_chars`` is never pickled or
  sent: it scores 0.0 for every applicable reward and is counted in ``oversize``
  (``reward/oversize``), so a 50 MB output costs the parent a ``len()``, not a pickle and a pipe.
- Outcomes: a number -> that score; None -> not applicable (counted); a timeout -> 0.0 counted in
  ``timeouts``; an exception, a non-finite or non-numeric return, or a crash -> 0.0 counted in
  ``errors`` with the first messages kept for the log. Nothing fails silently.

Not thread-safe: one executor per trainer loop.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import pickle
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from tasks.rewards.worker import _ERROR, _NA, _OK, _TIMEOUT, ItemTimeout, worker_main  # noqa: F401 (re-export)

_MAX_MESSAGES = 20  # error messages kept per call

Unit = tuple[int, str]  # (completion index, reward name)
WorkSlice = list[tuple[int, bytes, tuple[str, ...]]]  # (index, pickled (completion, row), reward names)


# ----------------------------------------------------------------------------- parent side
def applicable_rewards(row: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, ...]:
    """The rewards in ``names`` that apply to ``row``: all of them, unless the row carries a
    ``rewards`` list (or a comma-separated string, as parquet columns often hold) naming its own.

    This is how one GRPO batch mixes task types: math rows list ``accuracy``, code rows ``code``,
    and both share ``format``. The rest are "not applicable" for that row (None, counted).

    >>> applicable_rewards({"answer": "3"}, ("accuracy", "format"))
    ('accuracy', 'format')
    >>> applicable_rewards({"rewards": "code,format"}, ("accuracy", "code", "format"))
    ('code', 'format')
    """
    own = row.get("rewards")
    if own is None:
        return names
    if isinstance(own, str):
        own = [n.strip() for n in own.split(",") if n.strip()]
    try:
        own = set(own)
    except TypeError:
        raise ValueError(
            f"row {row.get('id', '?')!r}: 'rewards' must be a list of names, got {own!r}"
        ) from None
    return tuple(n for n in names if n in own)


@dataclass
class ScoreResult:
    """Scores for one batch: ``per_reward[name][i]`` is reward ``name`` on completion ``i``."""

    per_reward: dict[str, list[float | None]]
    timeouts: int = 0
    errors: int = 0
    not_applicable: int = 0
    oversize: int = 0
    error_messages: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def metrics(self) -> dict[str, float]:
        """``reward/<name>`` means over applicable items, plus the counts, for the tracker."""
        from tasks.rewards import applicable_mean

        return {f"reward/{name}": applicable_mean(v) for name, v in self.per_reward.items()} | self.counts()

    def counts(self) -> dict[str, float]:
        """Items that timed out, raised, were too long to send (oversize), or that no requested reward applied to."""
        return {"reward/timeouts": self.timeouts, "reward/errors": self.errors, "reward/not_applicable": self.not_applicable,
                "reward/oversize": self.oversize}


@dataclass(eq=False)  # identity semantics: two workers are never "equal"
class _Worker:
    proc: mp.process.BaseProcess
    conn: Connection
    started: float
    ready: bool = False
    chunk: dict[int, tuple[bytes, tuple[str, ...]]] = field(default_factory=dict)
    units: deque[Unit] = field(default_factory=deque)  # unfinished units, in the worker's order
    last_progress: float = 0.0


class RewardExecutor:
    """A pool of spawned worker processes that score completions with registered rewards.

    Args:
        workers: number of worker processes.
        timeout_s: per (completion, reward) deadline; an overrun scores 0.0 and counts as a timeout.
        rewards: name -> reward function (module-level, so it pickles by reference); default REWARDS.
        grace_s: extra wall time the parent allows beyond ``timeout_s`` before killing a worker.
        memory_limit_mb: address-space limit per worker (None: no limit).
        chunks_per_worker: how finely a batch is split, for load balancing.
        start_timeout_s: how long a worker may take to start before it is counted as failed.
        max_completion_chars: longer completions score 0.0 without being sent (counted as oversize).
    """

    def __init__(
        self,
        workers: int = 2,
        timeout_s: float = 5.0,
        rewards: Mapping[str, Callable] | None = None,
        grace_s: float = 0.25,
        memory_limit_mb: int | None = 4096,
        chunks_per_worker: int = 4,
        start_timeout_s: float = 120.0,
        max_completion_chars: int = 4 * 2**20,
    ) -> None:
        if workers < 1:
            raise ValueError(f"RewardExecutor: workers must be >= 1 (got {workers})")
        if not timeout_s > 0:
            raise ValueError(f"RewardExecutor: timeout_s must be > 0 (got {timeout_s})")
        if rewards is None:
            from tasks.rewards import REWARDS

            rewards = REWARDS
        self.rewards = dict(rewards)
        self.timeout_s, self.grace_s = float(timeout_s), float(grace_s)
        self.memory_limit_mb, self.chunks_per_worker = memory_limit_mb, chunks_per_worker
        self.start_timeout_s, self.max_completion_chars = start_timeout_s, max_completion_chars
        self._ctx = mp.get_context("spawn")
        self._failed_starts = 0
        self._closed = False
        self._workers = [self._spawn() for _ in range(workers)]

    # ------------------------------------------------------------------ lifecycle
    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=worker_main,
            name="reward-worker",
            daemon=True,
            args=(child_conn, self.rewards, self.timeout_s, self.memory_limit_mb),
        )
        proc.start()
        child_conn.close()  # so the parent sees EOF when the child dies
        return _Worker(proc, parent_conn, started=time.monotonic())

    def _retire(
        self, w: _Worker, blame: str, why: str, res: ScoreResult | None, queue: deque[WorkSlice]
    ) -> None:
        """Kill and reap ``w``, keep results it already sent, blame its current unit, requeue the
        rest of its chunk, and put a fresh worker in its place."""
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join()
        if res is not None:
            self._drain(w, res)
        w.conn.close()
        if w.units and res is not None:
            index, name = w.units.popleft()
            self._record(res, index, name, blame, 0.0, f"{why}, exit code {w.proc.exitcode}")
            rest: WorkSlice = []
            for i, (blob, _) in w.chunk.items():
                names = tuple(n for j, n in w.units if j == i)
                if names:
                    rest.append((i, blob, names))
            if rest:
                queue.appendleft(rest)
        if not w.ready:
            self._failed_starts += 1
            if self._failed_starts >= 3:
                raise RuntimeError(
                    f"reward workers failed to start {self._failed_starts} times in a row "
                    f"(last exit code {w.proc.exitcode}); check the rewards import cleanly"
                )
        self._workers[self._workers.index(w)] = self._spawn()

    def close(self) -> None:
        """Stop every worker and reap it; idempotent."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 2.0
        for w in self._workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            w.conn.close()

    def __enter__(self) -> RewardExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:  # interpreter shutdown: multiprocessing may be half torn down
                pass

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers (changes when a worker is replaced)."""
        return [w.proc.pid for w in self._workers]

    # ------------------------------------------------------------------ scoring
    def score(
        self, completions: Sequence[object], rows: Sequence[Mapping[str, Any]], names: Sequence[str]
    ) -> ScoreResult:
        """Score every completion with every named reward; results are in input order."""
        if self._closed:
            raise RuntimeError("RewardExecutor.score: the executor is closed")
        if len(completions) != len(rows):
            raise ValueError(f"RewardExecutor.score: {len(completions)} completions but {len(rows)} rows")
        names = tuple(names)
        unknown = [n for n in names if n not in self.rewards]
        if unknown:
            raise ValueError(
                f"RewardExecutor.score: unknown reward {unknown[0]!r}; known: {sorted(self.rewards)}"
            )
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise ValueError(f"RewardExecutor.score: rows[{i}] is {type(row).__name__}, not a mapping")
        for w in list(self._workers):
            if w.units:  # a previous call was interrupted mid-chunk: its late results must not leak in
                w.units.clear()
                self._retire(w, _ERROR, "abandoned", None, deque())
        t0 = time.monotonic()
        n = len(completions)
        res = ScoreResult(per_reward={name: [None] * n for name in names})
        self._remaining = n * len(names)

        items = []
        for i, (completion, row) in enumerate(zip(completions, rows, strict=True)):
            applicable = applicable_rewards(row, names)
            for name in names:
                if name not in applicable:  # the row says this reward is not for it
                    self._record(res, i, name, _NA, None, "")
            if not applicable:
                continue
            if (
                isinstance(completion, (str, bytes, bytearray))
                and len(completion) > self.max_completion_chars
            ):
                res.oversize += 1
                for name in applicable:
                    self._record(res, i, name, _OK, 0.0, "")
                continue
            try:
                items.append(
                    (i, pickle.dumps((completion, dict(row)), protocol=pickle.HIGHEST_PROTOCOL), applicable)
                )
            except Exception as e:  # the trainer passed something unpicklable: an error, not a crash
                for name in names:
                    self._record(res, i, name, _ERROR, 0.0, f"could not pickle item {i}: {e}"[:300])
        size = max(1, math.ceil(len(items) / (len(self._workers) * self.chunks_per_worker)))
        queue: deque[WorkSlice] = deque(items[k : k + size] for k in range(0, len(items), size))

        while self._remaining > 0:
            self._dispatch(queue, res)
            self._pump(res, queue)
        res.wall_s = time.monotonic() - t0
        return res

    def _record(
        self, res: ScoreResult, index: int, name: str, status: str, value: float | None, msg: str
    ) -> None:
        res.per_reward[name][index] = value
        self._remaining -= 1
        if status == _NA:
            res.not_applicable += 1
        elif status == _TIMEOUT:
            res.timeouts += 1
        elif status == _ERROR:
            res.errors += 1
            if len(res.error_messages) < _MAX_MESSAGES:
                res.error_messages.append(f"item {index}, {name}: {msg}")

    def _dispatch(self, queue: deque[WorkSlice], res: ScoreResult) -> None:
        for w in self._workers:
            if not queue:
                return
            if w.ready and not w.units:
                chunk = queue.popleft()
                w.chunk = {i: (blob, names) for i, blob, names in chunk}
                w.units = deque((i, name) for i, _, names in chunk for name in names)
                w.last_progress = time.monotonic()
                try:
                    w.conn.send(chunk)
                except OSError:  # died while idle: nothing of this chunk ran, so blame nothing
                    w.units.clear()
                    queue.appendleft(chunk)
                    self._retire(w, _ERROR, "worker died", res, queue)

    def _pump(self, res: ScoreResult, queue: deque[WorkSlice]) -> None:
        """Wait for results, deaths or the nearest deadline, and handle whichever came."""
        now = time.monotonic()
        deadlines = [w.last_progress + self.timeout_s + self.grace_s for w in self._workers if w.units]
        deadlines += [w.started + self.start_timeout_s for w in self._workers if not w.ready]
        if not deadlines:  # every worker idle and ready, yet units missing: a bug, not a hang
            raise RuntimeError(f"RewardExecutor: {self._remaining} results missing with no work in flight")
        timeout = max(0.0, min(deadlines) - now)
        by_handle: dict[Any, _Worker] = {}
        for w in self._workers:
            by_handle[w.conn] = w
            by_handle[w.proc.sentinel] = w
        ready = wait(list(by_handle), timeout)
        handled: set[int] = set()
        for handle in ready:
            w = by_handle[handle]
            if id(w) in handled:
                continue
            handled.add(id(w))
            alive = self._drain(w, res)
            if not alive or not w.proc.is_alive():
                self._retire(w, _ERROR, "worker died", res, queue)
        now = time.monotonic()
        for w in list(self._workers):
            if w.units and now > w.last_progress + self.timeout_s + self.grace_s:
                self._retire(
                    w,
                    _TIMEOUT,
                    f"no result within {self.timeout_s + self.grace_s:.2f}s, worker killed",
                    res,
                    queue,
                )
            elif not w.ready and now > w.started + self.start_timeout_s:
                self._retire(w, _ERROR, "worker did not start in time", res, queue)

    def _drain(self, w: _Worker, res: ScoreResult) -> bool:
        """Read every message waiting on ``w``'s pipe; False once the pipe is closed."""
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                if msg[0] == "ready":
                    w.ready, w.last_progress = True, time.monotonic()
                    self._failed_starts = 0
                    continue
                index, name, status, value, err = msg
                w.units.remove((index, name))  # the head, as the worker runs units in order
                self._record(res, index, name, status, value, err)
                w.last_progress = time.monotonic()
        except (EOFError, OSError):
            return False
        return True
