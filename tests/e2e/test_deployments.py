"""prefect.yaml's deployments against a real ``prefect server start`` on 127.0.0.1 (one per module).

One tiny project (the real DAG, seconds per stage) is served by ``python -m flows.deploy`` as
``make serve`` does. In order: two overlapping nightly runs are held to one at a time; an API run
with a typed setting becomes a DVC experiment named after the flow run; a bad typed value fails
before any stage; a Custom run from the UI in headless Chromium; a schedule with unchanged data runs
no training stage, and after a source file changed re-runs curate and everything downstream; last,
``prefect deploy`` to a process work pool, whose worker runs evaluate-only. The schedule and worker
tests bring the workspace up to date themselves, so each also passes alone. Timelines and wall
times are written to ``.r1flow/test-artifacts/`` (``R1FLOW_TEST_ARTIFACTS``); ``make bench-ops``
collects them into ``benchmarks/results/ops.json``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prefect_api import (
    ARTIFACTS,
    FINAL,
    client,
    deployments,
    finished,
    in_flight,
    logged,
    logs,
    record,
    serve_env,
    stages_of,
    start_serve,
    training,
    trigger,
    wait_for,
    wall,
)
from prefect_ui import custom_run

from flows.dag import experiment_ref
from flows.servers import prefect_server
from flows.workspace import workspace_lock
from tasks.config import load_params
from tasks.data.gsm8k import split_of, to_row

pytestmark = pytest.mark.slow
GSM8K_ROWS = [
    {
        "question": f"Tom has {i} apples and buys {i + 3}. How many?",
        "answer": f"{i}+{i + 3}\n#### {2 * i + 3}",
    }
    for i in range(12)
]


@pytest.fixture(scope="module")
def project(tiny_project_module: Path) -> Path:
    """The tiny project plus a local GSM8K-format source file (the schedule test edits it)."""
    p = tiny_project_module
    (p / "raw").mkdir()
    (p / "raw" / "mini.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
    params = yaml.safe_load((p / "params.yaml").read_text())
    params["evaluate"]["register_model"] = False  # registering costs seconds per run and is tested elsewhere
    params["curate"]["sources"].append(
        {"kind": "gsm8k", "path": "raw/mini.jsonl", "sft_fraction": 0.3, "eval_fraction": 0.2}
    )
    (p / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    load_params(p / "params.yaml")
    subprocess.run(["git", "add", "-A"], cwd=p, check=True)
    subprocess.run(["git", "commit", "-qm", "local source"], cwd=p, check=True)
    return p


@pytest.fixture(scope="module")
def api(tmp_path_factory, project):
    """A Prefect server with its scheduler (polling every 2 s), and the deployments served from ``project``."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("prefect")
    server = prefect_server(home)
    # the scheduler every 2 s, and at most 2 runs queued ahead per schedule (runs here outlast its interval)
    server.env.update(
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS="1",
        PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS="2",
    )
    server.start()
    url = server.url + "/api"
    env = serve_env(url)
    serve = start_serve(project, env, home / "serve.log")
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            wait_for(
                lambda: len(deployments()) == 3,
                240,
                "the 3 deployments to register",
                serve,
                home / "serve.log",
            )
            server.serve = serve  # the worker test stops it: then only the worker may pick up runs
            server.cli_env = env
            yield server
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, 15)
            serve.wait(30)
        server.stop()


# ----------------------------------------------------------------------------- tests
def test_two_overlapping_runs_are_held_to_one_at_a_time(api):
    a, b = trigger("nightly"), trigger("nightly")
    fa, fb = finished(a.id), finished(b.id)
    assert fa.state.type.value == fb.state.type.value == "COMPLETED", (fa.state, fb.state)
    first, second = sorted([fa, fb], key=lambda fr: min(t for t, m in logs(fr.id) if m.startswith("holding")))
    waited = [(t, m) for t, m in logs(second.id) if m.startswith("waiting: another run holds")]
    assert waited, "the second run did not say why it waited"
    held_at = min(t for t, m in logs(second.id) if m.startswith("holding"))
    assert held_at >= first.end_time.timestamp() - 1.0  # it ran only once the first had finished
    assert set(stages_of(first.id).values()) == {"ran"}
    assert training(stages_of(second.id)) == {"skipped"}  # the first run left nothing to do
    t0 = min(fa.start_time, fb.start_time).timestamp()
    record(
        "overlap_timeline",
        {
            "first": {
                "id": str(first.id),
                "start_s": round(first.start_time.timestamp() - t0, 1),
                "end_s": round(first.end_time.timestamp() - t0, 1),
                "stages": stages_of(first.id),
            },
            "second": {
                "id": str(second.id),
                "start_s": round(second.start_time.timestamp() - t0, 1),
                "waiting_logged_s": round(waited[0][0] - t0, 1),
                "holding_s": round(held_at - t0, 1),
                "end_s": round(second.end_time.timestamp() - t0, 1),
                "stages": stages_of(second.id),
            },
        },
    )


