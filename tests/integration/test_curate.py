"""The curate stage end to end: ``python -m tasks.stages.curate`` in a scratch directory, plus the GX gate."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import GateBounds
from tasks.tracking import md5

# The real GSM8K split lies in shared/ beside the checkout (as laid out for sessions and CI).
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k" / "train.jsonl"
OUTPUTS = ["data/curated/sft.parquet", "data/curated/rl.parquet", "data/curated/eval.parquet", "data/curated/card.md", "metrics/curate.json"]
BAD_ROWS = ['{"question": "no answer"}', "{broken json", '{"question": "q?", "answer": "#### many"}']


def params_text(tmp: Path, sources: str, extra: str = "") -> str:
    return (
        f"curate:\n  seed: 3\n  sources:\n{sources}{extra}"
        f"tracking:\n  uri: sqlite:///{tmp}/mlflow.db\n  experiment: test\n"
    )


SYNTH = "    - {kind: synthetic, families: [add_2d, sub_2d, mul_2x2], sft_per_family: 5, rl_per_family: 40, eval_per_family: 10}\n"


def start(cwd: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "R1FLOW_PARENT_RUN_ID"}
    return subprocess.Popen([sys.executable, "-m", "tasks.stages.curate", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(p: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = p.communicate(timeout=180)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def written(cwd: Path) -> list[str]:
    return [o for o in OUTPUTS if (cwd / o).exists()] + [d for d in ("data", "metrics") if (cwd / d).exists()]


@pytest.fixture(scope="module")
def mixed_runs(tmp_path_factory):
    """The synthetic + GSM8K mix, run twice with the same params: once as the DVC stage command (a
    subprocess) and, meanwhile, once in this process through ``main`` (a different hash seed)."""
    assert REAL.is_file(), f"the real GSM8K split is expected beside the checkout at {REAL}"
    lines = REAL.read_text().splitlines()[:497]
    dirs = []
    for name in ("a", "b"):
        d = tmp_path_factory.mktemp(f"curate_{name}")
        (d / "gsm.jsonl").write_text("\n".join(BAD_ROWS + lines) + "\n")  # 3 bad + 497 good = limit
        gsm = "    - {kind: gsm8k, path: gsm.jsonl, limit: 500, sft_fraction: 0.1, eval_fraction: 0.1}\n"
        (d / "params.yaml").write_text(params_text(d, SYNTH + gsm))
        dirs.append(d)
    proc = start(dirs[0])
    from tasks.stages.curate import main

    cwd = os.getcwd()
    try:
        os.chdir(dirs[1])
        rc = main(["--params", "params.yaml"])
    finally:
        os.chdir(cwd)
    return [(dirs[0], finish(proc)), (dirs[1], subprocess.CompletedProcess([], rc, "", ""))]


def test_mixed_run_writes_every_output(mixed_runs):
    for d, r in mixed_runs:
        assert r.returncode == 0, r.stderr
        assert written(d)[: len(OUTPUTS)] == OUTPUTS


def test_outputs_are_byte_identical_across_runs(mixed_runs):
    (a, _), (b, _) = mixed_runs
    for o in OUTPUTS:
        assert (a / o).read_bytes() == (b / o).read_bytes(), o


def test_splits_schema_and_counts(mixed_runs):
    d, _ = mixed_runs[0]
    df = {s: pd.read_parquet(d / f"data/curated/{s}.parquet") for s in ("sft", "rl", "eval")}
    for frame in df.values():
        assert list(frame.columns) == ["id", "source", "prompt", "answer", "difficulty", "solution"]
    synth = ["add_2d", "mul_2x2", "sub_2d"]
    assert (df["sft"].source.value_counts()[synth] == 5).all()
    assert (df["eval"].source.value_counts()[synth] == 10).all()
    assert (df["rl"].source.value_counts()[synth] == 40).all()
    assert df["rl"].solution.isna().all() and df["sft"].solution.notna().all()
    assert (df["rl"][df["rl"].source == "gsm8k"].difficulty == -1).all()
    metrics = json.loads((d / "metrics/curate.json").read_text())
    assert metrics["filters"]["bad_rows"] == {"gsm8k": 3, "synthetic": 0}
    gsm_total = sum(metrics["counts"][s].get("gsm8k", 0) for s in ("sft", "rl", "eval"))
    removed = sum(metrics["filters"][f][s] for f in ("dedup", "decontam") for s in ("sft", "rl", "eval"))
    assert gsm_total + removed == 497  # every good row is accounted for
    for s in ("sft", "rl", "eval"):
        assert metrics["rows"][s] == len(df[s])
        assert metrics["counts"][s] == df[s].source.value_counts().sort_index().to_dict()
    # rl is shuffled: sources are interleaved, not in blocks
    assert df["rl"].source.iloc[:40].nunique() > 1


def test_no_eval_prompt_in_training_splits(mixed_runs):
    d, _ = mixed_runs[0]
    eval_prompts = set(pd.read_parquet(d / "data/curated/eval.parquet").prompt)
    for s in ("sft", "rl"):
        assert not eval_prompts & set(pd.read_parquet(d / f"data/curated/{s}.parquet").prompt)


def test_card_and_mlflow_run(mixed_runs):
    from mlflow.tracking import MlflowClient

    d, _ = mixed_runs[0]
    card = (d / "data/curated/card.md").read_text()
    assert "seed 3" in card and "| gsm8k |" in card and "synthetic: 0" in card
    client = MlflowClient(tracking_uri=f"sqlite:///{d}/mlflow.db")
    exp = client.get_experiment_by_name("test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["r1flow.stage"] == "curate" and run.info.status == "FINISHED"
    assert run.data.metrics["rows.sft"] == len(pd.read_parquet(d / "data/curated/sft.parquet"))
    assert run.data.metrics["filter.bad_rows.gsm8k"] == 3
    assert run.data.tags["input.rl.parquet.md5"] == md5(d / "data/curated/rl.parquet")
    assert run.data.params["seed"] == "3"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"card.md", "validation.txt"}


def test_bad_params_exit_2_and_write_nothing(tmp_path):
    (tmp_path / "params.yaml").write_text(params_text(tmp_path, SYNTH, "  limits: {max_prompt_chars: 0}\n"))
    r = finish(start(tmp_path))
    assert r.returncode == 2
    assert "curate.limits.max_prompt_chars" in r.stderr and "greater than or equal to 1" in r.stderr
    r = finish(start(tmp_path, "-S", "curate.seeed=1"))
    assert r.returncode == 2 and "curate.seeed" in r.stderr
    assert written(tmp_path) == [] and not (tmp_path / "mlflow.db").exists()


def test_gate_failure_exits_1_with_report_and_writes_nothing(tmp_path):
    (tmp_path / "params.yaml").write_text(params_text(tmp_path, SYNTH))
    r = finish(start(tmp_path, "-S", "curate.limits.max_answer_chars=1"))
    assert r.returncode == 1
    assert "data validation failed" in r.stderr
    # add_2d answers are 2-3 chars: every split fails the answer-length expectation, and says so
    for split, n in (("sft", 15), ("rl", 120), ("eval", 30)):
        assert f"split {split!r} ({n} rows): 1 of" in r.stderr
    assert "expect_column_value_lengths_to_be_between on column 'answer'" in r.stderr
    assert "max_value=1" in r.stderr
    assert written(tmp_path) == [] and not (tmp_path / "mlflow.db").exists()


# ----------------------------------------------------------------------------- the gate, in process
def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["id", "source", "prompt", "answer", "difficulty", "solution"])


GOOD = {"id": "a-1", "source": "a", "prompt": "12+3=", "answer": "15", "difficulty": 1,
        "solution": "<think>2+3+0=5\n1+0+0=1</think><answer>15</answer>"}


def test_gate_passes_clean_splits():
    from tasks.data.validate import validate_split

    df = frame([GOOD, {**GOOD, "id": "a-2", "prompt": "12+4=", "answer": "16"}])
    assert validate_split(df, "sft", GateBounds(), {"a"}).success
    assert validate_split(frame([{**GOOD, "solution": None}]), "rl", GateBounds(), {"a"}).evaluated == 9
    assert validate_split(frame([]), "eval", GateBounds(), {"a"}).success


def test_gate_reports_each_failed_expectation():
    from tasks.data.validate import DataValidationError, validate_split

    rows = [
        GOOD,
        {**GOOD, "source": "zzz"},  # duplicate id, unknown source
        {**GOOD, "id": "a-3", "prompt": "1=", "answer": None, "solution": "no tags"},
    ]
    with pytest.raises(DataValidationError) as e:
        validate_split(frame(rows), "sft", GateBounds(max_prompt_chars=10), {"a"})
    msg = str(e.value)
    assert "split 'sft' (3 rows): 5 of 11 expectations failed" in msg
    assert "expect_column_values_to_be_unique on column 'id': 2 of 3 rows; e.g. 'a-1', 'a-1'" in msg
    assert "expect_column_values_to_be_in_set on column 'source': 1 of 3 rows; e.g. 'zzz'" in msg
    assert "expect_column_value_lengths_to_be_between on column 'prompt': 1 of 3 rows; e.g. '1='" in msg
    assert "expect_column_values_to_not_be_null on column 'answer': 1 of 3 rows" in msg
    assert "expect_column_values_to_match_regex on column 'solution': 1 of 3 rows; e.g. 'no tags'" in msg
    # the sft-only expectations do not apply to rl
    with pytest.raises(DataValidationError) as e:
        validate_split(frame(rows), "rl", GateBounds(max_prompt_chars=10), {"a"})
    assert "4 of 9 expectations failed" in str(e.value) and "solution" not in str(e.value)


def test_gate_checks_the_schema():
    from tasks.data.validate import DataValidationError, validate_split

    with pytest.raises(DataValidationError, match="expect_table_columns_to_match_set"):
        validate_split(frame([GOOD]).drop(columns=["difficulty"]), "eval", GateBounds(), {"a"})
