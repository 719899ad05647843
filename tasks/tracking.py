"""MLflow tracking: one parent run per pipeline run, one nested run per stage.

Stages run as separate processes (DVC starts them), so the parent run id travels by environment
(``R1FLOW_PARENT_RUN_ID``), set by ``make run`` or the Prefect flow. A stage started without it
(a bare ``dvc repro`` or ``python -m tasks.stages.sft``) logs a top-level run instead, so nothing is lost.

MLflow's "active run" is thread-local global state; this module never uses it. Every call goes
through ``MlflowClient`` with an explicit run id, which is safe from threads, Prefect tasks and
subprocesses alike.

A stage's calls never wait for the server: they are journalled locally and delivered by a
background thread with short timeouts and bounded back-off (tasks/spool.py), so a tracking
outage costs no training; what could not be delivered by the end stays in the journal for
``python -m tasks.tracking flush``.

Lineage tags on every run: git commit (and whether the tree was dirty), the Prefect flow-run id and
URL when there is one, and the md5 of each input file, so a metric links back to the exact data,
code and trigger that produced it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.config import TrackingConfig
from tasks.spool import FLUSH_ENV, Spool, spool_root

PARENT_ENV = "R1FLOW_PARENT_RUN_ID"
PREFECT_URL_ENV = "R1FLOW_PREFECT_RUN_URL"


def client(cfg: TrackingConfig):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(cfg.uri)
    return MlflowClient(tracking_uri=cfg.uri)


def experiment_id(cfg: TrackingConfig) -> str:
    c = client(cfg)
    exp = c.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        return exp.experiment_id
    # Keep artifacts beside the SQLite store (repo-local, ignored by git) unless the URI is remote.
    location = None
    if cfg.uri.startswith("sqlite:///"):
        location = (Path(cfg.uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return c.create_experiment(cfg.experiment, artifact_location=location)


def git_tags() -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {"git.commit": git("rev-parse", "HEAD") or "none", "git.dirty": str(bool(git("status", "--porcelain")))}


def md5(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def lineage_tags() -> dict[str, str]:
    tags = git_tags()
    if url := os.environ.get(PREFECT_URL_ENV):
        tags["prefect.flow_run_url"] = url
    if rid := os.environ.get("PREFECT__FLOW_RUN_ID"):
        tags["prefect.flow_run_id"] = rid
    return tags


def start_parent(cfg: TrackingConfig, name: str, tags: dict[str, str] | None = None) -> str:
    """Open the pipeline's parent run and return its id (callers export it as PARENT_ENV)."""
    c = client(cfg)
    run = c.create_run(experiment_id(cfg), run_name=name, tags={"r1flow.kind": "pipeline", **lineage_tags(), **(tags or {})})
    return run.info.run_id


def end_run(cfg: TrackingConfig, run_id: str, status: str = "FINISHED") -> None:
    client(cfg).set_terminated(run_id, status)


