"""What a real model brings into ``base`` and SFT: versions, a missing model, truncation, NaN.

- ``test_reexported_local_model_reruns_base``: a local model folder is a DVC input of ``base``
  (``model.watch``): an unchanged folder skips, a re-exported one re-runs ``base``, and the new
  ``models/base`` hash in dvc.lock is what makes ``sft`` and everything after it stale. A folder
  that ``model.watch`` does not name stops ``base`` with the fix.
- ``test_missing_hub_model_fails_at_base``: offline, a hub id that is not in the hub cache stops
  ``base`` (exit 1, one line naming id, revision and what to do, no output, no MLflow run).
- ``test_cached_hub_model_resolves_to_its_commit``: offline, a hub id whose snapshot is in the
  cache (laid out as huggingface_hub lays it out) resolves ``main`` to the snapshot's commit;
  the pointer records it, and a later stage loads that snapshot.
- ``test_sft_counts_and_drops_truncated_traces`` / ``test_sft_stops_on_a_non_finite_loss``: SFT on
  GSM8K traces with a Llama-3-style BPE model (tests/integration/model_families.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from model_families import GSM8K, build_family, corpus

from tasks.config import ModelConfig, TinyModel
from tasks.models import POINTER, build_tiny

pytestmark = pytest.mark.slow

SMALL = TinyModel(
    hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64
)


def set_model(project: Path, **model) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["model"].update(model)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def lock_md5(project: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"][stage]
    return next(o["md5"] for o in lock["outs"] if o["path"] == path)


def test_reexported_local_model_reruns_base(tiny_project: Path, sh, subprocess_env, tmp_path):
    p, env = tiny_project, {**subprocess_env, "HF_HUB_OFFLINE": "1"}
    export = tmp_path / "export" / "my-model"  # outside the project, as a user's export usually is
    build_tiny(ModelConfig(tiny=SMALL, seed=0), export)
    set_model(p, name_or_path=str(export))  # model.watch still the default: base must refuse
    bad = sh(["python", "-m", "tasks.stages.base"], p, env=env, check=False)
    assert (
        bad.returncode == 1
        and f"Set model.watch: {export}" in bad.stderr
        and not (p / "models/base").exists()
    )

    set_model(p, watch=str(export))
    first = sh(["dvc", "repro", "base"], p, env=env)
    assert "Running stage 'base'" in first.stdout
    before = lock_md5(p, "base", "models/base")
    again = sh(["dvc", "repro", "base"], p, env=env)
    assert "Stage 'base' didn't change, skipping" in again.stdout

    build_tiny(ModelConfig(tiny=SMALL, seed=1), export)  # re-exported at the same path
    status = json.loads(sh(["dvc", "status", "--json", "base"], p, env=env).stdout)
    assert status["base"] == [{"changed deps": {str(export): "modified"}}]
    third = sh(["dvc", "repro", "base"], p, env=env)
    assert "Running stage 'base'" in third.stdout
    assert lock_md5(p, "base", "models/base") != before  # sft depends on it: it and all after re-run
    assert (p / "models/base/model.safetensors").read_bytes() == (export / "model.safetensors").read_bytes()


def test_missing_hub_model_fails_at_base(tiny_project: Path, sh, subprocess_env, tmp_path):
    p = tiny_project
    env = {**subprocess_env, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    set_model(p, name_or_path="no-such-org/no-such-model", revision="v1")
    t0 = time.perf_counter()
    proc = sh(["python", "-m", "tasks.stages.base"], p, env=env, check=False)
    elapsed = time.perf_counter() - t0
    print(f"\nmissing model, offline: exit {proc.returncode} after {elapsed:.1f}s\n{proc.stderr}")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "base: model 'no-such-org/no-such-model' (revision 'v1') not found"
    )
    for hint in (
        "hf download no-such-org/no-such-model --revision v1",
        "model.name_or_path",
        "unset HF_HUB_OFFLINE",
    ):
        assert hint in lines[0]
    assert not (p / "models/base").exists()
    assert not (p.parent / "mlflow.db").exists()  # no MLflow run was opened for a stage that failed

    set_model(p, name_or_path="./models/exported")  # a path, not a hub id
    proc = sh(["python", "-m", "tasks.stages.base"], p, env=env, check=False)
    assert proc.returncode == 1 and "model.name_or_path: ./models/exported: no such folder" in proc.stderr


def test_cached_hub_model_resolves_to_its_commit(tiny_project: Path, sh, subprocess_env, tmp_path):
    p, cache = tiny_project, tmp_path / "hub-cache"
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--r1flow-test--tiny"
    build_tiny(ModelConfig(tiny=SMALL), repo / "snapshots" / sha)  # huggingface_hub's cache layout
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    env = {**subprocess_env, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    set_model(p, name_or_path="r1flow-test/tiny", revision="main")
    sh(["python", "-m", "tasks.stages.base"], p, env=env)
    pointer = json.loads((p / "models/base" / POINTER).read_text())
    assert pointer == {"name_or_path": "r1flow-test/tiny", "revision": "main", "sha": sha}
    load = "from tasks.models import load_model, resolve; print(resolve('models/base')[1], load_model('models/base').num_parameters())"
    out = sh(["python", "-c", load], p, env=env).stdout.split()
    assert out[0] == sha and int(out[1]) > 0


# ----------------------------------------------------------------------------- SFT
@pytest.fixture
def sft_project(tmp_path) -> Path:
    """A project with GSM8K worked traces (the real adapter) and a Llama-3-style BPE model as base."""
    from tasks.data.gsm8k import to_row

    p = tmp_path / "sft"
    rows = [to_row(json.loads(line)) for line in GSM8K.read_text().splitlines()[:24]]
    (p / "data").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(p / "data/sft.parquet")
    build_family("llama3", p / "models/base", corpus(200))
    (p / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "sft": {"steps": 2, "batch_size": 4, "warmup_steps": 1, "log_every": 1},
                "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
            }
        )
    )
    return p


def run_sft(*overrides: str) -> int:
    import tasks.stages.sft

    return tasks.stages.sft.main(["--data", "data/sft.parquet", *[a for o in overrides for a in ("-S", o)]])


def test_sft_counts_and_drops_truncated_traces(sft_project: Path, monkeypatch):
    from tasks.models import load_tokenizer, render_prompt

    monkeypatch.chdir(sft_project)
    df, tok = pd.read_parquet("data/sft.parquet"), load_tokenizer("models/base")
    lengths = [
        len(tok(render_prompt(tok, q) + s, add_special_tokens=False).input_ids) + 1
        for q, s in zip(df["prompt"], df["solution"])
    ]
    cut = sum(n > 256 for n in lengths)
    assert 0 < cut < len(df)  # the slice has traces on both sides of the limit
    assert run_sft("sft.max_length=256") == 0
    metrics = json.loads(Path("metrics/sft.json").read_text())
    assert metrics["truncated"] == {"gsm8k": cut} and metrics["examples"] == len(df)
    assert metrics["dropped_truncated"] == 0
    assert run_sft("sft.max_length=256", "sft.drop_truncated=true") == 0
    metrics = json.loads(Path("metrics/sft.json").read_text())
    assert metrics["examples"] == len(df) - cut and metrics["dropped_truncated"] == cut


def test_sft_stops_on_a_non_finite_loss(sft_project: Path, monkeypatch, capsys):
    monkeypatch.chdir(sft_project)
    # every rendered prompt is longer than 16 tokens: no completion token survives, the loss is NaN
    with pytest.raises(SystemExit) as stop:
        run_sft("sft.max_length=16")
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "sft: step 0: loss is nan (0 completion tokens" in err and "sft.max_length=16" in err
    assert not Path("models/sft").exists() and not Path("metrics/sft.json").exists()
