"""How long a person waits in Prefect (issue 13), written to ``benchmarks/results/ops.json`` (``make bench-ops``).

``e2e`` (~5 min): two e2e tests through pytest, on a tiny project served against a real ``prefect
server``. The overlap test's timeline (two nightly runs at once: the second says it waits, then
runs). The schedule test (scheduler polling every 2 s, a 30 s interval schedule): for the first
scheduled run on unchanged data, and the first after a source file changed, the time from the start
time the schedule gave the run to Completed -- the runner's pick-up and Prefect's overhead count.

``ui`` (~6-10 min): the embedded default -- the committed ``params.yaml``, synthetic data, tiny model
-- in a scratch clone of this checkout's HEAD (``--workdir``), its DVC outputs checked out from a
copy of a DVC cache (``--cache``), so only what the change invalidates runs (GRPO and evaluate; data,
base and SFT come from the cache). A Prefect server on 127.0.0.1, the deployments served from the
clone as ``make serve`` does, and headless Chromium: the ``experiment`` deployment's Custom run form,
``grpo.lr`` changed, Submit, until the run is Completed. Its page is saved next to the JSON.

Each part rewrites only its own key of the JSON; ``--part`` picks one (both by default).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "e2e")]

from prefect_api import deployments, serve_env, stages_of, start_serve, wait_for, wall  # noqa: E402
from prefect_ui import custom_run  # noqa: E402

from flows.servers import prefect_server  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
OUT = RESULTS / "ops.json"
E2E = "tests/e2e/test_deployments.py::"
TESTS = [  # one module fixture: one server, one served project, in this order
    E2E + "test_two_overlapping_runs_are_held_to_one_at_a_time",
    E2E + "test_schedule_runs_nothing_on_unchanged_data_and_retrains_on_a_changed_source",
]
MARKER = ".r1flow-bench-ops"  # a --workdir this script made, and may therefore replace


def e2e_part() -> dict:
    """The overlap and schedule e2e tests; their records (R1FLOW_TEST_ARTIFACTS) become ours."""
    with tempfile.TemporaryDirectory(prefix="bench-ops-") as tmp:
        env = {**os.environ, "R1FLOW_TEST_ARTIFACTS": tmp}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS]
        t0 = time.time()
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)
        out = {
            "command": "pytest " + " ".join(TESTS),
            "tests_wall_s": round(time.time() - t0, 1),
            "scheduled_runs": json.loads((Path(tmp) / "scheduled_runs.json").read_text()),
            "overlap_timeline": json.loads((Path(tmp) / "overlap_timeline.json").read_text()),
        }
    return out


def _clone(workdir: Path, cache: Path) -> dict:
    """A scratch clone of HEAD with the cached outputs checked out; returns what DVC says is stale."""
    if not cache.is_dir():
        sys.exit(f"no DVC cache at {cache}: run `make run` first, or pass --cache <a project's .dvc/cache>")
    if workdir.exists():
        if not (workdir / MARKER).exists():
            sys.exit(f"{workdir} exists and is not a bench-ops clone: pick another --workdir")
        shutil.rmtree(workdir)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(workdir)], check=True)
    (workdir / MARKER).write_text("made by benchmarks/bench_ops.py; replaced on its next run\n")
    (workdir / ".venv").symlink_to(ROOT / ".venv")
    shutil.copytree(cache, workdir / ".dvc" / "cache")
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "checkout", "-q"], cwd=workdir, check=False)  # a missing output shows as stale below
    status = subprocess.run(
        [dvc, "status", "--json"], cwd=workdir, capture_output=True, text=True, check=True
    )
    return json.loads(status.stdout or "{}")


def ui_part(workdir: Path, cache: Path, key: str, value: str) -> dict:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    stale = sorted(_clone(workdir, cache))
    print(f"clone {workdir}: stale before the run (sources always is): {stale}", flush=True)
    server = prefect_server(workdir / ".r1flow" / "prefect", services=False).start()
    url = server.url + "/api"
    env = serve_env(url)
    log_path = workdir / ".r1flow" / "serve.log"
    serve = start_serve(workdir, env, log_path)
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            wait_for(lambda: len(deployments()) == 3, 240, "the 3 deployments to register", serve, log_path)
            shot = RESULTS / "ui_custom_run_default.png"
            fr, t_submit = custom_run(server.url, deployments()["experiment"], key, value, shot, timeout=3600)
            stages = stages_of(fr.id)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, 15)
            serve.wait(30)
        server.stop()
    if fr.state.type.value != "COMPLETED" or stages.get(key.split(".")[0]) != "ran":
        sys.exit(f"the UI run ended {fr.state.type.value}, stages {stages}; serve log {log_path}")
    return {
        "project": "embedded default (committed params.yaml), scratch clone of HEAD",
        "change": f"{key}={value}",
        "flow_run": fr.name,
        "stale_before": stale,
        "stages": stages,
        "submit_to_completed_s": round(fr.end_time.timestamp() - t_submit, 1),
        "run_wall_s": round(wall(fr), 1),
        "screenshot": str(shot.relative_to(ROOT)),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["e2e", "ui", "all"], default="all")
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "ops-ui", help="scratch clone (ui)")
    ap.add_argument("--cache", type=Path, default=ROOT / ".dvc" / "cache", help="DVC cache to copy (ui)")
    ap.add_argument("--set", default="grpo.lr=0.0001", help="the one form field changed (ui)")
    args = ap.parse_args(argv)
    key, _, value = args.set.partition("=")
    out = json.loads(OUT.read_text()) if OUT.is_file() else {}
    if args.part in ("e2e", "all"):
        out["e2e"] = e2e_part()
    if args.part in ("ui", "all"):
        out["ui_custom_run_default"] = ui_part(args.workdir.resolve(), args.cache.resolve(), key, value)
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
