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
OUTPUTS = ["data/curated/sft.parquet", "data/curated/rl.parquet", "data/curated/eval.parquet", "data/curated/card.md",
           "data/curated/report.json", "metrics/curate.json"]
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
    removed = sum(metrics["filters"][f][s] for f in ("dedup", "near_dup", "decontam") for s in ("sft", "rl", "eval"))
    removed += sum(metrics["filters"][f].get("gsm8k", 0) for f in ("length", "unverifiable"))
    assert gsm_total + removed == 497  # every good row is accounted for
    assert metrics["by_source"]["near_dup"].get("gsm8k", 0) == sum(metrics["filters"]["near_dup"].values())
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
    assert "seed 3" in card and "| gsm8k | 3 |" in card  # the per-source filter table starts with bad rows
    client = MlflowClient(tracking_uri=f"sqlite:///{d}/mlflow.db")
    exp = client.get_experiment_by_name("test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["r1flow.stage"] == "curate" and run.info.status == "FINISHED"
    assert run.data.metrics["rows.sft"] == len(pd.read_parquet(d / "data/curated/sft.parquet"))
    assert run.data.metrics["filter.bad_rows.gsm8k"] == 3
    assert run.data.tags["input.rl.parquet.md5"] == md5(d / "data/curated/rl.parquet")
    # the same md5 (DVC's digest) as an MLflow dataset input, one per curated split
    inputs = {i.dataset.name: i.dataset for i in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["eval.parquet", "rl.parquet", "sft.parquet"]
    for name, ds in inputs.items():
        assert ds.digest == md5(d / "data/curated" / name)
        assert json.loads(ds.profile)["num_rows"] == len(pd.read_parquet(d / "data/curated" / name))
    assert run.data.params["seed"] == "3"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"card.md", "validation.txt", "report.json"}
    docs = {a.path for a in client.list_artifacts(run.info.run_id, "data_docs")}
    assert "data_docs/index.html" in docs and "data_docs/validations" in docs
    report = json.loads((d / "data/curated/report.json").read_text())
    assert [x["where"].rsplit(":", 1)[1] for x in report["drops"][:3]] == ["1", "2", "3"]  # file and line
    assert "## Dropped rows (3" in card and "malformed JSON" in card


def test_bad_params_exit_2_and_write_nothing(tmp_path):
    (tmp_path / "params.yaml").write_text(params_text(tmp_path, SYNTH, "  limits: {max_prompt_chars: 0}\n"))
    r = finish(start(tmp_path))
    assert r.returncode == 2
    assert "curate.limits.max_prompt_chars" in r.stderr and "greater than or equal to 1" in r.stderr
    r = finish(start(tmp_path, "-S", "curate.seeed=1"))
    assert r.returncode == 2 and "curate.seeed" in r.stderr
    assert written(tmp_path) == [] and not (tmp_path / "mlflow.db").exists()


def test_filtered_away_split_exits_1_and_writes_nothing(tmp_path):
    """Rows over a limit are dropped and counted; a split left with nothing stops the stage."""
    (tmp_path / "params.yaml").write_text(params_text(tmp_path, SYNTH))
    r = finish(start(tmp_path, "-S", "curate.limits.max_prompt_chars=4"))
    assert r.returncode == 1
    assert "data validation failed" in r.stderr
    # every synthetic prompt ("12+34=") is over 4 chars: every row of every split is over the limit
    for split, n in (("sft", 15), ("rl", 120), ("eval", 30)):
        assert f"split {split!r}: all {n} rows were removed by the filters" in r.stderr
    assert "prompt too long (" in r.stderr and "chars > 4)" in r.stderr
    assert written(tmp_path) == [] and not (tmp_path / "mlflow.db").exists()


def test_missing_source_file_exits_1_naming_it(tmp_path):
    gsm = "    - {kind: gsm8k, path: nowhere.jsonl}\n"
    (tmp_path / "params.yaml").write_text(params_text(tmp_path, SYNTH + gsm))
    r = finish(start(tmp_path))
    assert r.returncode == 1 and "nowhere.jsonl: file not found" in r.stderr
    assert written(tmp_path) == []


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


def test_nothing_malformed_reaches_the_parquet_outputs(tmp_path):
    """Every kind of bad line in one file: the stage succeeds, each is dropped with its line, and the
    parquet files hold exactly the good rows."""
    from tasks.stages.curate import main

    good = [json.dumps({"question": f"How many pens does shop {i} sell in a week?", "answer": f"Sum.\n#### {i}"})
            for i in range(30)]
    bad = [b'{"question": "caf\xe9?", "answer": "#### 1"}', b'{"question": "a \\ud800 b?", "answer": "#### 1"}',
           b'{"question": "cut', b'{"question": null, "answer": "#### 1"}', b'{"question": 7, "answer": "#### 1"}',
           b'{"question": " ", "answer": "#### 1"}', json.dumps({"question": "n\x00ul?", "answer": "#### 1"}).encode(),
           json.dumps({"question": "big " * 1_300_000, "answer": "#### 1"}).encode()]
    (tmp_path / "g.jsonl").write_bytes(b"\n".join([g.encode() for g in good[:15]] + bad + [g.encode() for g in good[15:]]))
    src = "    - {kind: gsm8k, path: g.jsonl, eval_fraction: 0.3, sft_fraction: 0.3}\n"
    (tmp_path / "params.yaml").write_text(params_text(tmp_path, src))
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert main(["--params", "params.yaml"]) == 0
    finally:
        os.chdir(cwd)
    rows = pd.concat([pd.read_parquet(tmp_path / f"data/curated/{s}.parquet") for s in ("sft", "rl", "eval")])
    assert sorted(rows.prompt) == sorted(json.loads(g)["question"] for g in good)
    report = json.loads((tmp_path / "data/curated/report.json").read_text())
    lines = sorted(int(d["where"].rsplit(":", 1)[1]) for d in report["drops"] if ":" in d["where"] and "g.jsonl" in d["where"])
    assert lines == list(range(16, 23))  # the 7 unreadable/invalid lines, by number
    assert [d["reason"].split(" (")[0] for d in report["drops"]][-1] == "prompt too long"


def test_gate_writes_data_docs_naming_the_failed_expectation(tmp_path):
    from tasks.data.validate import DataValidationError, validate_splits

    rows = [GOOD, {**GOOD, "id": "a-2", "prompt": "1=", "source": "a"}]
    with pytest.raises(DataValidationError, match="expect_column_value_lengths_to_be_between on column 'prompt': 1 of 2"):
        validate_splits({"eval": frame(rows)}, GateBounds(), {"a"}, str(tmp_path))
    (page,) = (tmp_path / "validations").rglob("*.html")
    html = page.read_text()
    assert "prompt" in html and "Failed" in html and (tmp_path / "index.html").is_file()


def test_gate_checks_code_tests_rewards_and_pass_rates():
    from tasks.data.validate import DataValidationError, validate_split

    ok = {**GOOD, "tests": '[{"assert": "assert f(1) == 1"}]', "rewards": "code,format", "pass_rate": 0.5}
    cols = ["id", "source", "prompt", "answer", "difficulty", "solution", "tests", "rewards", "pass_rate"]
    good = pd.DataFrame([ok, {**ok, "id": "a-2", "tests": '[{"input": "1", "output": "2"}]'}], columns=cols)
    assert validate_split(good, "rl", GateBounds(), {"a"}).success
    bad = pd.DataFrame([ok, {**ok, "id": "a-2", "tests": '[{"input": "1"}]', "rewards": "code,bogus", "pass_rate": 1.5}],
                       columns=cols)
    with pytest.raises(DataValidationError) as e:
        validate_split(bad, "rl", GateBounds(), {"a"})
    msg = str(e.value)
    assert "expect_column_values_to_match_json_schema on column 'tests': 1 of 2 rows" in msg
    assert "expect_column_values_to_match_regex on column 'rewards': 1 of 2 rows; e.g. 'code,bogus'" in msg
    assert "expect_column_values_to_be_between on column 'pass_rate': 1 of 2 rows; e.g. 1.5" in msg
