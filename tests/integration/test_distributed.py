"""Two gloo processes on this CPU: SFT and GRPO relaunch themselves under torchrun.

- ``test_sft_two_processes_equal_one``: ``python -m tasks.stages.sft -S sft.scale.num_processes=2``
  relaunches via torchrun (world size 2 in the log), rank 0 alone writes one model, and the
  weights equal those of one process on the same global batch (to float rounding): each rank
  trains on half of every batch, and the loss is normalised by the global token count.
- ``test_grpo_two_processes``: GRPO with the ``dump`` curriculum in 2 processes finishes, rank 0
  wrote the outputs, both ranks end with the same sampler state and the same weights, and the
  sampler counted the *global* batch (2 prompts per step, not 1 per rank).

The project is built in-process (curated splits and the tiny model) instead of by the curate and
base stages, which would cost ~25 s of start-up here, and both tests share one MLflow store
(creating a fresh SQLite store costs ~12 s). GRPO starts from the untrained base model: the
``tag_count`` reward still varies between its random completions, so the weights move.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tasks.config import load_params
from tasks.models import build_tiny, load_model, load_tokenizer
from tasks.stages.curate import build, write_parquet
from tasks.stages.sft import encode_example, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def project(tmp_path: Path, mlflow_uri: str) -> Path:
    """A folder with tiny params (tests/conftest.py TINY), curated splits and models/base."""
    from conftest import TINY

    params = {**TINY, "tracking": {"uri": mlflow_uri, "experiment": tmp_path.name}}
    p = tmp_path / "project"
    p.mkdir()
    (p / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cfg = load_params(p / "params.yaml")
    splits, _ = build(cfg.curate)
    for name in ("sft", "rl"):
        write_parquet(splits[name], p / "data/curated" / f"{name}.parquet")
    build_tiny(cfg.model, p / "models/base")
    return p


def test_sft_two_processes_equal_one(project: Path, sh, subprocess_env):
    out = sh(["python", "-m", "tasks.stages.sft", "-S", "sft.scale.num_processes=2"], project, env=subprocess_env)
    log = out.stdout + out.stderr
    assert "torch.distributed.run --standalone --nproc_per_node 2 -m tasks.stages.sft" in log
    assert sorted(re.findall(r"sft: rank (\d) of world size 2", log)) == ["0", "1"]
    assert log.count("sft: 5 steps on 40 traces") == 1  # only rank 0 reports (and writes)
    two = load_file(project / "models/sft/model.safetensors")

    # one process, same settings and global batch, in this process
    cfg = load_params(project / "params.yaml").sft
    torch.manual_seed(cfg.seed)
    tok = load_tokenizer(project / "models/base")
    model = load_model(project / "models/base")
    df = pd.read_parquet(project / "data/curated/sft.parquet")
    history = train(model, tok, [encode_example(tok, p, s, cfg.max_length) for p, s in zip(df["prompt"], df["solution"])], cfg)
    one = model.state_dict()
    base = load_file(project / "models/base/model.safetensors")
    assert max((one[k] - base[k]).abs().max().item() for k in base) > 1e-3  # training moved the weights
    assert max((one[k] - two[k]).abs().max().item() for k in two) < 1e-5
    logged = pd.read_csv(project / "plots/sft_loss.csv")["loss"].tolist()
    assert logged == pytest.approx([h["loss"] for h in history], abs=1e-5)  # the global-batch loss


def test_grpo_two_processes(project: Path, sh, subprocess_env):
    out = sh(
        ["python", "-m", "tasks.stages.grpo", "--model", "models/base", "-S", "grpo.scale.num_processes=2", "-S", "grpo.sampler=dump",
         "-S", "grpo.steps=3", "-S", "grpo.save_every=100", "-S", "grpo.rewards={tag_count: 1.0, format: 0.1}"],
        project, env={**subprocess_env, "HF_HUB_OFFLINE": "1"},
    )
    log = out.stdout + out.stderr
    assert sorted(re.findall(r"grpo: rank (\d) of world size 2", log)) == ["0", "1"]
    states = dict(re.findall(r"grpo: rank (\d) (sampler \w+ weights \w+)", log))
    assert set(states) == {"0", "1"} and states["0"] == states["1"], states
    assert json.loads((project / "metrics/grpo.json").read_text())["steps"] == 3
    grpo, base = load_file(project / "models/grpo/model.safetensors"), load_file(project / "models/base/model.safetensors")
    assert max((grpo[k] - base[k]).abs().max().item() for k in base) > 0  # an update happened
    assert pd.read_csv(project / "plots/grpo_train.csv")["step"].tolist() == [0, 1, 2]

    # the curriculum heard the global batch: at step 2, 2 updates of 2 prompts each = 4 prompts
    from mlflow import MlflowClient

    params = load_params(project / "params.yaml")
    client = MlflowClient(tracking_uri=params.tracking.uri)
    exp = client.get_experiment_by_name(params.tracking.experiment)
    (run,) = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags["r1flow.stage"] == "grpo"]
    assert run.data.tags["world_size"] == "2"
    at_step_2 = {k: m.value for k in run.data.metrics if k.startswith("curriculum/prompts/")
                 for m in client.get_metric_history(run.info.run_id, k) if m.step == 2}
    assert sum(at_step_2.values()) == 4, at_step_2
