"""The post-training pipeline as a Prefect flow that asks DVC to run each stage.

DVC owns the DAG and the record of what is stale (``dvc.yaml``, ``params.yaml``, ``dvc.lock``);
Prefect owns triggering (UI, API, schedules), retries, concurrency, logs and artifacts. So:

- Parameters are typed (flows/params.py): a form of the settings people change most, with the
  config models' types, descriptions and ``params.yaml``'s values as defaults, plus a free-form
  ``params_overrides`` list (``grpo.lr=1e-4``) for everything else. Fields changed from their
  defaults and the free-form list are validated together by ``tasks.config.load_params`` -- and
  every output folder is checked (tasks/paths.py) -- before any stage runs: a bad value fails the
  run with the key named.
- Without changes, the stage order and status come from DVC itself (flows/dag.py): one Prefect
  task per stage in DVC's topological order; a stage DVC reports up to date is skipped without
  starting ``dvc repro``; any other runs ``dvc repro --single-item <stage>``, so ``dvc.lock`` is
  the one record. Tasks use ``NO_CACHE``: DVC is the only cache.
- With changes, the whole pipeline runs as one DVC experiment named after the flow run,
  ``dvc exp run --temp --name <flow run> -S ++key=value``: ``--temp`` runs it in a scratch copy,
  so the workspace ``params.yaml`` (which the nightly schedule reads) is left as it was;
  ``dvc exp show`` lists it and ``dvc exp apply <name>`` + ``dvc repro`` reproduces it.
- One run at a time per workspace: the flow holds a Prefect global concurrency limit named after
  the workspace (limit 1) around its stages; a second run logs that it waits, and why, then runs.
- Training is not idempotent to retry blindly, so stage tasks get ``retries=0`` unless the caller
  asks for more (``stage_retries``); a rerun after a failure continues: DVC skips finished stages
  and GRPO/SFT resume from their checkpoints.

Tracking: the flow opens the MLflow parent run (tagged with the Prefect flow-run URL) and hands
its id to the stages through the environment; stages nest their runs under it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.artifacts import mlflow_link, publish
from flows.dag import DagError, experiment_ref, experiment_stages, stage_order, stage_status
from flows.params import RunSettings, changed_overrides
from flows.workspace import workspace_lock
from tasks.config import TrackingConfig, load_params
from tasks.paths import check_out_dirs
from tasks.spool import SPOOL_ENV
from tasks.tracking import PARENT_ENV, PREFECT_URL_ENV, end_run, start_parent

__all__ = ["STAGES", "DagError", "StageFailed", "post_training", "run_experiment", "run_stage", "stage_order"]

STAGES = ("sources", "curate", "base", "sft", "grpo", "evaluate")
TAIL_LINES = 40  # lines of stage output quoted in the error of a failed stage


class StageFailed(RuntimeError):
    """A DVC command exited non-zero; the message carries the tail of its output."""


# ----------------------------------------------------------------------------- subprocesses
def _child_env(repo: str, parent_run_id: str | None, run_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    # Stage commands find the project's interpreter (tasks/stage.sh); this one comes first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"  # stream stage logs as they happen, not at exit
    env.setdefault(
        SPOOL_ENV, str(Path(repo).resolve() / ".r1flow" / "spool")
    )  # not in an experiment's temp copy
    if parent_run_id:
        env[PARENT_ENV] = parent_run_id
    if run_url:
        env[PREFECT_URL_ENV] = run_url
    return env


def _dvc() -> str:
    exe = Path(sys.executable).parent / "dvc"
    return str(exe) if exe.exists() else "dvc"


def _stream(cmd: list[str], repo: str, env: dict[str, str]) -> None:
    """Run ``cmd`` in ``repo``, logging each output line; raise StageFailed with the tail."""
    logger = get_run_logger()
    logger.info("$ %s  (in %s)", " ".join(cmd), repo)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with subprocess.Popen(
        cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:  # universal newlines: a progress bar's \r redraw is a line too
            line = raw.rstrip("\n")
            if line.strip():
                logger.info(line)
                tail.append(line)
    if proc.returncode != 0:
        raise StageFailed(f"`{' '.join(cmd)}` exited with {proc.returncode}; last lines:\n" + "\n".join(tail))


# ----------------------------------------------------------------------------- tasks
@task(name="dvc-stage", task_run_name="{stage}", retries=0, cache_policy=NO_CACHE)
def run_stage(stage: str, repo: str, parent_run_id: str | None = None, run_url: str | None = None) -> dict:
    """The stage through DVC when DVC says it changed; returns ``{stage, status: ran|skipped, seconds}``."""
    t0 = time.time()
    status = stage_status(repo, stage)  # also refuses an unknown stage
    if not status:
        get_run_logger().info("%s: up to date (dvc status), skipped", stage)
        return {"stage": stage, "status": "skipped", "seconds": round(time.time() - t0, 2)}
    get_run_logger().info("%s: %s", stage, status.get(stage, status))
    _stream([_dvc(), "repro", "--single-item", stage], repo, _child_env(repo, parent_run_id, run_url))
    return {"stage": stage, "status": "ran", "seconds": round(time.time() - t0, 2)}


@task(name="dvc-experiment", retries=0, cache_policy=NO_CACHE)
def run_experiment(
    overrides: list[str], repo: str, name: str, parent_run_id: str | None = None, run_url: str | None = None
) -> dict:
    """The whole pipeline as ``dvc exp run --temp --name <name> -S ++k=v ...``."""
    cmd = [_dvc(), "exp", "run", "--temp", "--name", name]
    for item in overrides:
        cmd += ["-S", "++" + item.strip()]
    _stream(cmd, repo, _child_env(repo, parent_run_id, run_url))
    ref = experiment_ref(repo, name)
    if ref is None:
        raise StageFailed(f"dvc exp run finished but no experiment {name!r} is recorded (dvc exp show)")
    return {"experiment": name, "ref": ref, "stages": experiment_stages(repo, ref, stage_order(repo))}


# ----------------------------------------------------------------------------- the flow
def _absolute_tracking(cfg: TrackingConfig, repo: Path) -> TrackingConfig:
    """A relative ``sqlite:///mlflow.db`` means the repo's file, whatever this process's cwd."""
    prefix = "sqlite:///"
    if cfg.uri.startswith(prefix) and not Path(cfg.uri.removeprefix(prefix)).is_absolute():
        return cfg.model_copy(update={"uri": prefix + str((repo / cfg.uri.removeprefix(prefix)).resolve())})
    return cfg


