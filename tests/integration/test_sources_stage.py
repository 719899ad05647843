"""The ``sources`` stage makes source data DVC-visible: an edited data file re-runs curate, an
unchanged one skips it (real DVC on a tiny copy of the project, ``dvc repro curate`` three times)."""

from pathlib import Path

import pytest
import yaml

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k" / "train.jsonl"


def repro(sh, project: Path) -> str:
    return sh(["dvc", "repro", "curate"], project).stdout


@pytest.mark.slow
def test_editing_a_local_source_reruns_curate_and_unchanged_skips(tiny_project: Path, sh):
    assert REAL.is_file(), f"the real GSM8K split is expected beside the checkout at {REAL}"
    data = tiny_project / "raw" / "gsm.jsonl"
    data.parent.mkdir()
    lines = REAL.read_text().splitlines()
    data.write_text("\n".join(lines[:60]) + "\n")
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["curate"]["sources"].append({"kind": "gsm8k", "path": "raw/gsm.jsonl", "eval_fraction": 0.2})
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    first = repro(sh, tiny_project)
    assert "Running stage 'sources'" in first and "Running stage 'curate'" in first, first
    fp = (tiny_project / "data" / "sources.json").read_text()
    rl = (tiny_project / "data" / "curated" / "rl.parquet").read_bytes()

    second = repro(sh, tiny_project)  # sources always runs, writes the same bytes, so curate skips
    assert "Running stage 'sources'" in second, second
    assert "Stage 'curate' didn't change, skipping" in second, second
    assert (tiny_project / "data" / "sources.json").read_text() == fp

    data.write_text("\n".join(lines[:60] + lines[100:140]) + "\n")  # 40 more rows in the same file
    third = repro(sh, tiny_project)
    assert "Running stage 'curate'" in third, third
    assert (tiny_project / "data" / "sources.json").read_text() != fp
    assert (tiny_project / "data" / "curated" / "rl.parquet").read_bytes() != rl
