"""Training survives a tracking outage: a real ``mlflow server`` on 127.0.0.1 is stopped while SFT
runs and restarted later; SFT trains every step, exits 0, and every metric reaches the server.
(Figures -- overhead against a run without outage -- come from benchmarks/bench_tracking_outage.py.)
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from flows.servers import mlflow_server
from tasks.config import ModelConfig, load_params
from tasks.models import build_tiny

pytestmark = pytest.mark.slow
STEPS, LOG_EVERY = 600, 5


def _losses(uri: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("r1flow")
    runs = c.search_runs([exp.experiment_id]) if exp else []
    return [m.step for r in runs for m in c.get_metric_history(r.info.run_id, "loss")]


def test_sft_survives_mlflow_going_down_and_coming_back(tiny_project: Path, subprocess_env, tmp_path):
    p = tiny_project
    server = mlflow_server(tmp_path / "mlflow-server").start()
    try:
        (p / "data/curated").mkdir(parents=True)
        rows = [
            (f"{10 + i}+{20 + i}=", f"<think>{i}</think> <answer>{30 + 2 * i}</answer>") for i in range(10)
        ]
        pd.DataFrame(rows, columns=["prompt", "solution"]).to_parquet(p / "data/curated/sft.parquet")
        build_tiny(ModelConfig(**load_params(p / "params.yaml").model.model_dump()), p / "models/base")
        cmd = [
            "python",
            "-m",
            "tasks.stages.sft",
            "-S",
            f"tracking.uri={server.url}",
            "-S",
            f"sft.steps={STEPS}",
            "-S",
            f"sft.log_every={LOG_EVERY}",
            "-S",
            "sft.batch_size=4",
        ]
        err = (tmp_path / "sft.err").open("w")
        # the end-of-stage flush waits long enough for a restart on a loaded machine (default 60 s)
        env = {**subprocess_env, "R1FLOW_TRACKING_FLUSH_S": "400"}
        proc = subprocess.Popen(cmd, cwd=p, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        deadline = time.monotonic() + 240
        while not _losses(server.url):  # training has started and metrics flow
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "sft.err").read_text()
            time.sleep(0.2)
        server.stop()
        while "unreachable" not in (tmp_path / "sft.err").read_text():  # the stage noticed, and trains on
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "sft.err").read_text()
            time.sleep(0.2)
        time.sleep(3)
        server.start()
        out, _ = proc.communicate(timeout=600)
        err.close()
        log = (tmp_path / "sft.err").read_text()
        assert proc.returncode == 0, log
        assert f"sft: {STEPS} steps" in out
        assert json.loads((p / "metrics/sft.json").read_text())["steps"] == STEPS
        assert "training continues" in log and ("is back" in log or "delivered" in log)
        assert sorted(_losses(server.url)) == [
            *range(0, STEPS, LOG_EVERY),
            STEPS - 1,
        ]  # nothing lost, no duplicates
        assert not list((p / ".r1flow" / "spool").glob("*/journal.jsonl"))  # delivered journals are gone
    finally:
        server.stop()
