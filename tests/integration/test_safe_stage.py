"""The real entry points refuse a bad output folder before deleting, and `dvc repro` finds the
project's interpreter without an activated venv (tasks/stage.sh)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
VENV_BIN = Path(sys.executable).parent


def _bare_env(**extra: str) -> dict[str, str]:
    """A shell's environment with no venv on PATH (what a user who never ran `activate` has)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "R1FLOW_PYTHON", "PYTHONPATH")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env.update(extra)
    return env


def test_stage_refuses_a_folder_holding_source_and_deletes_nothing(tiny_project: Path, sh):
    before = sorted(p.name for p in (tiny_project / "tasks").iterdir())
    proc = sh(
        [str(VENV_BIN / "python"), "-m", "tasks.stages.base", "-S", "model.out_dir=tasks"], tiny_project, check=False
    )
    assert proc.returncode == 2
    assert "model.out_dir" in proc.stderr and "which this stage does not write" in proc.stderr
    assert sorted(p.name for p in (tiny_project / "tasks").iterdir()) == before


def test_dvc_repro_without_an_activated_venv(tiny_project: Path, sh):
    (tiny_project / ".venv").symlink_to(VENV_BIN.parent.resolve(), target_is_directory=True)
    proc = sh([str(VENV_BIN / "dvc"), "repro", "base"], tiny_project, env=_bare_env())
    assert "Running stage 'base'" in proc.stdout
    assert (tiny_project / "models" / "base" / "config.json").is_file()


def test_no_interpreter_says_what_to_do(tiny_project: Path, sh):
    # no .venv in this copy and nothing with torch on PATH: the wrapper stops with directions
    proc = sh(["sh", "tasks/stage.sh", "tasks.stages.base"], tiny_project, env=_bare_env(), check=False)
    assert proc.returncode == 127
    assert "no Python with the project's packages" in proc.stderr and "make setup" in proc.stderr
    assert not (tiny_project / "models").exists()
