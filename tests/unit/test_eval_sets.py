"""Benchmark eval sets load through the data adapters: GSM8K, MATH, MATH-500, AIME-style, MBPP."""

import json
from pathlib import Path

import pytest

from tasks.config.evaluate import EvalSet
from tasks.data.io import SourceError
from tasks.evaluation.benchmarks import load_eval_sets

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def jsonl(path: Path, records: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def test_each_format_loads_and_bad_rows_are_dropped_with_their_line(tmp_path):
    gsm = jsonl(
        tmp_path / "gsm8k_test.jsonl",
        [
            {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
            {"question": "No final line here?", "answer": "just prose"},
            "{not json",
            {"question": "Half of 1,000?", "answer": "#### 500"},
        ],
    )
    math = jsonl(
        tmp_path / "math_test.jsonl",
        [
            {
                "problem": "What is $1+1$?",
                "solution": "So $\\boxed{2}$.",
                "level": "Level 1",
                "type": "Algebra",
            },
        ],
    )
    math500 = jsonl(
        tmp_path / "math500.jsonl",
        [
            {
                "problem": "Simplify $2/4$.",
                "solution": "It is $\\frac12$.",
                "answer": "\\frac{1}{2}",
                "unique_id": "x",
            },
        ],
    )
    aime = jsonl(
        tmp_path / "aime.jsonl",
        [
            {"id": "2024-I-1", "problem": "Find the remainder of 2024 mod 1000.", "answer": 24},
            {"id": "2024-I-2", "problem": "A problem whose answer is not an integer.", "answer": "1/2"},
        ],
    )
    mbpp = jsonl(
        tmp_path / "mbpp_test.jsonl",
        [
            {
                "task_id": 11,
                "text": "Write a function add(a, b).",
                "code": "def add(a, b):\n    return a + b",
                "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
                "test_setup_code": "",
            },
        ],
    )
    sets = [
        EvalSet(kind="gsm8k", path=gsm),
        EvalSet(kind="math", path=math),
        EvalSet(kind="numina", path=math500, name="math500"),
        EvalSet(kind="aime", path=aime),
        EvalSet(kind="mbpp", path=mbpp),
    ]
    rows, data, drops = load_eval_sets(None, sets)
    by = {r["source"]: [] for r in rows}
    for r in rows:
        by[r["source"]].append(r)
    assert sorted(by) == ["aime", "gsm8k", "math", "math500", "mbpp"]
    assert sorted(r["answer"] for r in by["gsm8k"]) == ["500", "7"]
    assert by["math"][0]["answer"] == "2" and by["math500"][0]["answer"] == "\\frac{1}{2}"
    assert [r["answer"] for r in by["aime"]] == ["24"] and by["aime"][0]["id"] == "aime-2024-I-1"
    code = by["mbpp"][0]
    assert code["answer"] == "" and code["rewards"] == "code,format" and len(json.loads(code["tests"])) == 2
    reasons = {
        (Path(d["where"].split(":")[0]).name if ":" in d["where"] else d["where"], d["reason"]) for d in drops
    }
    assert any(w == "gsm8k_test.jsonl" and "####" in r for w, r in reasons)
    assert any(w == "gsm8k_test.jsonl" and "malformed JSON" in r for w, r in reasons)
    assert ("aime-2024-I-2", "answer is not an integer (answer)") in reasons
    assert [d["items"] for d in data] == [2, 1, 1, 1, 1] and all(len(d["md5"]) == 32 for d in data)


def test_hub_ids_need_a_pinned_revision_and_labels_are_unique(tmp_path):
    with pytest.raises(
        SourceError, match=r"evaluate.benchmarks.0.revision: hub dataset openai/gsm8k needs a pinned"
    ):
        load_eval_sets(None, [EvalSet(kind="gsm8k", path="openai/gsm8k")])
    f = jsonl(
        tmp_path / "a.jsonl", [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "#### 7"}]
    )
    with pytest.raises(SourceError, match="label 'gsm8k' is used twice"):
        load_eval_sets(None, [EvalSet(kind="gsm8k", path=f), EvalSet(kind="gsm8k", path=f)])


def test_the_shared_real_files_load_in_their_formats():
    assert SHARED.is_dir(), f"{SHARED} is missing: the real GSM8K/MATH/MBPP files are needed"
    sets = [
        EvalSet(kind="gsm8k", path=str(SHARED / "gsm8k/train.jsonl"), limit=20),
        EvalSet(kind="math", path=str(SHARED / "math/train.jsonl"), limit=20),
        EvalSet(kind="mbpp", path=str(SHARED / "mbpp/mbpp.jsonl"), limit=20),
    ]
    rows, data, drops = load_eval_sets(None, sets)
    counts = {s: sum(r["source"] == s for r in rows) for s in ("gsm8k", "math", "mbpp")}
    assert all(c >= 15 for c in counts.values()), (counts, drops[:3])


def test_samples_dir_must_be_an_output_folder():
    from pydantic import ValidationError

    from tasks.config.evaluate import EvaluateConfig

    for bad in ("/", "../elsewhere", "reports", "tasks", "reports/../tasks"):
        with pytest.raises(ValidationError, match="samples_dir: must be a folder under reports/"):
            EvaluateConfig(samples_dir=bad)
    assert EvaluateConfig(samples_dir="reports/run2").samples_dir == "reports/run2"


def test_grpo_eval_subset_is_fixed_and_spread_over_sources(tmp_path):
    import pandas as pd

    from tasks.data.synthetic import generate_family
    from tasks.stages.grpo import eval_subset

    rows = generate_family("add_2d", 10, 0) + generate_family("sub_2d", 10, 0)
    pd.DataFrame(rows[::-1]).to_parquet(tmp_path / "eval.parquet")  # file order must not matter
    sub = eval_subset(str(tmp_path / "eval.parquet"), 6)
    assert [r["id"] for r in sub] == sorted(r["id"] for r in rows if r["source"] == "add_2d")[:3] + sorted(
        r["id"] for r in rows if r["source"] == "sub_2d"
    )[:3]
