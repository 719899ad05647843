"""The Prefect flow runs the DVC stages, skips unchanged ones, and records MLflow runs.

Two projects: a toy DAG of shell-sized stages (fast: checks the skip logic, overrides as DVC
experiments and artifacts independently of the model code), and ``tiny_project``, the real DAG on
tiny settings (checks the real entry points end to end).
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
import yaml

from flows.pipeline import STAGES, post_training
from tasks.config import ConfigError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

PY = "python -c"
TOY_DVC = {
    "stages": {
        "a": {"cmd": "echo a > a.txt", "outs": ["a.txt"]},
        "b": {
            "cmd": f"{PY} \"import yaml; print(yaml.safe_load(open('params.yaml'))['sft']['steps'])\" > b.txt",
            "deps": ["a.txt"],
            "params": ["sft.steps"],
            "outs": ["b.txt"],
        },
        "report": {
            "cmd": "mkdir -p reports metrics && cat a.txt b.txt > reports/eval.md && "
            f"{PY} \"import json; json.dump({{'grpo': {{'pass@1': 0.25}}, 'n': 2}}, open('metrics/eval.json', 'w'))\"",
            "deps": ["b.txt"],
            "outs": [{"reports/eval.md": {"cache": False}}],
            "metrics": [{"metrics/eval.json": {"cache": False}}],
        },
    }
}


def _runs(uri: str, experiment: str = "r1flow") -> list:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name(experiment)
    return [] if exp is None else c.search_runs([exp.experiment_id])


def _lock(repo: Path) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory) -> str:
    """One MLflow store for the toy tests (creating its tables costs seconds); each test gets its own experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def toy(tmp_path: Path, sh, toy_store: str, request) -> tuple[Path, str]:
    """A committed git + DVC repo of TOY_DVC; returns (root, MLflow experiment name)."""
    repo = tmp_path / "toy"
    repo.mkdir()
    tracking = {"uri": toy_store, "experiment": request.node.name}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(TOY_DVC, sort_keys=False))
    (repo / "params.yaml").write_text(yaml.safe_dump({"sft": {"steps": 3}, "tracking": tracking}))
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.name", "t"],
        ["git", "config", "user.email", "t@t.invalid"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "toy"],
    ):
        sh(cmd, repo)
    return repo, tracking["experiment"]


def test_toy_flow_runs_then_skips_then_reruns_what_changed(toy, toy_store):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    repo, exp = toy
    first = post_training(repo=str(repo))
    assert first["stages"] == {"a": "ran", "b": "ran", "report": "ran"}
    assert (repo / "b.txt").read_text() == "3\n"
    assert set(_lock(repo)["stages"]) == {"a", "b", "report"}

    assert post_training(repo=str(repo))["stages"] == {"a": "skipped", "b": "skipped", "report": "skipped"}

    # A changed param re-runs its stage and, through b.txt, the one downstream; not the one upstream.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["sft"]["steps"] = 4
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert post_training(repo=str(repo))["stages"] == {"a": "skipped", "b": "ran", "report": "ran"}
    assert _lock(repo)["stages"]["b"]["params"]["params.yaml"] == {"sft.steps": 4}

    parents = [r for r in _runs(toy_store, exp) if r.data.tags.get("r1flow.kind") == "pipeline"]
    assert sorted(r.info.status for r in parents) == ["FINISHED"] * 3
    assert {r.info.run_id for r in parents} >= {first["parent_run_id"]}
    assert all(r.data.tags.get("prefect.flow_run_url", "").startswith("http://127.0.0.1") for r in parents)

    def latest(key: str):
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        assert len(found) == 3, key  # one version per flow run
        return max(found, key=lambda a: a.created)

    with get_client(sync_client=True) as client:
        report, table = latest("eval-report"), latest("eval-metrics")
    assert report.data == "a\n4\n"
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    assert rows == [{"metric": "grpo.pass@1", "value": 0.25}, {"metric": "n", "value": 2.0}]


def test_bad_override_fails_before_any_stage(toy, toy_store):
    repo, exp = toy
    with pytest.raises(ConfigError, match=r"grpo\.lrr"):
        post_training(repo=str(repo), params_overrides=["grpo.lrr=1e-4"])
    assert not (repo / "dvc.lock").exists() and not (repo / "a.txt").exists()
    assert _runs(toy_store, exp) == []  # no MLflow parent run was even opened


