"""Serve the deployments of ``prefect.yaml`` from this process (``make serve``).

``prefect.yaml`` is the one list of deployments (name, parameters, schedule); ``prefect deploy``
registers them for a work pool, and this module serves the same list without one: it registers
each with the Prefect server named by ``PREFECT_API_URL`` and runs their flow runs here, whether
they come from a schedule, the UI's Run button or the API. Keep the server local::

    make ui                                                      # terminal 1: Prefect + MLflow UIs
    PREFECT_API_URL=http://127.0.0.1:4200/api make serve         # terminal 2

``--only NAME`` serves one deployment; ``--interval S`` replaces the scheduled deployments'
schedules with one every S seconds (to watch a schedule work without waiting for 03:00). Without ``PREFECT_API_URL`` there is
no server to register with, so this exits with that message instead of serving a throwaway one.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


def deployments(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text()) or {}
    found = doc.get("deployments") or []
    if not found:
        raise SystemExit(f"{path}: no deployments")
    return found


def to_deployments(repo: Path, only: str | None = None, interval: float | None = None) -> list:
    from flows.pipeline import post_training

    out = []
    for spec in deployments():
        if only and spec["name"] != only:
            continue
        schedule: dict[str, Any] = {}
        if interval and spec.get("schedules"):  # only what prefect.yaml schedules gets the short interval
            schedule = {"interval": interval}
        elif spec.get("schedules"):
            first = spec["schedules"][0]
            schedule = {"cron": first["cron"]} if "cron" in first else {"interval": first["interval"]}
        out.append(
            post_training.to_deployment(
                name=spec["name"],
                parameters={**(spec.get("parameters") or {}), "repo": str(repo)},
                description=spec.get("description"),
                tags=spec.get("tags"),
                **schedule,
            )
        )
    if not out:
        raise SystemExit(f"no deployment named {only!r} in {PREFECT_YAML}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Serve prefect.yaml's deployments of the post-training flow.")
    ap.add_argument("--repo", default=".", help="project root the runs use (stored as an absolute path)")
    ap.add_argument("--only", help="serve only this deployment")
    ap.add_argument(
        "--interval", type=float, help="schedule every INTERVAL seconds instead of prefect.yaml's"
    )
    args = ap.parse_args(argv)

    if not os.environ.get("PREFECT_API_URL"):
        sys.exit(
            "PREFECT_API_URL is not set: start `make ui` (or `prefect server start --host 127.0.0.1`) and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    repo = Path(args.repo).resolve()
    if not (repo / "dvc.yaml").is_file():
        sys.exit(f"{repo}: no dvc.yaml here; pass --repo <project root>")
    from prefect import serve

    serve(*to_deployments(repo, args.only, args.interval))


if __name__ == "__main__":
    main()
