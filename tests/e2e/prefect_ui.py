"""The Prefect UI driven the way a person uses it, in headless Chromium (Debian's, through playwright).

:func:`custom_run` opens a deployment's page, then its Custom run form (the page the deployment's
Run -> Custom run menu opens), types one value into the field whose description names a params.yaml
key (``(grpo.lr)``), presses Submit, waits for the flow run it created to finish, and saves the run's
page once it shows Completed. The browser test and ``benchmarks/bench_ops.py`` both call it. No tests
here; no browser download: ``R1FLOW_CHROMIUM`` or ``/usr/bin/chromium`` (``make setup`` installs it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect_api import finished, newest_run, wait_for

CHROMIUM = os.environ.get("R1FLOW_CHROMIUM", "/usr/bin/chromium")
PAGE_MS = 120_000  # a page load on a busy 2-core machine


def custom_run(url: str, deployment_id: str, key: str, value: str, screenshot: Path, timeout: float = 600):
    """Submit a Custom run of ``deployment_id`` with ``key`` set to ``value`` from the UI at ``url``;
    return ``(flow run once final, time.time() at Submit)``. The screenshot shows the run's page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(
                f"{url}/deployments/deployment/{deployment_id}", wait_until="networkidle", timeout=PAGE_MS
            )
            page.get_by_text("experiment").first.wait_for(timeout=60_000)
            page.goto(
                f"{url}/deployments/deployment/{deployment_id}/run", wait_until="networkidle", timeout=PAGE_MS
            )
            field = page.locator(
                "div.schema-form-property",
                has=page.locator(".schema-form-property__description", has_text=f"({key})"),
            ).last
            field.locator("input").fill(value)
            t_submit = time.time()
            page.get_by_role("button", name="Submit").click()
            run_id = wait_for(
                lambda: newest_run(deployment_id, t_submit), 120, "the flow run the form submitted"
            )
            fr = finished(run_id, timeout=timeout)
            page.goto(f"{url}/runs/flow-run/{run_id}", wait_until="networkidle", timeout=PAGE_MS)
            if fr.state.type.value == "COMPLETED":  # a failed run's page is saved as it is
                page.get_by_text("Completed").first.wait_for(timeout=60_000)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return fr, t_submit
