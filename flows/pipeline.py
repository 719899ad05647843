"""The post-training pipeline as a Prefect flow that asks DVC to run each stage.

DVC owns the DAG and the record of what is stale (``dvc.yaml``, ``params.yaml``, ``dvc.lock``);
Prefect owns triggering (UI, API, schedules), retries, logs and artifacts. So this flow holds no
copy of the DAG's logic:

- The task list is :func:`stage_order`, a topological sort of ``dvc.yaml`` (a stage depends on
  another when one of its deps is, contains or lies inside one of the other's outs). Ties keep the
  file's order, so the walk is deterministic. ``STAGES`` states the expected order; a test checks
  the two agree and that the order respects ``dvc dag``.
- One Prefect task per stage runs ``dvc repro --single-item <stage>`` in the repo. ``--single-item``
  because the flow itself walks the stages in order; DVC still decides whether the stage changed,
  so an unchanged stage is skipped exactly as under ``dvc repro`` and ``dvc.lock`` is the one
  record. Tasks use ``NO_CACHE``: DVC is the only cache.
- Overrides from the UI (``["grpo.lr=1e-4"]``) are validated by ``tasks.config.load_params`` first
  (a bad key fails the flow before any stage runs), then the whole pipeline runs as one DVC
  experiment, ``dvc exp run --temp -S ++key=value``. ``--temp`` runs it in a scratch copy so the
  workspace ``params.yaml`` (which the nightly schedule reads) is left as it was; the result is an
  experiment ref (``dvc exp show``, ``dvc exp apply <name>``). ``++`` is DVC's (Hydra's) "add or
  override" so a key absent from ``params.yaml`` but defaulted by the config model can be set.
  A temp experiment runs the committed tree plus changes to tracked files; untracked files are not
  copied.
- Training is not idempotent to retry blindly, so stage tasks get ``retries=0`` unless the caller
  asks for more (``stage_retries``).

Tracking: the flow opens the MLflow parent run and hands its id (and the Prefect flow-run URL) to
the stages through the environment, as ``tasks.tracking`` expects; stages nest their runs under it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.config import TrackingConfig, load_params
from tasks.tracking import PARENT_ENV, PREFECT_URL_ENV, end_run, start_parent

STAGES = ("sources", "curate", "base", "sft", "grpo", "evaluate")  # sources: always runs (fingerprints data)
TAIL_LINES = 40  # lines of stage output quoted in the error of a failed stage


class DagError(ValueError):
    """dvc.yaml cannot be turned into a stage order (missing, cyclic, unknown stage)."""


class StageFailed(RuntimeError):
    """A DVC command exited non-zero; the message carries the tail of its output."""


# ----------------------------------------------------------------------------- the DAG
def _paths(entries: list[Any] | None) -> list[str]:
    """Paths of a deps/outs/metrics/plots list; an entry is a path or ``{path: options}``."""
    out = []
    for e in entries or []:
        out.extend([e] if isinstance(e, str) else list(e))
    return [os.path.normpath(p) for p in out]


def _overlaps(dep: str, out: str) -> bool:
    # DVC links a dep to an out when they are the same path or one is a directory holding the other.
    return dep == out or dep.startswith(out + os.sep) or out.startswith(dep + os.sep)


def stage_order(dvc_yaml: str | Path = "dvc.yaml") -> list[str]:
    """The stages of ``dvc_yaml`` in topological order (ties keep the file's order)."""
    path = Path(dvc_yaml)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DagError(f"{path}: file not found") from None
    stages = (doc or {}).get("stages") if isinstance(doc, dict) else None
    if not isinstance(stages, dict) or not stages:
        raise DagError(f"{path}: no 'stages' mapping")
    for name, spec in stages.items():
        if not isinstance(spec, dict) or "cmd" not in spec:
            raise DagError(f"{path}: stage {name!r} has no cmd")
        if {"foreach", "matrix", "wdir"} & set(spec):
            raise DagError(f"{path}: stage {name!r} uses foreach/matrix/wdir, which the flow does not expand")

    outs = {n: _paths(s.get("outs")) + _paths(s.get("metrics")) + _paths(s.get("plots")) for n, s in stages.items()}
    needs: dict[str, set[str]] = {n: set() for n in stages}
    for name, spec in stages.items():
        for dep in _paths(spec.get("deps")):
            for other, other_outs in outs.items():
                if other != name and any(_overlaps(dep, o) for o in other_outs):
                    needs[name].add(other)

    # Kahn's algorithm, always taking the earliest ready stage in file order.
    order: list[str] = []
    pending = list(stages)
    while pending:
        ready = [n for n in pending if needs[n] <= set(order)]
        if not ready:
            raise DagError(f"{path}: dependency cycle among stages {sorted(pending)}")
        order.append(ready[0])
        pending.remove(ready[0])
    return order


# ----------------------------------------------------------------------------- subprocesses
def _child_env(parent_run_id: str | None, run_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    # Stage commands say `python` and `dvc`: resolve them to this interpreter's environment.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"  # stream stage logs as they happen, not at exit
    if parent_run_id:
        env[PARENT_ENV] = parent_run_id
    if run_url:
        env[PREFECT_URL_ENV] = run_url
    return env


def _dvc() -> str:
    exe = Path(sys.executable).parent / "dvc"
    return str(exe) if exe.exists() else "dvc"


def _stream(cmd: list[str], repo: str, env: dict[str, str]) -> list[str]:
    """Run ``cmd`` in ``repo``, logging each output line; raise StageFailed with the tail."""
    logger = get_run_logger()
    logger.info("$ %s  (in %s)", " ".join(cmd), repo)
    lines: list[str] = []
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            logger.info(line)
            lines.append(line)
            tail.append(line)
    if proc.returncode != 0:
        raise StageFailed(f"`{' '.join(cmd)}` exited with {proc.returncode}; last lines:\n" + "\n".join(tail))
    return lines


_RAN = re.compile(r"Running stage '([^']+)'")
_SKIPPED = re.compile(r"Stage '([^']+)' (?:didn't change, skipping|is cached)")


def stage_statuses(lines: list[str]) -> dict[str, str]:
    """``{stage: 'ran' | 'skipped'}`` from DVC's output ('is cached' = restored from the run cache)."""
    out: dict[str, str] = {}
    for line in lines:
        if m := _SKIPPED.search(line):
            out.setdefault(m.group(1), "skipped")
        if m := _RAN.search(line):
            out[m.group(1)] = "ran"
    return out


# ----------------------------------------------------------------------------- tasks
@task(name="dvc-stage", task_run_name="{stage}", retries=0, cache_policy=NO_CACHE)
def run_stage(stage: str, repo: str, parent_run_id: str | None = None, run_url: str | None = None) -> dict:
    """``dvc repro --single-item <stage>``; returns ``{stage, status: ran|skipped|unknown, seconds}``."""
    known = stage_order(Path(repo) / "dvc.yaml")
    if stage not in known:
        raise DagError(f"unknown stage {stage!r}; dvc.yaml has {known}")
    t0 = time.time()
    lines = _stream([_dvc(), "repro", "--single-item", stage], repo, _child_env(parent_run_id, run_url))
    status = stage_statuses(lines).get(stage, "unknown")
    if status == "unknown":
        get_run_logger().warning("could not tell from DVC's output whether %r ran or was skipped", stage)
    return {"stage": stage, "status": status, "seconds": round(time.time() - t0, 2)}


@task(name="dvc-experiment", retries=0, cache_policy=NO_CACHE)
def run_experiment(overrides: list[str], repo: str, parent_run_id: str | None = None,
                   run_url: str | None = None, name: str | None = None) -> dict:
    """The whole pipeline as ``dvc exp run --temp -S ++k=v ...``; returns the experiment and statuses."""
    cmd = [_dvc(), "exp", "run", "--temp"]
    if name:
        cmd += ["--name", name]
    for item in overrides:
        cmd += ["-S", "++" + item.strip()]
    lines = _stream(cmd, repo, _child_env(parent_run_id, run_url))
    ran = [m.group(1) for line in lines if (m := re.search(r"Ran experiment\(s\): (\S+)", line))]
    return {"experiment": ran[-1] if ran else None, "stages": stage_statuses(lines)}


# ----------------------------------------------------------------------------- the flow
def _absolute_tracking(cfg: TrackingConfig, repo: Path) -> TrackingConfig:
    """A relative ``sqlite:///mlflow.db`` means the repo's file, whatever this process's cwd."""
    prefix = "sqlite:///"
    if cfg.uri.startswith(prefix) and not Path(cfg.uri.removeprefix(prefix)).is_absolute():
        return cfg.model_copy(update={"uri": prefix + str((repo / cfg.uri.removeprefix(prefix)).resolve())})
    return cfg


def _flow_run_tags() -> dict[str, str]:
    """The Prefect flow-run id and UI link, for the MLflow parent run and (by env) the stages."""
    from prefect.runtime import flow_run

    tags = {"prefect.flow_run_id": str(flow_run.id)}
    try:
        if url := flow_run.ui_url:
            tags["prefect.flow_run_url"] = url
    except Exception:  # no UI configured (ephemeral runs): simply no link
        pass
    return tags


def _numeric_leaves(d: dict[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += _numeric_leaves(v, f"{prefix}{k}.")
        elif isinstance(v, int | float) and not isinstance(v, bool):
            rows.append({"metric": f"{prefix}{k}", "value": round(float(v), 4)})
    return rows


def _publish(repo: Path) -> None:
    """Artifacts a person reads: the evaluation report and its headline numbers."""
    report = repo / "reports" / "eval.md"
    if report.is_file():
        create_markdown_artifact(report.read_text(), key="eval-report", description="reports/eval.md")
    metrics = repo / "metrics" / "eval.json"
    if metrics.is_file():
        rows = _numeric_leaves(json.loads(metrics.read_text()))[:100]
        if rows:
            create_table_artifact(rows, key="eval-metrics", description="metrics/eval.json")
    curriculum = repo / "plots" / "curriculum.png"
    if curriculum.is_file():
        # Prefect's image artifact wants a URL; inlining the PNG keeps it viewable offline.
        png = base64.b64encode(curriculum.read_bytes()).decode()
        create_markdown_artifact(
            f"# GRPO curriculum\n\nSampling probability of each source per step "
            f"(`plots/curriculum.csv`).\n\n![curriculum](data:image/png;base64,{png})\n",
            key="grpo-curriculum",
            description="plots/curriculum.png",
        )


@flow(name="post-training")
def post_training(repo: str = ".", params_overrides: list[str] | None = None, stage_retries: int = 0) -> dict:
    """Run curate -> base -> sft -> grpo -> evaluate through DVC (or one DVC experiment with overrides)."""
    logger = get_run_logger()
    root = Path(repo).resolve()
    overrides = list(params_overrides or [])
    params = load_params(root / "params.yaml", overrides=overrides)  # fails here, before any stage
    order = stage_order(root / "dvc.yaml")
    tracking = _absolute_tracking(params.tracking, root)
    prefect_tags = _flow_run_tags()
    run_url = prefect_tags.get("prefect.flow_run_url")
    name = "post-training" + (" " + " ".join(overrides) if overrides else "")
    parent = start_parent(tracking, name=name, tags={"r1flow.overrides": " ".join(overrides), **prefect_tags})
    logger.info("MLflow parent run %s at %s; stages %s", parent, tracking.uri, order)

    result: dict[str, Any] = {"parent_run_id": parent, "experiment": None, "stages": {}}
    try:
        if overrides:
            # The experiment runs in a scratch copy: a relative MLflow store would land there too.
            if tracking.uri != params.tracking.uri:
                overrides = [*overrides, f"tracking.uri={tracking.uri}"]
            exp = run_experiment.with_options(retries=stage_retries)(overrides, str(root), parent, run_url)
            result.update(exp)
            create_markdown_artifact(
                f"# DVC experiment `{exp['experiment']}`\n\nOverrides: `{' '.join(params_overrides or [])}`\n\n"
                f"Stages: {exp['stages']}\n\nCompare with `dvc exp show`; bring it into the workspace "
                f"with `dvc exp apply {exp['experiment']}`.\n",
                key="dvc-experiment",
            )
        else:
            stage_task = run_stage.with_options(retries=stage_retries)
            for stage in order:
                r = stage_task(stage, str(root), parent, run_url)
                result["stages"][stage] = r["status"]
            _publish(root)
    except BaseException:
        end_run(tracking, parent, "FAILED")
        raise
    end_run(tracking, parent, "FINISHED")
    logger.info("stages: %s", result["stages"])
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Run the post-training pipeline once (ephemeral Prefect).")
    ap.add_argument("--repo", default=".", help="project root holding dvc.yaml and params.yaml")
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="parameter override; any override runs the pipeline as a DVC experiment")
    ap.add_argument("--retries", type=int, default=0, help="retries per stage task (default 0)")
    args = ap.parse_args(argv)
    post_training(repo=args.repo, params_overrides=args.overrides or None, stage_retries=args.retries)


if __name__ == "__main__":
    main()
