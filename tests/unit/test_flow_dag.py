"""The flow takes its stage order and each stage's status from DVC itself (flows/dag.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from flows.dag import DagError, stage_order, stage_status
from flows.pipeline import STAGES, run_stage

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dvc_dir(tmp_path_factory) -> Path:
    """One DVC repo (no git) whose dvc.yaml each test rewrites: `dvc init` costs seconds."""
    from dvc.repo import Repo

    path = tmp_path_factory.mktemp("dag")
    Repo.init(str(path), no_scm=True)
    return path


def copy_dag(root: Path) -> None:
    """The project's dvc.yaml and the params.yaml its ``${model.watch}`` reads (deps need not exist)."""
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, root / name)
    (root / "dvc.lock").unlink(missing_ok=True)


def _write(root: Path, stages: dict) -> Path:
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    (root / "dvc.lock").unlink(missing_ok=True)
    return root


def test_stage_order_is_the_stated_pipeline(dvc_dir):
    copy_dag(dvc_dir)
    assert stage_order(dvc_dir) == list(STAGES)


def test_stage_order_agrees_with_dvc_cli(dvc_dir, sh):
    copy_dag(dvc_dir)
    dot = sh(["dvc", "dag", "--dot"], dvc_dir).stdout
    edges = re.findall(r'"([^"]+)" -> "([^"]+)"', dot)
    order = stage_order(dvc_dir)
    assert sorted(order) == sorted(sh(["dvc", "stage", "list", "--name-only"], dvc_dir).stdout.split())
    assert ("curate", "sft") in edges and ("sft", "grpo") in edges and ("grpo", "evaluate") in edges
    for before, after in edges:
        assert order.index(before) < order.index(after), f"{before} must run before {after}"


def test_order_follows_deps_not_file_order(dvc_dir):
    # c needs b's out, b needs a directory that contains a's out; written in reverse order.
    _write(
        dvc_dir,
        {
            "c": {"cmd": "x", "deps": ["out/b.txt"]},
            "b": {"cmd": "x", "deps": ["data"], "outs": [{"out/b.txt": {"cache": False}}]},
            "a": {"cmd": "x", "outs": ["data/a.txt"]},
            "z": {"cmd": "x"},
        },
    )
    assert stage_order(dvc_dir) == ["a", "b", "c", "z"]


def test_cycle_is_a_clear_error(dvc_dir):
    _write(
        dvc_dir,
        {
            "a": {"cmd": "x", "deps": ["b.txt"], "outs": ["a.txt"]},
            "b": {"cmd": "x", "deps": ["a.txt"], "outs": ["b.txt"]},
        },
    )
    with pytest.raises(DagError, match="both a dependency and an output"):  # DVC's own words for a cycle
        stage_order(dvc_dir)


def test_missing_dvc_yaml(tmp_path):
    with pytest.raises(DagError, match="dvc.yaml: file not found"):
        stage_order(tmp_path)


def test_status_is_dvcs_and_an_unknown_stage_is_refused(dvc_dir, sh):
    _write(dvc_dir, {"a": {"cmd": "echo a > a.txt", "outs": ["a.txt"]}})
    assert stage_status(dvc_dir, "a") != {}  # never ran
    sh(["dvc", "repro", "a"], dvc_dir)
    assert stage_status(dvc_dir, "a") == {}
    (dvc_dir / "a.txt").write_text("tampered\n")
    assert "a" in stage_status(dvc_dir, "a")
    with pytest.raises(DagError, match=r"unknown stage 'nope'; dvc.yaml has \['a'\]"):
        run_stage.fn("nope", str(dvc_dir))
