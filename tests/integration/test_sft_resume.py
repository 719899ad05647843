"""SFT checkpoints: a run killed mid-way and rerun ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tasks.config import ModelConfig, load_params
from tasks.models import build_tiny

pytestmark = pytest.mark.slow
STEPS = 160
SETTINGS = [f"sft.steps={STEPS}", "sft.save_every=20", "sft.batch_size=4", "sft.log_every=5", "sft.lr=0.01"]
OUTPUTS = ("models/sft", "metrics/sft.json", "plots/sft_loss.csv")


def _sft_rows() -> pd.DataFrame:
    rows = [(f"{10 + i}+{20 + i}=", f"<think>{i}</think> <answer>{30 + 2 * i}</answer>") for i in range(10)]
    return pd.DataFrame(rows, columns=["prompt", "solution"])


def test_sft_resumes_after_sigkill(tiny_project: Path, sh, subprocess_env):
    p, env = tiny_project, {**subprocess_env, "HF_HUB_OFFLINE": "1"}
    (p / "data/curated").mkdir(parents=True)
    _sft_rows().to_parquet(p / "data/curated/sft.parquet")
    build_tiny(ModelConfig(**load_params(p / "params.yaml").model.model_dump()), p / "models/base")
    cmd = ["python", "-m", "tasks.stages.sft", *[a for o in SETTINGS for a in ("-S", o)]]

    a = sh(cmd, p, env=env)  # A: uninterrupted
    assert "resuming" not in a.stderr
    ref = p.parent / "reference"
    ref.mkdir()
    for o in OUTPUTS:
        (p / o).rename(ref / Path(o).name)
    assert not list((p / "checkpoints").rglob("step-*"))  # removed once the model is saved

    log = (p.parent / "killed.log").open("w")  # B: killed once its step-20 checkpoint is whole
    proc = subprocess.Popen(cmd, cwd=p, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list((p / "checkpoints/sft").glob("*/step-000020")):
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
            pytest.fail(
                f"no step-20 checkpoint (rc {proc.returncode}):\n{(p.parent / 'killed.log').read_text()}"
            )
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    log.close()
    assert not any((p / o).exists() for o in OUTPUTS), "the killed run finished before the kill"
    newest = sorted(c for c in (p / "checkpoints/sft").glob("*/step-*") if (c / "state.pt").is_file())[-1]
    n = int(newest.name.removeprefix("step-"))
    assert 20 <= n < STEPS

    b = sh(cmd, p, env=env)
    assert f"resuming from {newest.relative_to(p)} (step {n})" in b.stderr
    hist = pd.read_csv(p / "plots/sft_loss.csv")
    assert hist["step"].tolist() == [*range(0, STEPS, 5), STEPS - 1]  # the steps before the kill included
    pd.testing.assert_frame_equal(hist, pd.read_csv(ref / "sft_loss.csv"), check_exact=True)
    resumed, trained = load_file(p / "models/sft/model.safetensors"), load_file(ref / "sft/model.safetensors")
    assert all(torch.equal(resumed[k], trained[k]) for k in trained), (
        "resumed run differs from the uninterrupted one"
    )
    assert not list((p / "checkpoints").rglob("step-*"))
