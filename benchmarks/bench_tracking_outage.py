"""SFT against a real ``mlflow server`` on 127.0.0.1, without and with an outage (``make bench-tracking-outage``).

Run 1: the server stays up. Run 2: the server is stopped as soon as the first metrics arrive and
restarted ``--down`` seconds later. Both train the same tiny model for the same steps. Printed and
written to ``benchmarks/results/tracking_outage.json``: steps trained, loss points delivered (of
those logged), the stage's wall time and the overhead of the outage run over the clean one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.servers import mlflow_server  # noqa: E402
from tasks.config import ModelConfig  # noqa: E402
from tasks.models import build_tiny  # noqa: E402

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
}


def losses(uri: str, experiment: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id]) if exp else []
    return [m.step for r in runs for m in c.get_metric_history(r.info.run_id, "loss")]


def run_sft(work: Path, server, experiment: str, steps: int, log_every: int, down_s: float | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "R1FLOW_TRACKING_FLUSH_S": "400"}  # a slow restart still lands inside the end-of-stage flush
    cmd = [
        sys.executable,
        "-m",
        "tasks.stages.sft",
        "-S",
        f"tracking.uri={server.url}",
        "-S",
        f"tracking.experiment={experiment}",
        "-S",
        f"sft.steps={steps}",
        "-S",
        f"sft.log_every={log_every}",
    ]
    err = work / f"{experiment}.err"
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=err.open("w"))
    down = None
    if down_s is not None:
        while not losses(server.url, experiment) and proc.poll() is None:
            time.sleep(0.2)
        t_stop = time.perf_counter()
        server.stop()
        time.sleep(down_s)
        server.start()
        down = time.perf_counter() - t_stop  # the restart's own start-up time included
    rc = proc.wait()
    wall = time.perf_counter() - t0
    expected = len([*range(0, steps, log_every)]) + (0 if (steps - 1) % log_every == 0 else 1)
    delivered = losses(server.url, experiment)
    trained = json.loads((work / "metrics/sft.json").read_text())["steps"] if rc == 0 else 0
    return {
        "rc": rc,
        "steps_trained": trained,
        "loss_points_logged": expected,
        "loss_points_delivered": len(delivered),
        "wall_s": round(wall, 1),
        "server_down_s": round(down, 1) if down else 0.0,
        "said": [line for line in err.read_text().splitlines() if line.startswith("tracking:")],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--down", type=float, default=10.0, help="seconds the server stays stopped")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "data/curated").mkdir(parents=True)
        rows = [
            (f"{10 + i}+{20 + i}=", f"<think>{i}</think> <answer>{30 + 2 * i}</answer>") for i in range(10)
        ]
        pd.DataFrame(rows, columns=["prompt", "solution"]).to_parquet(work / "data/curated/sft.parquet")
        (work / "params.yaml").write_text(yaml.safe_dump({"model": {"tiny": TINY}, "sft": {"batch_size": 4}}))
        build_tiny(ModelConfig(tiny=TINY), work / "models/base")
        server = mlflow_server(work / "server").start()
        try:
            clean = run_sft(work, server, "clean", args.steps, args.log_every, None)
            outage = run_sft(work, server, "outage", args.steps, args.log_every, args.down)
        finally:
            server.stop()
    out = {
        "steps": args.steps,
        "clean": clean,
        "outage": outage,
        "overhead_s": round(outage["wall_s"] - clean["wall_s"], 1),
        "overhead_minus_downtime_s": round(outage["wall_s"] - clean["wall_s"] - outage["server_down_s"], 1),
    }
    print(json.dumps(out, indent=2))
    (ROOT / "benchmarks/results").mkdir(exist_ok=True)
    (ROOT / "benchmarks/results/tracking_outage.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