def test_api_run_with_a_typed_setting_is_a_dvc_experiment(api, project, sh):
    before = (project / "params.yaml").read_text()
    fr = finished(trigger("experiment", {"settings": {"evaluate": {"seed": 7}}}).id)
    assert fr.state.type.value == "COMPLETED", fr.state
    assert (project / "params.yaml").read_text() == before
    names = [
        e.get("name")
        for row in json.loads(sh(["dvc", "exp", "show", "--json"], project).stdout)
        for x in (row.get("experiments") or [])
        for e in x.get("revs", [])
    ]
    assert fr.name in names, (fr.name, names)
    ref = experiment_ref(project, fr.name)
    assert ref is not None
    assert yaml.safe_load(sh(["git", "show", f"{ref}:params.yaml"], project).stdout)["evaluate"]["seed"] == 7

    from mlflow.tracking import MlflowClient

    uri = load_params(project / "params.yaml").tracking.uri
    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("r1flow")
    [parent] = c.search_runs(
        [exp.experiment_id], f"tags.`prefect.flow_run_id` = '{fr.id}' and tags.`r1flow.kind` = 'pipeline'"
    )  # stage runs carry the id too
    assert parent.info.status == "FINISHED" and parent.data.tags["r1flow.overrides"] == "evaluate.seed=7"
    assert (
        str(fr.id) in parent.data.tags["prefect.flow_run_url"]
        and api.url in parent.data.tags["prefect.flow_run_url"]
    )
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with client() as cl:
        keys = {
            a.key
            for a in cl.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[fr.id]))
            )
        }
    assert {"dvc-experiment", "mlflow-run"} <= keys
    record("api_experiment_run", {"flow_run": fr.name, "wall_s": round(wall(fr), 1), "experiment_ref": ref})


def test_a_bad_typed_value_fails_before_any_stage(api, project, sh):
    refs_before = sh(["git", "for-each-ref", "refs/exps"], project).stdout
    fr = finished(trigger("experiment", {"settings": {"grpo": {"lr": -1.0}}}).id)
    assert fr.state.type.value == "FAILED"
    assert logged(fr.id, lambda m: "grpo.lr" in m and "greater than 0" in m)
    assert sh(["git", "for-each-ref", "refs/exps"], project).stdout == refs_before


def test_custom_run_from_the_ui_in_headless_chromium(api, project):
    """The deployment's page, then its Custom run form: the GRPO learning rate changed, Submit; the run
    completes, and its page (state Completed) is saved as a screenshot."""
    shot = ARTIFACTS / "ui_custom_run_completed.png"
    fr, t_submit = custom_run(api.url, deployments()["experiment"], "grpo.lr", "0.0001", shot)
    assert fr.state.type.value == "COMPLETED", fr.state
    assert fr.parameters["settings"]["grpo"]["lr"] == 0.0001
    assert logged(fr.id, lambda m: "grpo.lr=0.0001" in m)
    record(
        "ui_custom_run",
        {
            "flow_run": fr.name,
            "submit_to_completed_s": round(fr.end_time.timestamp() - t_submit, 1),
            "run_wall_s": round(wall(fr), 1),
            "screenshot": str(shot),
        },
    )


