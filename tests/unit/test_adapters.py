"""Adapters for MATH, NuminaMath, MBPP, stdin/stdout and mapped-column sources, on records shaped like
the real files (and on the real files beside the checkout), plus the hub code path on a local
dataset directory (``datasets.load_dataset``, no download)."""

import json
from pathlib import Path

import pytest

from tasks.config.curate import ColumnsSource, Gsm8kSource, MathSource, MbppSource, NuminaSource, StdioSource
from tasks.data.adapters import adapt_math, adapt_mbpp, adapt_numina, adapt_stdio, last_boxed
from tasks.data.sources import load_file_source

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.mark.parametrize(
    "text, gold",
    [
        (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"first \boxed{1} then \boxed{2}", "2"),
        (r"The answer is $\boxed 2$.", "2"),
        (r"nested \boxed{\sqrt{\{3\}}}", r"\sqrt{\{3\}}"),
        (r"\fbox{7}", "7"),
        (r"no box here", None),
        (r"\boxed{unclosed", None),
    ],
)
def test_last_boxed(text, gold):
    assert last_boxed(text) == gold


def test_math_row_level_type_and_solution():
    rec = {
        "problem": "What is $1+1$?",
        "level": "Level 3",
        "type": "Algebra",
        "solution": r"It is $\boxed{2}$.",
    }
    row = adapt_math(rec, None)
    assert (row["answer"], row["difficulty"], row["type"]) == ("2", 3, "Algebra")
    assert row["solution"] == r"<think>It is $\boxed{2}$.</think><answer>2</answer>"
    assert adapt_math({**rec, "level": "Level ?"}, None)["difficulty"] == -1
    assert adapt_math({**rec, "solution": "no box"}, None).startswith("no boxed answer")
    assert "'<'" in adapt_math({**rec, "solution": r"\boxed{x<3}"}, None)


def test_numina_answer_column_first_else_boxed():
    rec = {"problem": "p?", "solution": r"so \boxed{5}", "answer": "6"}
    assert adapt_numina(rec, None)["answer"] == "6"
    assert adapt_numina({**rec, "answer": None}, None)["answer"] == "5"
    assert adapt_numina({"problem": "p?", "answer": "7"}, None)["solution"] is None
    assert adapt_numina({"problem": "p?", "solution": "none"}, None).startswith("no answer")


def test_mbpp_row_prompt_tests_and_setup():
    rec = {
        "task_id": 2,
        "text": "Write f.",
        "code": "def f(x):\r\n    return x",
        "test_setup_code": "import math",
        "test_list": ["assert f(1) == 1", "assert f(2) == 2"],
    }
    row = adapt_mbpp(rec, None)
    assert row["prompt"] == "Write f.\nYour code should pass this test:\nassert f(1) == 1"
    assert json.loads(row["tests"]) == [
        {"assert": "import math\nassert f(1) == 1"},
        {"assert": "import math\nassert f(2) == 2"},
    ]
    assert (row["rewards"], row["answer"], row["reference"]) == ("code,format", "", "def f(x):\n    return x")


def test_stdio_tests_both_shapes():
    a = adapt_stdio(
        {"prompt": "echo", "tests": [{"input": "1\n", "output": "1"}], "solution": "print(input())"}, None
    )
    b = adapt_stdio({"question": "echo", "tests": json.dumps({"inputs": ["1\n"], "outputs": ["1"]})}, None)
    assert json.loads(a["tests"]) == json.loads(b["tests"]) == [{"input": "1\n", "output": "1"}]
    assert a["reference"] == "print(input())" and b["reference"] is None


def test_columns_source_csv_and_parquet(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"Q": [f"question {i}?" for i in range(20)], "A": list(range(20)), "key": range(20)})
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet")
    cols = {"prompt": "Q", "answer": "A", "id": "key"}
    a = load_file_source(ColumnsSource(name="mine", path=str(tmp_path / "t.csv"), columns=cols), None, [])
    b = load_file_source(ColumnsSource(name="mine", path=str(tmp_path / "t.parquet"), columns=cols), None, [])
    assert a == b
    rows = [r for s in a.values() for r in s]
    assert sorted(r["id"] for r in rows) == sorted(f"mine-{i}" for i in range(20))
    assert {r["answer"] for r in rows} == {str(i) for i in range(20)} and {r["source"] for r in rows} == {
        "mine"
    }