def _flow_run() -> tuple[dict[str, str], str]:
    """The MLflow tags of this flow run (id, UI link) and its name (the DVC experiment's name)."""
    from prefect.runtime import flow_run

    tags = {"prefect.flow_run_id": str(flow_run.id)}
    try:
        if url := flow_run.ui_url:
            tags["prefect.flow_run_url"] = url
    except Exception:  # no UI configured (ephemeral runs): simply no link
        pass
    return tags, str(flow_run.name or flow_run.id)


def _experiment(
    overrides: list[str],
    root: Path,
    name: str,
    retries: int,
    parent: str,
    url: str | None,
    tracking_override: str | None,
) -> dict:
    # The experiment runs in a scratch copy: a relative MLflow store would land there too.
    args = [*overrides, f"tracking.uri={tracking_override}"] if tracking_override else overrides
    exp = run_experiment.with_options(retries=retries)(args, str(root), name, parent, url)
    create_markdown_artifact(
        f"# DVC experiment `{name}`\n\nOverrides: `{' '.join(overrides)}`\n\nStages: {exp['stages']}\n\n"
        f"Compare with `dvc exp show`; bring it into the workspace with `dvc exp apply {name}`, "
        "then `dvc repro` reproduces it.\n",
        key="dvc-experiment",
    )
    return exp


StageName = Literal[STAGES]
ALL_STAGES: list[str] = list(STAGES)
DEFAULT_SETTINGS = RunSettings()  # shared, never mutated: the form as params.yaml fills it
NO_OVERRIDES: list[str] = []


@flow(name="post-training")
def post_training(
    repo: str = ".",
    settings: RunSettings = DEFAULT_SETTINGS,
    params_overrides: list[str] = NO_OVERRIDES,
    stages: list[StageName] = ALL_STAGES,
    stage_retries: int = 0,
) -> dict:
    """sources -> curate -> base -> sft -> grpo -> evaluate through DVC; with changes, one DVC experiment.

    Args:
        repo: project root holding dvc.yaml and params.yaml (the deployments set it)
        settings: the settings people change most, filled in from params.yaml; a value changed here
            becomes an override, and the run a DVC experiment named after this flow run
        params_overrides: any other params.yaml key as key.path=value, e.g. grpo.epsilon=0.3
        stages: the stages to bring up to date, in DVC's order (evaluate-only: [evaluate]); all by
            default. Upstream stages not listed are used as they are. A run with changes is always
            the whole pipeline, as one DVC experiment.
        stage_retries: retries per stage task (0: training is not idempotent)
    """
    logger = get_run_logger()
    root = Path(repo).resolve()
    overrides = changed_overrides(settings) + list(params_overrides or [])
    params = load_params(root / "params.yaml", overrides=overrides)  # fails here, before any stage
    check_out_dirs(params, root)
    order = [s for s in stage_order(root) if s in stages or set(stages) == set(STAGES)]
    tracking = _absolute_tracking(params.tracking, root)
    prefect_tags, run_name = _flow_run()
    run_url = prefect_tags.get("prefect.flow_run_url")
    with workspace_lock(root, logger):
        title = "post-training" + (" " + " ".join(overrides) if overrides else "")
        parent = start_parent(
            tracking, name=title, tags={"r1flow.overrides": " ".join(overrides), **prefect_tags}
        )
        logger.info("MLflow parent run %s at %s; stages %s", parent, tracking.uri, order)
        mlflow_link(tracking.uri, parent, tracking.experiment)
        result: dict[str, Any] = {"parent_run_id": parent, "experiment": None, "stages": {}}
        try:
            if overrides:
                moved = tracking.uri if tracking.uri != params.tracking.uri else None
                result.update(_experiment(overrides, root, run_name, stage_retries, parent, run_url, moved))
            else:
                stage_task = run_stage.with_options(retries=stage_retries)
                for stage in order:
                    result["stages"][stage] = stage_task(stage, str(root), parent, run_url)["status"]
                publish(root)
        except BaseException:
            end_run(tracking, parent, "FAILED")
            raise
        end_run(tracking, parent, "FINISHED")
    logger.info("stages: %s", result["stages"])
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Run the post-training pipeline once (ephemeral Prefect).")
    ap.add_argument("--repo", default=".", help="project root holding dvc.yaml and params.yaml")
    ap.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="parameter override; any override runs the pipeline as a DVC experiment",
    )
    ap.add_argument("--retries", type=int, default=0, help="retries per stage task (default 0)")
    args = ap.parse_args(argv)
    post_training(repo=args.repo, params_overrides=args.overrides, stage_retries=args.retries)


if __name__ == "__main__":
    main()
