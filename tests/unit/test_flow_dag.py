"""The flow's stage order is dvc.yaml's DAG, checked against DVC's own view of it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from flows.pipeline import STAGES, DagError, run_stage, stage_order, stage_statuses

ROOT = Path(__file__).resolve().parents[2]


def _write(path: Path, stages: dict) -> Path:
    path.write_text(yaml.safe_dump({"stages": stages}))
    return path


def test_stage_order_is_the_stated_pipeline():
    assert stage_order(ROOT / "dvc.yaml") == list(STAGES)


def test_stage_order_agrees_with_dvc_cli(tmp_path: Path, sh):
    # `dvc dag` needs a DVC repo; a bare copy of dvc.yaml is enough (deps need not exist).
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    sh(["dvc", "init", "--no-scm", "-q"], tmp_path)
    names = sh(["dvc", "stage", "list", "--name-only"], tmp_path).stdout.split()
    dot = sh(["dvc", "dag", "--dot"], tmp_path).stdout
    edges = re.findall(r'"([^"]+)" -> "([^"]+)"', dot)

    order = stage_order(tmp_path / "dvc.yaml")
    assert sorted(order) == sorted(names)
    assert edges, "dvc dag reported no edges"
    for before, after in edges:
        assert order.index(before) < order.index(after), f"{before} must run before {after}"
    # Every edge we infer is one DVC infers too (no invented ordering constraints beyond file order).
    assert ("curate", "sft") in edges and ("sft", "grpo") in edges and ("grpo", "evaluate") in edges


def test_order_follows_deps_not_file_order(tmp_path: Path):
    # c needs b's out, b needs a directory that contains a's out; written in reverse order.
    path = _write(tmp_path / "dvc.yaml", {
        "c": {"cmd": "x", "deps": ["out/b.txt"]},
        "b": {"cmd": "x", "deps": ["data"], "outs": [{"out/b.txt": {"cache": False}}]},
        "a": {"cmd": "x", "outs": ["data/a.txt"]},
        "z": {"cmd": "x"},
    })
    assert stage_order(path) == ["a", "b", "c", "z"]


def test_cycle_is_a_clear_error(tmp_path: Path):
    path = _write(tmp_path / "dvc.yaml", {
        "a": {"cmd": "x", "deps": ["b.txt"], "outs": ["a.txt"]},
        "b": {"cmd": "x", "deps": ["a.txt"], "outs": ["b.txt"]},
        "c": {"cmd": "x", "outs": ["c.txt"]},
    })
    with pytest.raises(DagError, match=r"dependency cycle among stages \['a', 'b'\]"):
        stage_order(path)


def test_missing_or_empty_dvc_yaml(tmp_path: Path):
    with pytest.raises(DagError, match="file not found"):
        stage_order(tmp_path / "nope.yaml")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(DagError, match="no 'stages' mapping"):
        stage_order(tmp_path / "dvc.yaml")
    _write(tmp_path / "dvc.yaml", {"a": {"deps": ["x"]}})
    with pytest.raises(DagError, match="stage 'a' has no cmd"):
        stage_order(tmp_path / "dvc.yaml")


def test_unknown_stage_is_refused_before_dvc_runs(tmp_path: Path):
    _write(tmp_path / "dvc.yaml", {"a": {"cmd": "echo a > a.txt", "outs": ["a.txt"]}})
    with pytest.raises(DagError, match=r"unknown stage 'nope'; dvc.yaml has \['a'\]"):
        run_stage.fn("nope", str(tmp_path))


def test_stage_statuses_parse_dvc_output():
    lines = [
        "Stage 'curate' didn't change, skipping",
        "Stage 'base' is cached - skipping run, checking out outputs",
        "Running stage 'sft':",
        "> python -m tasks.stages.sft",
    ]
    assert stage_statuses(lines) == {"curate": "skipped", "base": "skipped", "sft": "ran"}
