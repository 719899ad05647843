"""The five stage entry points as DVC runs them: ``python -m tasks.stages.<stage>`` in a tiny project.

- ``test_repro_runs_all_then_nothing_then_only_what_changed``: ``dvc repro`` runs curate -> base ->
  sft -> grpo -> evaluate; then every output file, the MLflow runs and metric histories, and the
  registered ``challenger`` model loaded back from the registry and used to generate; a second
  ``dvc repro`` runs nothing; a changed ``grpo.lr`` re-runs only grpo and evaluate; an edit of a
  GRPO-only module or GRPO default makes only grpo stale, an SFT default only sft, tracking none.
  GRPO's reward here includes ``tag_count``: with only accuracy and format the barely trained tiny policy earns 0
  everywhere, no weight moves whatever the learning rate, and DVC would rightly skip evaluate.
- ``test_grpo_resumes_after_sigkill``: a GRPO run killed (SIGKILL to its whole process group,
  reward workers included) after a checkpoint resumes from the newest complete checkpoint and ends
  bit-identical to an uninterrupted run.
- ``test_bad_param_exits_2``: a bad value stops the stage with exit code 2 naming the key.

Subprocesses run with ``HF_HUB_OFFLINE=1``: this machine has no network, and without it
``mlflow.transformers.log_model`` spends ~45 s retrying the hub for a model card and licence of
the local ``models/grpo`` path.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tasks.config import ModelConfig, load_params
from tasks.models import build_tiny

pytestmark = pytest.mark.slow

STAGES = ["sources", "curate", "base", "sft", "grpo", "evaluate"]
ALWAYS = {"sources": ["always changed"]}  # the data fingerprint runs on every repro; its bytes decide
TEXT = "  <think>12 + 34:\n 2+4=6</think> <answer>46</answer>"


@pytest.fixture
def env(subprocess_env) -> dict[str, str]:
    return {**subprocess_env, "HF_HUB_OFFLINE": "1"}


def stage(sh, project: Path, env: dict[str, str], name: str, *overrides: str) -> subprocess.CompletedProcess:
    args = [a for o in overrides for a in ("-S", o)]
    return sh(["python", "-m", f"tasks.{name}", *args], project, env=env)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


# ----------------------------------------------------------------------------- the whole chain
def check_stage_outputs(p: Path) -> None:
    """What each stage must leave behind after one full run on the tiny settings."""
    params = load_params(p / "params.yaml")
    # ---- models: three HF folders; SFT changed the weights
    for m in ("base", "sft", "grpo"):
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            assert (p / "models" / m / f).is_file(), f"models/{m}/{f}"
    base, sft = weights(p / "models/base"), weights(p / "models/sft")
    assert any(not torch.equal(base[k], sft[k]) for k in base)

    # ---- SFT metrics and loss curve (5 steps, log_every 1; 2 families x 20 traces)
    sft_metrics = json.loads((p / "metrics/sft.json").read_text())
    assert sft_metrics["steps"] == 5 and sft_metrics["examples"] == 40
    loss_csv = pd.read_csv(p / "plots/sft_loss.csv")
    assert list(loss_csv.columns) == ["step", "loss", "lr"]
    assert loss_csv["step"].tolist() == [0, 1, 2, 3, 4]
    assert sft_metrics["final_loss"] == pytest.approx(loss_csv["loss"].iloc[-1])

    # ---- GRPO: 2 steps, history per step, no checkpoint left behind
    grpo_metrics = json.loads((p / "metrics/grpo.json").read_text())
    assert grpo_metrics["steps"] == params.grpo.steps == 2
    train_csv = pd.read_csv(p / "plots/grpo_train.csv")
    assert list(train_csv.columns) == ["step", "reward_mean", "accuracy", "loss", "kl"]
    assert train_csv["step"].tolist() == [0, 1]
    assert not list((p / "checkpoints").rglob("step-*"))

    # ---- evaluation: every model, every source, and the paired comparison
    ev = json.loads((p / "metrics/eval.json").read_text())
    for m in ("base", "sft", "grpo"):
        r = ev[m]
        assert set(r["per_source"]) == {"add_2d", "sub_2d"}
        assert all(s["n"] == 10 for s in r["per_source"].values())
        per_source_acc = [s["accuracy"] for s in r["per_source"].values()]
        assert r["accuracy"] == pytest.approx(sum(per_source_acc) / 2)  # mean over sources
        assert 0.0 <= r["accuracy"] <= 1.0 and {"pass@1", "pass@2"} <= set(r)
    d = ev["grpo_vs_sft"]
    assert d["ci95_low"] <= d["diff"] <= d["ci95_high"]
    # the paired difference of mean-over-source accuracies is the difference of the two accuracies
    assert d["diff"] == pytest.approx(ev["grpo"]["accuracy"] - ev["sft"]["accuracy"], abs=1e-12)
    md = (p / "reports/eval.md").read_text()
    assert "| grpo_vs_sft |" in md and "value [95% CI]" in md and f"`{ev['grpo']['spec_hash']}`" in md
    for m in ("base", "sft", "grpo"):  # every headline has a CI; one spec for all; samples on disk
        r = ev[m]
        assert {"accuracy", "mean@2", "pass@2", "maj@2", "format_rate", "truncation_rate", "p95_length"} <= set(r["ci95"])
        assert r["ci95"]["accuracy"][0] <= r["accuracy"] <= r["ci95"]["accuracy"][1]
        assert r["spec_hash"] == ev["base"]["spec_hash"]
        lines = (p / "reports/samples" / f"{m}.jsonl").read_text().splitlines()
        assert len(lines) == 20 * (1 + params.evaluate.n_samples)
    assert ev["gate"]["decision"] in ("promoted", "kept") and ev["gate"]["against"] == "sft"
    for png in ("eval_per_source.png", "eval_headline.png"):
        assert (p / "reports" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bars = pd.read_csv(p / "plots/eval_per_source.csv")
    assert list(bars.columns) == ["model", "source", "accuracy"] and len(bars) == 6

    check_tracking(p, params, ev)


def check_tracking(p: Path, params, ev: dict) -> None:
    """Every stage has a finished MLflow run; GRPO logged step metrics; the model is registered."""
    import mlflow
    from mlflow import MlflowClient

    from tasks.generation import sample
    from tasks.models import load_model, load_tokenizer

    uri = params.tracking.uri
    assert uri.startswith("sqlite:///") and not uri.startswith(f"sqlite:///{p}/")  # the store is outside the project
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(params.tracking.experiment)
    runs = {r.data.tags["r1flow.stage"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == set(STAGES) - {"sources"}  # the fingerprint logs no run
    assert all(r.info.status == "FINISHED" for r in runs.values())

    grpo_id = runs["grpo"].info.run_id
    for key in ("reward_mean", "loss", "kl", "response_length"):
        steps = sorted(m.step for m in client.get_metric_history(grpo_id, key))
        assert steps == [0, 1], key
    logged = runs["grpo"].data.metrics
    rewards = [f"reward/{name}" for name in params.grpo.rewards]  # each configured reward's mean
    for key in (*rewards, "reward/timeouts", "reward/errors", "entropy", "clip_frac"):
        assert key in logged, key
    sources = sorted(pd.read_parquet(p / "data/curated/rl.parquet").source.unique())
    probs = [logged[f"curriculum/p/{s}"] for s in sources]  # the sampler's view, every source
    assert sum(probs) == pytest.approx(1.0)
    assert "curriculum.png" in {a.path for a in client.list_artifacts(grpo_id)}
    assert [m.step for m in client.get_metric_history(runs["sft"].info.run_id, "loss")] == [0, 1, 2, 3, 4]
    ev_metrics = runs["evaluate"].data.metrics
    assert ev_metrics["grpo_vs_sft/diff"] == pytest.approx(ev["grpo_vs_sft"]["diff"])
    assert ev_metrics["sft/accuracy"] == pytest.approx(ev["sft"]["accuracy"])

    name = params.tracking.registered_model
    version = client.get_model_version_by_alias(name, "challenger")
    assert version.run_id == runs["evaluate"].info.run_id
    assert version.tags["gate.decision"] == ev["gate"]["decision"] and version.tags["eval.spec_hash"] == ev["grpo"]["spec_hash"]
    assert "git.commit" in version.tags and "model.digest" in version.tags

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        parts = mlflow.transformers.load_model(f"models:/{name}@challenger", return_type="components")
    finally:
        mlflow.set_tracking_uri(previous)
    model, tok = parts["model"], parts["tokenizer"]
    # the registered tokenizer is the character tokenizer, spaces and tags intact
    assert tok.decode(tok(TEXT, add_special_tokens=False).input_ids) == TEXT
    # and the registered model is the GRPO model: same greedy completion as models/grpo
    here_tok = load_tokenizer(p / "models/grpo")
    here = load_model(p / "models/grpo")
    tok.padding_side = "left"
    prompt = "12+34="
    got = sample(model, tok, [prompt], max_new_tokens=8, greedy=True)
    want = sample(here, here_tok, [prompt], max_new_tokens=8, greedy=True)
    assert got.completion_ids.shape[1] >= 1
    assert torch.equal(got.completion_ids, want.completion_ids) and got.texts == want.texts


# ----------------------------------------------------------------------------- dvc repro
def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def set_params(project: Path, **grpo) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["grpo"].update(grpo)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_runs_all_then_nothing_then_only_what_changed(tiny_project: Path, sh, subprocess_env):
    p = tiny_project
    env = {**subprocess_env, "HF_HUB_OFFLINE": "1"}  # no network here; see test_stages.py
    set_params(p, rewards={"accuracy": 1.0, "tag_count": 0.5}, group_size=4)

    t0 = time.perf_counter()
    first = sh(["dvc", "repro"], p, env=env)
    t_first = time.perf_counter() - t0
    assert ran(first.stdout) == STAGES  # every stage, in DAG order
    lock = yaml.safe_load((p / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    check_stage_outputs(p)  # every entry point's outputs, the MLflow runs and the registered model

    t0 = time.perf_counter()
    second = sh(["dvc", "repro"], p, env=env)
    t_second = time.perf_counter() - t0
    print(f"dvc repro: first (all stages) {t_first:.1f}s, second (nothing to do) {t_second:.1f}s")
    assert ran(second.stdout) == ["sources"]  # same fingerprint bytes: nothing downstream runs
    for s in STAGES[1:]:
        assert f"Stage '{s}' didn't change, skipping" in second.stdout, s
    assert yaml.safe_load((p / "dvc.lock").read_text()) == lock
    assert json.loads(sh(["dvc", "status", "--json"], p, env=env).stdout) == ALWAYS

    # float(): DVC writes the lock as YAML 1.2 ("5e-05"), which PyYAML's 1.1 resolver reads as a string
    old_lr = float(lock["stages"]["grpo"]["params"]["params.yaml"]["grpo"]["lr"])
    set_params(p, lr=old_lr * 4)
    status = json.loads(sh(["dvc", "status", "--json"], p, env=env).stdout)
    # only grpo reads the grpo section (dvc.yaml tracks it whole, so DVC names the section);
    # evaluate becomes stale only once models/grpo changes
    assert status == {**ALWAYS, "grpo": [{"changed deps": {"params.yaml": {"grpo": "modified"}}}]}

    third = sh(["dvc", "repro"], p, env=env)
    assert ran(third.stdout) == ["sources", "grpo", "evaluate"]
    for s in ("curate", "base", "sft"):
        assert f"Stage '{s}' didn't change, skipping" in third.stdout, s
    new = yaml.safe_load((p / "dvc.lock").read_text())["stages"]
    assert float(new["grpo"]["params"]["params.yaml"]["grpo"]["lr"]) == pytest.approx(old_lr * 4)
    for s in ("curate", "base", "sft"):
        assert new[s] == lock["stages"][s], s
    md5 = {o["path"]: o["md5"] for o in new["grpo"]["outs"]}
    assert md5 != {o["path"]: o["md5"] for o in lock["stages"]["grpo"]["outs"]}  # the model did change
    check_code_edits_rerun_only_their_stages(p, sh, env)


def check_code_edits_rerun_only_their_stages(p: Path, sh, env) -> None:
    """Module boundaries follow DVC's: a GRPO-only module or a GRPO default makes only grpo stale
    (evaluate follows when models/grpo changes), an SFT default only sft, tracking nothing."""

    def status() -> dict:
        return json.loads(sh(["dvc", "status", "--json"], p, env=env).stdout)

    def append(path: str, text: str) -> None:
        with open(p / path, "a") as f:
            f.write(text)

    append("tasks/tracking.py", "\n# logging only: no stage is stale\n")
    assert status() == ALWAYS
    append("tasks/grpo/loss.py", "\n# a GRPO-only edit\n")
    cfg, edits = re.subn(r"(max_sampling_rounds: int = Field\(\s*)3,", r"\g<1>4,", (p / "tasks/config/grpo.py").read_text())
    assert edits == 1  # a GRPO default changed: 3 -> 4 generation rounds
    (p / "tasks/config/grpo.py").write_text(cfg)
    assert status() == {**ALWAYS, "grpo": [{"changed deps": {"tasks/grpo": "modified", "tasks/config/grpo.py": "modified"}}]}
    out = sh(["dvc", "repro"], p, env=env).stdout
    assert ran(out)[:2] == ["sources", "grpo"] and set(ran(out)) <= {"sources", "grpo", "evaluate"}, ran(out)
    append("tasks/config/sft.py", "\n# an SFT-only edit\n")
    assert set(status()) == {"sources", "sft"}


# ----------------------------------------------------------------------------- resume
# The DUMP curriculum with the online difficulty model under it, and mu = 2 rollout reuse, so their
# state (window statistics, counts, posteriors, RNG, optimiser moments after two updates per step)
# must survive the kill too.
RESUME = ["grpo.steps=8", "grpo.save_every=2", "grpo.group_size=4", "grpo.rewards={tag_count: 1.0}",
          "grpo.sampler=dump", "grpo.online.enabled=true", "grpo.num_iterations=2"]
OUTPUTS = ("models/grpo", "metrics/grpo.json", "plots/grpo_train.csv", "plots/curriculum.csv")


def _rl_rows() -> pd.DataFrame:
    rows = [(f"a{i}", "add_2d", f"{10 + i}+{20 + i}=", str(30 + 2 * i)) for i in range(6)]
    rows += [(f"s{i}", "sub_2d", f"{50 + i}-{10 + i}=", "40") for i in range(6)]
    return pd.DataFrame(rows, columns=["id", "source", "prompt", "answer"])


def test_grpo_resumes_after_sigkill(tiny_project: Path, sh, env):
    """Uninterrupted run A; run B killed after its step-2 checkpoint, then rerun: B ends equal to A.

    The start model is the tiny random model and the reward is ``tag_count`` (a random model emits
    tags now and then), so rewards vary within groups and every step really changes the weights;
    equality with A then means model, optimiser, sampler and RNG states were all restored.
    """
    p = tiny_project
    (p / "data/curated").mkdir(parents=True)
    _rl_rows().to_parquet(p / "data/curated/rl.parquet")
    build_tiny(ModelConfig(**load_params(p / "params.yaml").model.model_dump()), p / "models/sft")
    cmd = ["python", "-m", "tasks.stages.grpo", *[a for o in RESUME for a in ("-S", o)]]

    # A: uninterrupted
    a = sh(cmd, p, env=env)
    assert "resuming" not in a.stdout
    ref = p.parent / "reference"
    ref.mkdir()
    for o in OUTPUTS:
        (p / o).rename(ref / Path(o).name)
    assert not list((p / "checkpoints").rglob("step-*"))
    start, trained = weights(p / "models/sft"), weights(ref / "grpo")
    assert any(not torch.equal(start[k], trained[k]) for k in start), "GRPO never changed the weights"

    # B: killed once its step-2 checkpoint is complete (the rename makes it appear whole)
    log = (p.parent / "killed.log").open("w")
    proc = subprocess.Popen(cmd, cwd=p, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list((p / "checkpoints/grpo").glob("*/step-000002")):
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
            pytest.fail(f"no step-2 checkpoint (rc {proc.returncode}):\n{(p.parent / 'killed.log').read_text()}")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its reward workers, as in a node crash
    assert proc.wait(timeout=30) == -signal.SIGKILL
    log.close()
    assert not any((p / o).exists() for o in OUTPUTS), "the killed run finished before the kill"
    complete = sorted(c for c in (p / "checkpoints/grpo").glob("*/step-*") if (c / "state.pt").is_file())
    newest = complete[-1]
    n = int(newest.name.removeprefix("step-"))
    assert 2 <= n < 8

    b = sh(cmd, p, env=env)
    assert f"resuming from {newest.relative_to(p)} (step {n})" in b.stdout
    assert json.loads((p / "metrics/grpo.json").read_text())["steps"] == 8
    hist = pd.read_csv(p / "plots/grpo_train.csv")
    assert hist["step"].tolist() == list(range(8))  # steps before the kill come from the checkpoint
    pd.testing.assert_frame_equal(hist, pd.read_csv(ref / "grpo_train.csv"), check_exact=True)
    # the curriculum's probabilities at every step, the ones after the resume included, are A's
    curriculum = pd.read_csv(p / "plots/curriculum.csv")
    pd.testing.assert_frame_equal(curriculum, pd.read_csv(ref / "curriculum.csv"), check_exact=True)
    assert curriculum.groupby("step").probability.sum().round(9).eq(1).all()
    assert curriculum[curriculum.step == 7].probability.nunique() > 1  # DUMP moved off uniform
    resumed = weights(p / "models/grpo")
    assert all(torch.equal(resumed[k], trained[k]) for k in trained), "resumed run differs from run A"
    assert not list((p / "checkpoints").rglob("step-*"))


# ----------------------------------------------------------------------------- bad input
def test_bad_param_exits_2(tiny_project: Path, sh, env):
    proc = sh(["python", "-m", "tasks.stages.grpo", "-S", "grpo.lr=-1"], tiny_project, env=env, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "grpo.lr" in proc.stderr and "greater than 0" in proc.stderr
    assert not (tiny_project / "models/grpo").exists() and not (tiny_project / "metrics").exists()
