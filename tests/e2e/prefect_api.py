"""Helpers of the e2e tests that drive a Prefect server through its API (flow runs, logs, waiting).

Imported by the e2e modules (pytest puts this folder on ``sys.path``); no tests here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("R1FLOW_TEST_ARTIFACTS", ROOT / ".r1flow" / "test-artifacts"))
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def serve_env(url: str) -> dict[str, str]:
    """The environment ``flows.deploy`` and the Prefect CLI run under against the server at ``url``."""
    env = {
        **os.environ,
        "PREFECT_API_URL": url,
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",  # the tiny local models: no hub look-ups (registration asks for a model card)
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    env.pop("R1FLOW_PARENT_RUN_ID", None)
    return env


def start_serve(project: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``python -m flows.deploy`` serving the project's deployments, in its own session, logging to ``log_path``."""
    with log_path.open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.deploy"],
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def record(name: str, data: dict) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"\n{name}: {json.dumps(data, default=str)}")


def client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def deployments() -> dict[str, str]:
    with client() as c:
        return {d.name: str(d.id) for d in c.read_deployments()}


def wait_for(cond, timeout: float, what: str, proc=None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := cond():
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(
                f"process exited {proc.returncode} waiting for {what}:\n{log.read_text()[-4000:] if log else ''}"
            )
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def trigger(deployment: str, parameters: dict | None = None):
    from prefect.deployments import run_deployment

    return run_deployment(f"post-training/{deployment}", parameters=parameters or {}, timeout=0)


def finished(run_id, timeout: float = 600):
    def done():
        with client() as c:
            fr = c.read_flow_run(run_id)
        return fr if fr.state and fr.state.type.value in FINAL else None

    return wait_for(done, timeout, f"flow run {run_id}")


def newest_run(deployment_id: str, after: float):
    """The id of the newest flow run of a deployment created after ``after`` (a timestamp), or None."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    with client() as c:
        runs = c.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
        )
    fresh = [r for r in runs if r.created and r.created.timestamp() > after - 1]
    return max(fresh, key=lambda r: r.created).id if fresh else None


def in_flight(due_within: float = 30.0) -> list:
    """The flow runs the server has as pending or running (any deployment), and the scheduled ones due
    within ``due_within`` seconds: a runner or worker polling now would start those too."""
    from datetime import datetime, timedelta, timezone

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    states = FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING, StateType.SCHEDULED])
    soon = datetime.now(timezone.utc) + timedelta(seconds=due_within)
    with client() as c:
        runs = c.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=states)))
    return [
        r
        for r in runs
        if r.state.type != StateType.SCHEDULED or (r.expected_start_time and r.expected_start_time < soon)
    ]


def logs(run_id) -> list[tuple[float, str]]:
    """Every log line of a flow run (its tasks' too), oldest first: read in pages, since the server
    returns at most 200 per request and a run that trains logs more than that."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    out: list[tuple[float, str]] = []
    with client() as c:
        while True:
            page = c.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200, offset=len(out)
            )
            out += [(entry.timestamp.timestamp(), entry.message) for entry in page]
            if len(page) < 200:
                return out


def _wait_line(run_id, pred, timeout: float, newest: bool = False) -> tuple[str | None, list[str]]:
    """The first (``newest``: last) log line of a run that ``pred`` accepts, and every line read.

    Logs reach the server in batches, so a run can be final before its last lines arrive (a run
    failed by parameter validation ends in well under the 2 s batch interval): poll up to
    ``timeout`` seconds; None if no line ever matches."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [m for _, m in logs(run_id)]
        hit = next((m for m in (reversed(lines) if newest else lines) if pred(m)), None)
        if hit is not None or time.monotonic() > deadline:
            return hit, lines
        time.sleep(1)


def logged(run_id, pred, timeout: float = 30) -> str:
    """The first log line of a run that ``pred`` accepts; fails, showing the tail, if none comes."""
    hit, lines = _wait_line(run_id, pred, timeout)
    if hit is None:
        pytest.fail(
            f"no matching log line in run {run_id} after {timeout:.0f}s; last lines:\n"
            + "\n".join(lines[-20:])
        )
    return hit


def wall(fr) -> float:
    return (fr.end_time - fr.start_time).total_seconds()


def training(stages: dict[str, str]) -> set[str]:
    """The statuses of every stage but ``sources``, the data fingerprint that runs every time."""
    return {v for k, v in stages.items() if k != "sources"}


def stages_of(run_id, timeout: float = 30) -> dict[str, str]:
    """Per stage 'ran'/'skipped', from the flow's own log lines (the flow's result is not persisted):
    the newest ``stages:`` line, waited for up to ``timeout`` seconds ({} if it never comes, e.g. a
    run that failed)."""
    hit, _ = _wait_line(run_id, lambda m: m.startswith("stages: "), timeout, newest=True)
    return yaml.safe_load(hit.removeprefix("stages: ")) if hit is not None else {}