def test_schedule_runs_nothing_on_unchanged_data_and_retrains_on_a_changed_source(api, project):
    from prefect.client.schemas.schedules import IntervalSchedule

    # The workspace up to date first (a skip when the tests above ran): "unchanged" must not lean on them.
    baseline = finished(trigger("nightly").id)
    assert baseline.state.type.value == "COMPLETED", baseline.state
    dep = deployments()["nightly"]
    with client() as c:
        [sched] = c.create_deployment_schedules(
            dep, [(IntervalSchedule(interval=timedelta(seconds=30)), True)]
        )

    def held_at(run) -> float:
        """When the run took the workspace's slot (0.0 if it never did)."""
        return min((t for t, m in logs(run.id) if m.startswith("holding")), default=0.0)

    def next_scheduled_run(after: float, held_after: float = 0.0):
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

        with client() as c:
            runs = c.read_flow_runs(
                flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[dep]))
            )
        done = [
            r
            for r in runs
            if r.auto_scheduled
            and r.start_time
            and r.start_time.timestamp() > after
            and r.state.type.value in FINAL
            and (held_at(r) or r.start_time.timestamp()) > held_after  # one that failed first counts
        ]
        return min(done, key=lambda r: r.start_time) if done else None

    try:
        t0 = time.time()
        unchanged = wait_for(lambda: next_scheduled_run(t0), 300, "a scheduled run on unchanged data")
        assert unchanged.state.type.value == "COMPLETED", (unchanged.name, unchanged.state)
        assert training(stages_of(unchanged.id)) == {"skipped"}, stages_of(unchanged.id)

        # New data arrives: a question the pipeline's own split puts in SFT, so the cold start's input
        # changes too (a row hashed into rl/eval would rightly leave sft skipped).
        spec = load_params(project / "params.yaml").curate.sources[-1]
        asks = (
            {"question": f"Ann has {n} pens and gives 15 away. How many?", "answer": f"#### {n - 15}"}
            for n in range(40, 200)
        )
        new = next(
            r for r in asks if split_of(to_row(r)["id"], spec.sft_fraction, spec.eval_fraction) == "sft"
        )
        # Written between two runs (holding the workspace's slot, as a run does): a run already past its
        # `sources` stage saw the old file, so the first run to hold the slot after this must see it.
        with workspace_lock(project, logging.getLogger("e2e")):
            with (project / "raw" / "mini.jsonl").open("a") as f:
                f.write(json.dumps(new) + "\n")
            t1 = time.time()
        fresh = wait_for(lambda: next_scheduled_run(0.0, t1), 600, "a scheduled run on changed data")
        assert fresh.state.type.value == "COMPLETED", (fresh.name, fresh.state)
        ran = stages_of(fresh.id)
        downstream = {"curate": "ran", "sft": "ran", "grpo": "ran", "evaluate": "ran"}
        assert ran == {"sources": "ran", "base": "skipped", **downstream}, (
            fresh.name,
            ran,
        )  # base reads no data
    finally:
        with client() as c:
            c.delete_deployment_schedule(dep, sched.id)

    def timing(run) -> dict:
        """From the time the schedule set for the run (Prefect's pick-up included) to Completed."""
        return {
            "flow_run": run.name,
            "scheduled_at": run.expected_start_time.isoformat(),
            "scheduled_to_completed_s": round((run.end_time - run.expected_start_time).total_seconds(), 1),
            "pickup_s": round((run.start_time - run.expected_start_time).total_seconds(), 1),
            "wall_s": round(wall(run), 1),
        }

    record(
        "scheduled_runs",
        {
            "interval_s": 30,
            "unchanged": {**timing(unchanged), "stages": stages_of(unchanged.id)},
            "changed_source": {**timing(fresh), "stages": ran},
        },
    )


def test_prefect_deploy_to_a_process_work_pool_with_a_worker(api, project, tmp_path):
    """``prefect deploy --all`` from prefect.yaml, then a process worker runs evaluate-only in the work tree."""
    # The workspace up to date through serve first (a skip after the tests above), so that alone too
    # evaluate-only finds the models it evaluates and, asked for evaluate only, has nothing to redo.
    baseline = finished(trigger("nightly").id)
    assert baseline.state.type.value == "COMPLETED", baseline.state
    # Then serve idle, with no run due that it would start: a run it held when killed would keep the
    # workspace's slot (a lease) until the lease expires, and could leave a stage half-written.
    wait_for(lambda: not in_flight(), 300, "the served runs to finish", api.serve)
    os.killpg(api.serve.pid, 15)  # from here on the deployments belong to the work pool
    api.serve.wait(30)
    env = {
        **api.cli_env,
        "PREFECT_HOME": str(tmp_path / "cli-home"),
        "PWD": str(project),
    }  # as `cd project` sets it
    prefect = str(Path(sys.executable).parent / "prefect")

    def cli(*args: str) -> str:
        proc = subprocess.run(
            [prefect, "--no-prompt", *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    cli("work-pool", "create", "r1flow-process", "--type", "process")
    cli("deploy", "--all")
    with client() as c:
        dep = c.read_deployment_by_name("post-training/evaluate-only")
    assert dep.work_pool_name == "r1flow-process" and dep.parameters == {"stages": ["evaluate"]}
    run = trigger("evaluate-only")
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [prefect, "worker", "start", "--pool", "r1flow-process", "--run-once"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        fr = finished(run.id, timeout=400)
    finally:
        try:  # --run-once exits by itself once its run is done; killing it sooner loses the run's last logs
            worker.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, 15)
            worker.wait(30)
    assert fr.state.type.value == "COMPLETED", (fr.state, (tmp_path / "worker.log").read_text()[-3000:])
    assert stages_of(fr.id) == {"evaluate": "skipped"}  # up to date since the baseline: only evaluate asked
    assert logged(fr.id, lambda m: str(project) in m)  # ran in the work tree prefect.yaml's pull step names