class StageRun:
    """A stage's run handle. Calls never wait for the server: they are journalled and delivered in
    the background (tasks/spool.py), so a tracking outage cannot stall or kill training."""

    def __init__(self, cfg: TrackingConfig, spool: Spool):
        self.cfg, self.spool = cfg, spool

    @property
    def run_id(self) -> str:
        """The MLflow run id; waits (up to the flush time) for the run to exist on the server."""
        return self.spool.wait_run_id(float(os.environ.get(FLUSH_ENV, 60)))

    def log_params(self, params: dict[str, Any], prefix: str = "") -> None:
        items = [[k, str(v)[:6000]] for k, v in _flatten(params, prefix).items()]
        for i in range(0, len(items), 100):
            self.spool.submit({"kind": "batch", "params": items[i : i + 100]})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        ts = int(time.time() * 1000)
        items = [[k, float(v), ts, step or 0] for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 1000):  # MLflow's batch limit
            self.spool.submit({"kind": "batch", "metrics": items[i : i + 1000]})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.spool.submit({"kind": "artifact", "path": str(path), "artifact_path": artifact_path})

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self.spool.submit({"kind": "artifacts", "path": str(local_dir), "artifact_path": artifact_path})

    def log_text(self, text: str, artifact_file: str) -> None:
        self.spool.submit({"kind": "text", "text": text, "artifact_file": artifact_file})

    def log_table(self, data: dict[str, list], artifact_file: str) -> None:
        self.spool.submit({"kind": "table", "data": data, "artifact_file": artifact_file})

    def log_input_files(self, paths: list[str | Path]) -> None:
        """Record each input file's md5 (the same digest DVC uses for a file), as a tag and as an
        MLflow dataset input whose digest is that md5, so a run leads back to its exact data."""
        digests = {Path(p): md5(p) for p in paths if Path(p).is_file()}
        self.set_tags({f"input.{p.name}.md5": d for p, d in digests.items()})
        if digests:
            datasets = [{"name": p.name, "digest": d, "source": str(p.resolve()), "profile": _profile(p),
                         "context": p.stem} for p, d in digests.items()]
            self.spool.submit({"kind": "inputs", "datasets": datasets})

    def set_tags(self, tags: dict[str, str]) -> None:
        if tags:
            self.spool.submit({"kind": "batch", "tags": [[k, str(v)] for k, v in tags.items()]})


def _profile(path: Path) -> str | None:
    """``{"num_rows": n}`` for a parquet file (read from its footer), else None."""
    if path.suffix != ".parquet":
        return None
    import json

    import pyarrow.parquet as pq

    return json.dumps({"num_rows": pq.ParquetFile(path).metadata.num_rows})


def _tag(k: str, v: Any):
    from mlflow.entities import RunTag

    return RunTag(k, str(v))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


@contextmanager
def stage_run(cfg: TrackingConfig, stage: str, params: dict[str, Any] | None = None) -> Iterator[StageRun]:
    """A run for one stage, nested under the pipeline run when PARENT_ENV is set."""
    tags = {"r1flow.stage": stage, "r1flow.kind": "stage", **lineage_tags()}
    parent = os.environ.get(PARENT_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    spool = Spool(cfg.uri, cfg.experiment, stage, tags)
    handle = StageRun(cfg, spool)
    if params:
        handle.log_params(params)
    try:
        yield handle
    except BaseException:
        spool.close("FAILED")
        raise
    spool.close("FINISHED")


class NullRun:
    """What ranks other than 0 log to: nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


@contextmanager
def rank_zero_run(cfg: TrackingConfig, stage: str, params: dict[str, Any]) -> Iterator[Any]:
    """The stage's run on rank 0 of a training stage (tagged with the world size), a NullRun elsewhere."""
    import torch.distributed as dist

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if rank > 0:
        yield NullRun()
        return
    with stage_run(cfg, stage, params) as run:
        if world > 1:
            run.set_tags({"world_size": str(world)})
        yield run


def _cli(argv: list[str]) -> int:
    """`open` prints a new parent run id; `close RUN_ID RC` ends it; `flush` delivers spooled calls."""
    from tasks.config import load_params

    cfg = load_params().tracking
    if argv[:1] == ["open"]:
        print(start_parent(cfg, "pipeline", {"r1flow.trigger": "make run"}))
        return 0
    if argv[:1] == ["close"] and len(argv) == 3:
        end_run(cfg, argv[1], "FINISHED" if argv[2] == "0" else "FAILED")
        return 0
    if argv[:1] == ["flush"]:  # deliver what stages spooled while the server was down
        dirs = [Path(a) for a in argv[1:]] or sorted(p for p in spool_root().glob("*") if (p / "journal.jsonl").is_file())
        left = sum(Spool.replay(d) for d in dirs)
        print(f"{len(dirs)} journal(s); {left} call(s) still pending")
        return 1 if left else 0
    print("usage: python -m tasks.tracking open | close RUN_ID EXIT_CODE | flush [SPOOL_DIR...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_cli(sys.argv[1:]))
