"""Data versions with real DVC on a tiny copy of the project:

- the ``sources`` stage makes source data DVC-visible: an edited data file re-runs curate, an
  unchanged one skips it;
- the shipped default remote (``.dvc/config``: a directory beside the checkout) round-trips the
  curated data and the base model: ``dvc push``, wipe outputs and cache, ``dvc pull``, same bytes.

One test, one project: each ``dvc repro`` costs seconds of imports on 2 cores."""

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"


def digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.md5()
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def check_round_trip(sh, project: Path) -> None:
    shutil.copy2(ROOT / ".dvc" / "config", project / ".dvc" / "config")  # the shipped remote
    sh(["dvc", "config", "core.analytics", "false"], project)
    remote = (project / ".dvc" / "../../r1flow-dvc-remote").resolve()
    assert remote.parent == project.parent  # outside the work tree
    sh(["dvc", "repro", "base"], project)
    outs = [
        project / "data/curated/rl.parquet",
        project / "data/curated/sft.parquet",
        project / "models/base",
    ]
    before = {p: digest(p) for p in outs}
    pushed = sh(["dvc", "push", "base", "curate"], project).stdout
    assert "pushed" in pushed and any(remote.rglob("*")), pushed
    for p in outs:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    shutil.rmtree(project / ".dvc" / "cache")
    sh(["dvc", "pull", "base", "curate"], project)
    assert {p: digest(p) for p in outs} == before


@pytest.mark.slow
def test_source_edits_rerun_curate_unchanged_skips_and_the_remote_round_trips(tiny_project: Path, sh):
    assert REAL.is_file(), f"the real GSM8K split is expected beside the checkout at {REAL}"
    data = tiny_project / "raw" / "gsm.jsonl"
    data.parent.mkdir()
    lines = REAL.read_text().splitlines()
    data.write_text("\n".join(lines[:60]) + "\n")
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["curate"]["sources"].append({"kind": "gsm8k", "path": "raw/gsm.jsonl", "eval_fraction": 0.2})
    params["curate"]["verify"] = {"math": False}  # the gate of this test is DVC, not math-verify
    params["curate"]["data_docs"] = False
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    first = sh(["dvc", "repro", "curate"], tiny_project).stdout
    assert "Running stage 'sources'" in first and "Running stage 'curate'" in first, first
    fp = (tiny_project / "data" / "sources.json").read_text()
    rl = (tiny_project / "data" / "curated" / "rl.parquet").read_bytes()

    second = sh(["dvc", "repro", "curate"], tiny_project).stdout  # same bytes from sources: curate skips
    assert "Running stage 'sources'" in second, second
    assert "Stage 'curate' didn't change, skipping" in second, second
    assert (tiny_project / "data" / "sources.json").read_text() == fp

    data.write_text("\n".join(lines[:60] + lines[100:140]) + "\n")  # 40 more rows in the same file
    third = sh(["dvc", "repro", "curate"], tiny_project).stdout
    assert "Running stage 'curate'" in third, third
    assert (tiny_project / "data" / "sources.json").read_text() != fp
    assert (tiny_project / "data" / "curated" / "rl.parquet").read_bytes() != rl

    check_round_trip(sh, tiny_project)
    assert "Stage 'curate' didn't change" in sh(["dvc", "repro", "curate"], tiny_project).stdout
