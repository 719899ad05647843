"""Serve the post-training flow as a deployment with a cron schedule.

``serve`` registers the deployment with the Prefect server named by ``PREFECT_API_URL`` and then
runs its flow runs in this process (no work pool needed), whether they come from the schedule, the
UI's "Run" button (where ``params_overrides`` can be filled in) or the API. Keep the server local::

    prefect server start --host 127.0.0.1                                # terminal 1
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.deploy    # terminal 2

Without ``PREFECT_API_URL`` there is no server to register with, so this exits with that message
instead of silently serving against a throwaway one.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flows.pipeline import post_training


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Serve the post-training flow on a cron schedule.")
    ap.add_argument("--name", default="nightly", help="deployment name (default: nightly)")
    ap.add_argument("--cron", default="0 3 * * *", help="cron schedule (default: 03:00 daily)")
    ap.add_argument("--repo", default=".", help="project root the runs use (stored as an absolute path)")
    args = ap.parse_args(argv)

    if not os.environ.get("PREFECT_API_URL"):
        sys.exit("PREFECT_API_URL is not set: start `prefect server start --host 127.0.0.1` and set "
                 "PREFECT_API_URL=http://127.0.0.1:4200/api")
    repo = Path(args.repo).resolve()
    if not (repo / "dvc.yaml").is_file():
        sys.exit(f"{repo}: no dvc.yaml here; pass --repo <project root>")
    post_training.serve(
        name=args.name,
        cron=args.cron,
        parameters={"repo": str(repo)},
        limit=1,  # one pipeline at a time: stages share the workspace (DVC would refuse a second anyway)
        description="curate -> base -> sft -> grpo -> evaluate through DVC; overrides run a DVC experiment",
    )


if __name__ == "__main__":
    main()
