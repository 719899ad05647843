"""Shared fixtures: a tiny copy of the project to run the real DAG on, and a subprocess env.

``tiny_project`` copies the tracked sources into a temporary git + DVC repo and writes a
``params.yaml`` small enough that the whole DAG runs in seconds on 2 CPU cores; it commits that
state so ``dvc exp run`` (which needs a HEAD) works. The MLflow store lives beside the project,
not inside it, so runs never dirty the project tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.config import load_params

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
SOURCES = ("tasks", "flows", "dvc.yaml", "params.yaml", "prefect.yaml", "pyproject.toml", ".gitignore", ".dvcignore")

# Settings that make every stage take seconds; the rest comes from params.yaml / the config defaults.
TINY: dict[str, Any] = {
    "curate": {
        "sources": [
            {"kind": "synthetic", "families": ["add_2d", "sub_2d"], "sft_per_family": 20,
             "rl_per_family": 50, "eval_per_family": 10},
        ],
    },
    "model": {
        "name_or_path": "tiny",
        "tiny": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                 "num_key_value_heads": 2, "intermediate_size": 64},
    },
    "sft": {"steps": 5, "batch_size": 8, "warmup_steps": 1, "log_every": 1},
    "grpo": {"steps": 2, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 16,
             "save_every": 1, "reward_workers": 1, "warmup_steps": 1, "log_every": 1},
    "evaluate": {"n_samples": 2, "ks": [1, 2], "max_new_tokens": 16, "bootstrap_samples": 200},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merge; anything else (lists included) is replaced by ``over``."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    for k in ("R1FLOW_PARENT_RUN_ID", "R1FLOW_PREFECT_RUN_URL"):  # no run from outside the test
        env.pop(k, None)
    return env


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """os.environ with the project's .venv/bin first on PATH (so `python`, `dvc` are the venv's)."""
    return _env()


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output when ``check`` and it exits non-zero."""
    proc = subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def sh():
    """``sh(cmd, cwd, env=None, check=True)``: run a command with the venv env (test modules are not a package)."""
    return run


def init_repo(path: Path) -> None:
    """git init + dvc init with a local identity, and commit what is there (dvc exp needs HEAD)."""
    run(["git", "init", "-q", "-b", "main"], path)
    run(["git", "config", "user.name", "r1flow tests"], path)
    run(["git", "config", "user.email", "tests@r1flow.invalid"], path)
    run(["dvc", "init", "-q"], path)
    run(["dvc", "config", "core.analytics", "false"], path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-q", "-m", "tiny project"], path)


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    """A committed git + DVC copy of the project with tiny params; returns its root."""
    return make_tiny_project(tmp_path)


@pytest.fixture(scope="module")
def tiny_project_module(tmp_path_factory) -> Path:
    """``tiny_project`` shared by a module's tests (e2e modules that serve one project)."""
    return make_tiny_project(tmp_path_factory.mktemp("e2e"))


def make_tiny_project(tmp_path: Path) -> Path:
    """Copy the tracked sources under ``tmp_path/project`` with tiny params, git + DVC, committed."""
    project = tmp_path / "project"
    project.mkdir()
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, project / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.is_file():
            shutil.copy2(src, project / name)
    base = yaml.safe_load((ROOT / "params.yaml").read_text()) if (ROOT / "params.yaml").is_file() else {}
    params = _merge(base or {}, TINY)
    params["tracking"] = {**params.get("tracking", {}), "uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    load_params(project / "params.yaml")  # the tiny file must be valid before anything runs
    init_repo(project)
    return project


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for the session (starting it costs ~20 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: they run on a GPU machine (`make test-gpu`) and skip elsewhere (CI)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; run `make test-gpu` on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module: the tiny test models are all per-op overhead, and a
    second thread only adds synchronisation (modules opt in with ``pytest.mark.usefixtures``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
