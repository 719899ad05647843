"""Tracking that never blocks training: a stage's MLflow calls go through a journal and a thread.

A stage's run handle (``tasks.tracking.StageRun``) does not call MLflow. Each call (create the
run, params, metrics, tags, artifacts, the final status) becomes an *op*:

- The op is first appended to a local journal, ``<spool dir>/<stage>-<time>-<pid>/journal.jsonl``
  (artifact files are copied beside it), by the training thread: one line, a few microseconds.
  So nothing logged is lost, even if the process is killed.
- One background thread delivers the ops in order. Each HTTP request has a short timeout and no
  inner retries (:data:`HTTP_ENV`, unless the user set them), so one attempt costs seconds, not
  MLflow's default minutes of back-off. Consecutive params/metrics/tags calls are merged into one
  request (within MLflow's batch limits), so a backlog drains quickly. A failed attempt is retried with back-off (1 s doubling to
  15 s); the first failure and the recovery are printed ("tracking: ... unreachable ... spooling",
  "tracking: ... back"). A delivered op is marked in the journal (a watermark), so a replay never
  sends it twice. An op the server *refuses* (a 4xx: a bad value) is dropped with a warning rather
  than retried forever.
- ``close`` (end of the stage) gives the thread ``flush_s`` seconds (default 60,
  ``R1FLOW_TRACKING_FLUSH_S``) to deliver what is left. What is then still pending stays in the
  journal and the stage says so: ``python -m tasks.tracking flush`` delivers it later. A journal
  fully delivered is deleted.

The spool dir is ``R1FLOW_SPOOL_DIR`` or ``.r1flow/spool`` under the working directory (the
project root for DVC stages; the Prefect flow points experiment runs at the workspace's).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

SPOOL_ENV, FLUSH_ENV = "R1FLOW_SPOOL_DIR", "R1FLOW_TRACKING_FLUSH_S"
# One HTTP attempt of at most 5 s; the retry loop below owns the waiting.
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
BACKOFF_S = (1.0, 15.0)


def spool_root() -> Path:
    return Path(os.environ.get(SPOOL_ENV) or Path.cwd() / ".r1flow" / "spool")


def _say(msg: str) -> None:
    print(f"tracking: {msg}", file=sys.stderr, flush=True)


class Spool:
    """Journal + ordered background delivery of one MLflow run's ops (see the module docstring)."""

    def __init__(
        self, uri: str, experiment: str, run_name: str, tags: dict[str, str], background: bool = True
    ):
        for k, v in HTTP_ENV.items():
            os.environ.setdefault(k, v)
        self._setup(
            spool_root() / f"{run_name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}", uri, experiment
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        self._journal({"uri": uri, "experiment": experiment, "run_name": run_name})
        self.submit({"kind": "create", "run_name": run_name, "tags": tags})
        if background:
            self._thread.start()

    def _setup(self, path: Path, uri: str, experiment: str) -> None:
        self.dir, self.uri, self.experiment = path, uri, experiment
        self._lock, self._cond = threading.Lock(), threading.Condition()
        self._ops: list[dict[str, Any]] = []  # every op; self._sent of them are delivered
        self._sent, self._closing, self._deadline = 0, False, None
        self._run_id: str | None = None
        self._client = None
        self._down_since: float | None = None
        self.delivered = self.dropped = 0
        self._thread = threading.Thread(target=self._deliver_all, name="r1flow-tracking", daemon=True)

    @classmethod
    def replay(cls, path: str | Path, flush_s: float = 30.0) -> int:
        """Deliver what a finished (or killed) stage left in its journal; returns the ops still pending."""
        path = Path(path)
        records = [
            json.loads(line) for line in (path / "journal.jsonl").read_text().splitlines() if line.strip()
        ]
        spool = cls.__new__(cls)
        spool._setup(path, records[0]["uri"], records[0]["experiment"])
        spool._ops = [r["op"] for r in records if "op" in r]
        spool._sent = max((r["delivered"] for r in records if "delivered" in r), default=0)
        spool._run_id = next((r["run_id"] for r in reversed(records) if "run_id" in r), None)
        spool._closing, spool._deadline = True, time.monotonic() + flush_s
        spool._deliver_all()  # in this thread: there is no training to protect
        pending = len(spool._ops) - spool._sent
        if pending == 0:
            shutil.rmtree(path, ignore_errors=True)
        return pending

    # ------------------------------------------------------------------ the training thread's side
    def submit(self, op: dict[str, Any]) -> None:
        """Record ``op`` (journal first, then the queue); never waits for the server."""
        if op["kind"] in ("artifact", "artifacts"):  # the file may change or vanish before delivery: keep a copy
            dst = self.dir / "artifacts" / str(len(self._ops)) / Path(op["path"]).name
            dst.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if op["kind"] == "artifacts" else shutil.copy2)(op["path"], dst)
            op = {**op, "path": str(dst)}
        with self._cond:
            self._journal({"seq": len(self._ops), "op": op})
            self._ops.append(op)
            self._cond.notify()

    @property
    def run_id(self) -> str | None:
        """The MLflow run id once the run exists on the server (None while it is unreachable)."""
        return self._run_id

    def wait_run_id(self, timeout: float) -> str:
        t_end = time.monotonic() + timeout
        while self._run_id is None and time.monotonic() < t_end:
            time.sleep(0.05)
        if self._run_id is None:
            raise TimeoutError(f"MLflow at {self.uri}: the run could not be created within {timeout:.0f}s")
        return self._run_id

    def close(self, status: str, flush_s: float | None = None) -> int:
        """Submit the final status, give delivery ``flush_s`` seconds; returns the ops left pending."""
        self.submit({"kind": "terminate", "status": status})
        flush_s = float(os.environ.get(FLUSH_ENV, 60)) if flush_s is None else flush_s
        with self._cond:
            self._closing, self._deadline = True, time.monotonic() + flush_s
            self._cond.notify()
        self._thread.join(flush_s + 10)  # +10: an HTTP attempt in flight finishes or times out
        pending = len(self._ops) - self._sent
        if pending:
            _say(
                f"{pending} call(s) to {self.uri} not delivered; they are kept in {self.dir}. "
                f"Deliver them with `python -m tasks.tracking flush {self.dir}`"
            )
        else:
            if self._down_since is not None or self.dropped:
                _say(f"all {self.delivered} call(s) delivered to {self.uri}")
            shutil.rmtree(self.dir, ignore_errors=True)
        return pending

    # ------------------------------------------------------------------ the delivery thread
    def _journal(self, record: dict[str, Any]) -> None:
        with self._lock, open(self.dir / "journal.jsonl", "a") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def _deliver_all(self) -> None:
        wait = BACKOFF_S[0]
        while True:
            with self._cond:
                while self._sent == len(self._ops) and not self._closing:
                    self._cond.wait()
                if self._sent == len(self._ops):
                    return  # closing and nothing left
                op, n = coalesce(self._ops, self._sent)
            if self._deadline is not None and time.monotonic() > self._deadline:
                return
            ok = self._attempt(op, n)
            if ok:
                wait = BACKOFF_S[0]
                continue
            with self._cond:  # back off, but wake at once when close() sets the deadline
                limit = (
                    wait if self._deadline is None else min(wait, max(0.0, self._deadline - time.monotonic()))
                )
                self._cond.wait(limit)
            wait = min(wait * 2, BACKOFF_S[1])

    def _attempt(self, op: dict[str, Any], n: int = 1) -> bool:
        """One delivery attempt of the next ``n`` ops merged into ``op``; True when done with them."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            if self._client is None:  # opening a store can itself fail while it is down
                self._client = MlflowClient(tracking_uri=self.uri)
            apply_op(self._client, self, op)
        except MlflowException as e:
            if 400 <= (e.get_http_status_code() or 500) < 500 and "RESOURCE_DOES_NOT_EXIST" not in str(
                e.error_code
            ):
                _say(f"{self.uri} refused {op['kind']} ({e.message[:200]}); dropped")
                self.dropped += n
                return self._mark_sent(n)
            return self._went_down(e)
        except Exception as e:  # connection refused, timeouts, a locked SQLite store
            return self._went_down(e)
        if self._down_since is not None and self._sent + n == len(self._ops):
            _say(
                f"{self.uri} is back after {time.monotonic() - self._down_since:.0f}s; pending calls delivered"
            )
            self._down_since = None
        self.delivered += n
        return self._mark_sent(n)

    def _went_down(self, err: Exception) -> bool:
        if self._down_since is None:
            self._down_since = time.monotonic()
            _say(
                f"{self.uri} unreachable ({type(err).__name__}: {str(err)[:160]}); training continues, "
                f"calls are spooled in {self.dir} and sent when it is back"
            )
        return False

    def _mark_sent(self, n: int = 1) -> bool:
        self._sent += n
        self._journal({"delivered": self._sent})
        return True


# Within MLflow's log_batch limits (1000 metrics, 100 params, 100 tags, 1000 entities in all).
BATCH_LIMITS = {"metrics": 800, "params": 100, "tags": 100}


def coalesce(ops: list[dict[str, Any]], i: int) -> tuple[dict[str, Any], int]:
    """``ops[i]``, merged with the ``batch`` ops right after it while MLflow's limits allow:
    ``(op, how many ops it stands for)``. A backlog after an outage then drains in a few requests."""
    op = ops[i]
    if op["kind"] != "batch":
        return op, 1
    merged = {"kind": "batch", **{k: list(op.get(k, [])) for k in BATCH_LIMITS}}
    n = 1
    while i + n < len(ops) and ops[i + n]["kind"] == "batch":
        nxt = ops[i + n]
        if any(len(merged[k]) + len(nxt.get(k, [])) > lim for k, lim in BATCH_LIMITS.items()):
            break
        for k in BATCH_LIMITS:
            merged[k] += nxt.get(k, [])
        n += 1
    return merged, n


def apply_op(client, spool: Spool, op: dict[str, Any]) -> None:
    """Deliver one op through ``client`` (the run is ``spool.run_id``, set by the create op)."""
    from mlflow.entities import Metric, Param, RunTag

    kind = op["kind"]
    if kind == "create":
        from tasks.config import TrackingConfig
        from tasks.tracking import experiment_id

        exp = experiment_id(TrackingConfig(uri=spool.uri, experiment=spool.experiment))
        spool._run_id = client.create_run(exp, run_name=op["run_name"], tags=op["tags"]).info.run_id
        spool._journal({"run_id": spool._run_id})
    elif kind == "batch":
        client.log_batch(
            spool.run_id,
            metrics=[Metric(*m) for m in op.get("metrics", [])],
            params=[Param(*p) for p in op.get("params", [])],
            tags=[RunTag(*t) for t in op.get("tags", [])],
        )
    elif kind == "inputs":  # datasets with their md5 (tasks.tracking.StageRun.log_input_files)
        from mlflow.entities import Dataset, DatasetInput, InputTag

        client.log_inputs(spool.run_id, datasets=[
            DatasetInput(Dataset(name=d["name"], digest=d["digest"], source_type="local", source=d["source"],
                                 profile=d["profile"]), tags=[InputTag("mlflow.data.context", d["context"])])
            for d in op["datasets"]
        ])
    elif kind == "artifact":
        client.log_artifact(spool.run_id, op["path"], op.get("artifact_path"))
    elif kind == "artifacts":  # a folder
        client.log_artifacts(spool.run_id, op["path"], op.get("artifact_path"))
    elif kind == "text":
        client.log_text(spool.run_id, op["text"], op["artifact_file"])
    elif kind == "table":
        client.log_table(spool.run_id, data=op["data"], artifact_file=op["artifact_file"])
    elif kind == "terminate":
        client.set_terminated(spool.run_id, op["status"])
    else:
        raise ValueError(f"unknown tracking op {kind!r}")
