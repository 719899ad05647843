"""``dvc repro`` of the real DAG on tiny settings: everything runs once, then nothing, then only
what a changed parameter touches.

GRPO's reward here includes ``tag_count``: with only ``accuracy`` and ``format`` the tiny, barely
trained policy earns 0 everywhere, every advantage is 0, no weight moves whatever ``grpo.lr`` is,
``models/grpo`` comes out byte-identical, and DVC would rightly skip ``evaluate``. A random model
emits tags now and then, so ``tag_count`` gives the groups some reward variance and a changed
learning rate really changes the model.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

STAGES = ["curate", "base", "sft", "grpo", "evaluate"]


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
    for out in ("models/grpo", "metrics/eval.json", "reports/eval.md", "plots/grpo_train.csv"):
        assert (p / out).exists(), out

    t0 = time.perf_counter()
    second = sh(["dvc", "repro"], p, env=env)
    t_second = time.perf_counter() - t0
    print(f"dvc repro: first (all stages) {t_first:.1f}s, second (nothing to do) {t_second:.1f}s")
    assert ran(second.stdout) == []
    for s in STAGES:
        assert f"Stage '{s}' didn't change, skipping" in second.stdout, s
    assert yaml.safe_load((p / "dvc.lock").read_text()) == lock
    assert json.loads(sh(["dvc", "status", "--json"], p, env=env).stdout) == {}

    # float(): DVC writes the lock as YAML 1.2 ("5e-05"), which PyYAML's 1.1 resolver reads as a string
    old_lr = float(lock["stages"]["grpo"]["params"]["params.yaml"]["grpo"]["lr"])
    set_params(p, lr=old_lr * 4)
    status = json.loads(sh(["dvc", "status", "--json"], p, env=env).stdout)
    # only grpo reads the grpo section (dvc.yaml tracks it whole, so DVC names the section);
    # evaluate becomes stale only once models/grpo changes
    assert status == {"grpo": [{"changed deps": {"params.yaml": {"grpo": "modified"}}}]}

    third = sh(["dvc", "repro"], p, env=env)
    assert ran(third.stdout) == ["grpo", "evaluate"]
    for s in ("curate", "base", "sft"):
        assert f"Stage '{s}' didn't change, skipping" in third.stdout, s
    new = yaml.safe_load((p / "dvc.lock").read_text())["stages"]
    assert float(new["grpo"]["params"]["params.yaml"]["grpo"]["lr"]) == pytest.approx(old_lr * 4)
    for s in ("curate", "base", "sft"):
        assert new[s] == lock["stages"][s], s
    md5 = {o["path"]: o["md5"] for o in new["grpo"]["outs"]}
    assert md5 != {o["path"]: o["md5"] for o in lock["stages"]["grpo"]["outs"]}  # the model did change
