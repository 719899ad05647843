"""The default DVC remote (``.dvc/config``: a directory beside the checkout) round-trips the curated
data and the base model: ``dvc push``, wipe outputs and cache, ``dvc pull``, same bytes."""

import hashlib
import shutil
from pathlib import Path

import pytest

from tasks.config import load_params

ROOT = Path(__file__).resolve().parents[2]


def digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.md5()
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_push_pull_round_trip_with_the_default_remote(tiny_project: Path, sh):
    shutil.copy2(ROOT / ".dvc" / "config", tiny_project / ".dvc" / "config")  # the shipped remote
    sh(["dvc", "config", "core.analytics", "false"], tiny_project)
    remote = (tiny_project / ".dvc" / "../../r1flow-dvc-remote").resolve()
    assert remote.parent == tiny_project.parent  # outside the work tree
    load_params(tiny_project / "params.yaml")
    sh(["dvc", "repro", "base", "curate"], tiny_project)
    outs = [
        tiny_project / "data/curated/rl.parquet",
        tiny_project / "data/curated/sft.parquet",
        tiny_project / "models/base",
    ]
    before = {p: digest(p) for p in outs}
    pushed = sh(["dvc", "push"], tiny_project).stdout
    assert "pushed" in pushed and any(remote.rglob("*")), pushed
    for p in outs:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    shutil.rmtree(tiny_project / ".dvc" / "cache")
    pulled = sh(["dvc", "pull"], tiny_project).stdout
    assert {p: digest(p) for p in outs} == before, pulled
    assert "Stage 'curate' didn't change" in sh(["dvc", "repro", "curate"], tiny_project).stdout