def test_override_runs_a_dvc_experiment_and_leaves_the_workspace(toy, toy_store, sh):
    repo, exp = toy
    before = (repo / "params.yaml").read_text()
    out = post_training(repo=str(repo), params_overrides=["sft.steps=7", "grpo.lr=1e-4"])
    assert out["stages"] == {"a": "ran", "b": "ran", "report": "ran"}
    assert (repo / "params.yaml").read_text() == before
    assert not (repo / "b.txt").exists()  # ran in DVC's temp copy, not here

    refs = sh(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo).stdout.split()
    [ref] = [r for r in refs if r.endswith("/" + out["experiment"])]
    exp_params = yaml.safe_load(sh(["git", "show", f"{ref}:params.yaml"], repo).stdout)
    assert exp_params["sft"]["steps"] == 7 and exp_params["grpo"]["lr"] == 1e-4
    assert yaml.safe_load(sh(["git", "show", f"{ref}:dvc.lock"], repo).stdout)["stages"]["b"]["params"] == {
        "params.yaml": {"sft.steps": 7}
    }
    [parent] = [r for r in _runs(toy_store, exp) if r.data.tags.get("r1flow.kind") == "pipeline"]
    assert (
        parent.info.status == "FINISHED"
        and parent.data.tags["r1flow.overrides"] == "sft.steps=7 grpo.lr=1e-4"
    )


def test_failing_stage_fails_the_flow_with_its_output(toy, toy_store):
    repo, exp = toy
    doc = json.loads(json.dumps(TOY_DVC))
    doc["stages"]["b"]["cmd"] = "echo boom-from-stage-b && exit 3"
    (repo / "dvc.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(RuntimeError, match=r"(?s)exited with \d+.*boom-from-stage-b"):
        post_training(repo=str(repo))
    [parent] = [r for r in _runs(toy_store, exp) if r.data.tags.get("r1flow.kind") == "pipeline"]
    assert parent.info.status == "FAILED"


# ----------------------------------------------------------------------------- the real DAG
def test_full_pipeline_through_the_flow(tiny_project: Path, sh, subprocess_env):
    repo = tiny_project
    clone = repo.parent / "clone"
    sh(["git", "clone", "-q", str(repo), str(clone)], repo.parent)  # the committed state, before any run

    out = post_training(repo=str(repo))
    assert out["stages"] == dict.fromkeys(STAGES, "ran")
    for path in (
        "data/curated/sft.parquet",
        "data/curated/rl.parquet",
        "data/curated/eval.parquet",
        "models/base",
        "models/sft",
        "models/grpo",
        "metrics/eval.json",
        "reports/eval.md",
    ):
        assert (repo / path).exists(), path
    lock = _lock(repo)
    assert set(lock["stages"]) == set(STAGES)

    uri = yaml.safe_load((repo / "params.yaml").read_text())["tracking"]["uri"]
    stage_runs = [r for r in _runs(uri) if r.data.tags.get("r1flow.kind") == "stage"]
    assert sorted(r.data.tags["r1flow.stage"] for r in stage_runs) == sorted(set(STAGES) - {"sources"})
    assert {r.data.tags.get("mlflow.parentRunId") for r in stage_runs} == {out["parent_run_id"]}

    # the curriculum PNG reaches the person in the Prefect UI, inlined so it renders offline
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        [art] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["grpo-curriculum"]))
        )
    png = base64.b64encode((repo / "plots/curriculum.png").read_bytes()).decode()
    assert f"data:image/png;base64,{png}" in art.data

    # the data fingerprint always runs; its unchanged bytes skip everything after it
    assert post_training(repo=str(repo))["stages"] == {**dict.fromkeys(STAGES, "skipped"), "sources": "ran"}

    # Plain `dvc repro` in a second copy records the same curate stage: data is deterministic.
    sh(["dvc", "repro", "curate"], clone, env=subprocess_env)
    theirs = _lock(clone)["stages"]["curate"]
    ours = lock["stages"]["curate"]
    assert theirs["params"] == ours["params"]
    assert {d["path"]: d["md5"] for d in theirs["deps"]} == {d["path"]: d["md5"] for d in ours["deps"]}
    assert {o["path"]: o["md5"] for o in theirs["outs"]} == {o["path"]: o["md5"] for o in ours["outs"]}
    shutil.rmtree(clone)
