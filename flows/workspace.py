"""One pipeline run at a time per workspace: a Prefect global concurrency limit of 1.

Two runs in one work tree would race on ``dvc.lock``, the outputs and DVC's own lock, whichever
deployment (nightly, experiment, evaluate-only) or the UI started them. So every run holds one slot
of the limit ``r1flow-workspace-<hash of the project path>`` (created with limit 1 on first use)
around its stages. A run that finds the slot taken logs that it
waits and why, then blocks until the other run releases it (the slot is a lease that Prefect
renews while the holder lives, and frees when it dies), then runs. Different work trees do not
wait for each other.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def limit_name(root: Path) -> str:
    return "r1flow-workspace-" + hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]


def ensure_limit(name: str):
    """The limit, created with one slot unless it exists (a second creator just finds it)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass
            return client.read_global_concurrency_limit_by_name(name)


@contextmanager
def workspace_lock(root: Path, logger) -> Iterator[None]:
    """Hold the workspace's slot for the body; log when and why this run has to wait."""
    from prefect.concurrency.sync import concurrency

    name = limit_name(root)
    ensure_limit(name)
    t0 = time.monotonic()
    # Say why we wait when the slot is not ours within 2 s (acquiring itself just blocks).
    why = "waiting: another run holds %s, the one-run-at-a-time limit of workspace %s; this run starts when it ends"
    notice = threading.Timer(2.0, logger.info, args=(why, name, root))
    notice.start()
    try:
        with concurrency(name, occupy=1, strict=True):
            notice.cancel()
            logger.info(
                "holding %s (one run at a time in %s; waited %.0fs)", name, root, time.monotonic() - t0
            )
            yield
    finally:
        notice.cancel()