def test_hub_code_path_on_a_local_dataset_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    ds = tmp_path / "my_numina"
    ds.mkdir()
    write_jsonl(ds / "train.jsonl", [{"problem": f"p{i}?", "solution": rf"\boxed{{{i}}}"} for i in range(30)])
    drops: list = []
    out = load_file_source(NuminaSource(path=str(ds), eval_fraction=0.2), None, drops)
    rows = [r for s in out.values() for r in s]
    assert len(rows) == 30 and not drops
    assert {r["answer"] for r in rows} == {str(i) for i in range(30)}


def test_real_math_and_mbpp_files():
    math_file, mbpp_file = SHARED / "math" / "train.jsonl", SHARED / "mbpp" / "mbpp.jsonl"
    assert math_file.is_file() and mbpp_file.is_file(), f"the real MATH/MBPP files are expected in {SHARED}"
    drops: list = []
    out = load_file_source(MathSource(path=str(math_file)), None, drops)
    rows = [r for s in out.values() for r in s]
    # Upstream, number_theory/7115 and 7117 box nothing (``\boxed{}``): the only rows without a gold.
    assert len(rows) + len(drops) == 7500
    empty = [d["where"].rsplit(":", 1)[1] for d in drops if d["reason"].startswith("no boxed answer")]
    assert empty == ["5530", "5532"], drops
    assert all("'<'" in d["reason"] for d in drops if not d["reason"].startswith("no boxed answer"))
    assert [r["answer"] for r in rows if r"\boxed 2" in (r["solution"] or "")] == ["2"]
    drops = []
    out = load_file_source(MbppSource(path=str(mbpp_file)), None, drops)
    assert sum(map(len, out.values())) == 974 and not drops and not out["sft"] and not out["eval"]


def test_gsm8k_still_uses_its_adapter_with_name(tmp_path):
    path = write_jsonl(
        tmp_path / "g.jsonl", [{"question": f"q{i}?", "answer": f"x\n#### {i}"} for i in range(10)]
    )
    out = load_file_source(Gsm8kSource(name="gsm-a", path=str(path)), None, [])
    assert {r["source"] for s in out.values() for r in s} == {"gsm-a"}
    out = load_file_source(
        StdioSource(
            path=str(
                write_jsonl(
                    tmp_path / "s.jsonl",
                    [{"id": "a", "prompt": "p", "tests": [{"input": "", "output": "1"}]}],
                )
            )
        ),
        None,
        [],
    )
    assert out["rl"][0]["id"] == "stdio-a"


def test_hub_revisions_resolve_offline_when_pinned_and_fail_clearly_otherwise(monkeypatch):
    from tasks.config.curate import CurateConfig
    from tasks.data.fingerprint import fingerprint, resolve_revision
    from tasks.data.io import SourceError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert resolve_revision("openai/gsm8k", sha) == sha  # a pinned commit needs no network
    fp = fingerprint(CurateConfig(sources=[Gsm8kSource(path="openai/gsm8k", revision=sha)]))
    assert fp["sources"][0] == {
        "kind": "gsm8k",
        "label": "gsm8k",
        "path": "openai/gsm8k",
        "revision": sha,
        "resolved": sha,
    }
    with pytest.raises(SourceError, match=r"openai/gsm8k@main: cannot resolve the revision on the hub"):
        resolve_revision("openai/gsm8k", "main")


def test_fingerprint_of_local_files_and_dirs(tmp_path):
    from tasks.config.curate import CurateConfig
    from tasks.data.fingerprint import fingerprint, resolved_revisions, write_fingerprint

    f = write_jsonl(tmp_path / "a.jsonl", [{"problem": "p", "solution": r"\boxed{1}"}])
    d = tmp_path / "ds"
    d.mkdir()
    write_jsonl(d / "train.jsonl", [{"problem": "p", "solution": r"\boxed{1}"}])
    cfg = CurateConfig(sources=[MathSource(path=str(f)), NuminaSource(path=str(d))])
    a = write_fingerprint(cfg, tmp_path / "fp.json")
    assert a["sources"][0]["md5"] and a["sources"][1]["md5"].endswith(".dir")
    write_jsonl(d / "train.jsonl", [{"problem": "q", "solution": r"\boxed{2}"}])
    assert fingerprint(cfg)["sources"][1]["md5"] != a["sources"][1]["md5"]
    assert resolved_revisions(tmp_path / "fp.json") == {}  # no hub sources
