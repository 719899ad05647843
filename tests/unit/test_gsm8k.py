"""The GSM8K adapter: answer parsing, normalised rows, stable splits, bad-row accounting."""

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.data.gsm8k import SourceError, load_gsm8k, parse_answer, split_of, to_row

# The real GSM8K split lies in shared/ beside the checkout (as laid out for sessions and CI).
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k" / "train.jsonl"

NATALIA = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}


def good(i: int) -> dict:
    return {"question": f"Tom has {i} apples and buys {i} more. How many now?", "answer": f"{i}+{i}=<<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}"}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_natalia_row():
    row = to_row(NATALIA)
    assert row == {
        "id": "gsm8k-" + hashlib.sha256(NATALIA["question"].encode()).hexdigest()[:16],
        "source": "gsm8k",
        "prompt": NATALIA["question"],
        "answer": "72",
        "difficulty": -1,
        "solution": "<think>Natalia sold 48/2 = 24 clips in May.\n"
        "Natalia sold 48+24 = 72 clips altogether in April and May.</think><answer>72</answer>",
    }


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("x\n#### 1,000", "1000"),
        ("x\n#### 1,234,567", "1234567"),
        ("x\n####  -5 ", "-5"),
        ("x\n#### 3.75", "3.75"),
        ("#### 0", "0"),
    ],
)
def test_final_answer_is_the_number_without_separators(answer, expected):
    assert parse_answer(answer)[1] == expected


@pytest.mark.parametrize("answer", ["no marker 72", "x\n#### seventy", "x\n#### 1,00", "x\n#### ", "x\n#### 5 apples"])
def test_malformed_answers_are_rejected(answer):
    assert parse_answer(answer) is None


def test_annotations_stripped_and_last_marker_wins():
    reasoning, final = parse_answer("a <<2*3=6>>6 and <<6+1=7>>7\n#### 7")
    assert (reasoning, final) == ("a 6 and 7", "7")


@pytest.mark.parametrize(
    "record",
    [None, [1, 2], {"question": "q?"}, {"answer": "#### 1"}, {"question": "  ", "answer": "#### 1"}, {"question": 3, "answer": "#### 1"}],
)
def test_records_missing_fields_are_bad(record):
    assert to_row(record) is None


def test_id_depends_only_on_question():
    a = to_row({"question": "Q?", "answer": "#### 1"})
    b = to_row({"question": "Q?", "answer": "other\n#### 2"})
    assert a["id"] == b["id"] != to_row({"question": "Q!", "answer": "#### 1"})["id"]


def test_split_fractions_on_hashes():
    ids = [f"gsm8k-{i}" for i in range(20000)]
    splits = [split_of(i, sft_fraction=0.1, eval_fraction=0.05) for i in ids]
    assert abs(splits.count("eval") / 20000 - 0.05) < 0.01
    assert abs(splits.count("sft") / 20000 - 0.10) < 0.01
    assert {split_of(i, 0.0, 0.0) for i in ids[:500]} == {"rl"}
    assert {split_of(i, 0.0, 1.0) for i in ids[:500]} == {"eval"}


def test_local_jsonl_counts_and_drops_bad_rows(tmp_path):
    records = [good(i) for i in range(1, 11)] + [
        "{not json",
        {"question": "missing answer"},
        {"question": "no marker?", "answer": "it is 4"},
        {"question": "words?", "answer": "#### four"},
        "",  # blank lines are not rows at all
    ]
    splits, n_bad = load_gsm8k(str(write_jsonl(tmp_path / "g.jsonl", records)), sft_fraction=0.3, eval_fraction=0.2)
    assert n_bad == 4
    rows = [r for s in splits.values() for r in s]
    assert sorted(int(r["answer"]) for r in rows) == [2 * i for i in range(1, 11)]
    assert all(r["solution"] is None for r in splits["rl"])
    assert all(r["solution"].endswith(f"<answer>{r['answer']}</answer>") for r in splits["sft"] + splits["eval"])
    for name, rs in splits.items():
        assert all(split_of(r["id"], 0.3, 0.2) == name for r in rs)


def test_adding_rows_does_not_move_existing_ones(tmp_path):
    small, _ = load_gsm8k(str(write_jsonl(tmp_path / "a.jsonl", [good(i) for i in range(50)])), sft_fraction=0.3, eval_fraction=0.3)
    big, _ = load_gsm8k(str(write_jsonl(tmp_path / "b.jsonl", [good(i) for i in range(200)][::-1])), sft_fraction=0.3, eval_fraction=0.3)
    where = {r["id"]: s for s, rs in big.items() for r in rs}
    for s, rs in small.items():
        assert all(where[r["id"]] == s for r in rs)


def test_limit_counts_rows_read_including_bad(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", ["{bad", *[good(i) for i in range(10)]])
    splits, n_bad = load_gsm8k(str(path), limit=5)
    assert n_bad == 1 and sum(map(len, splits.values())) == 4


def test_mostly_bad_file_is_an_error_naming_it(tmp_path):
    path = write_jsonl(tmp_path / "notgsm.jsonl", [good(1), {"q": 1}, {"q": 2}])
    with pytest.raises(SourceError, match=r"notgsm\.jsonl: 2 of 3 rows are not GSM8K format"):
        load_gsm8k(str(path))
    # exactly half bad is tolerated
    splits, n_bad = load_gsm8k(str(write_jsonl(tmp_path / "half.jsonl", [good(1), {"q": 1}])))
    assert n_bad == 1


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(SourceError, match="nope.jsonl: file not found"):
        load_gsm8k(str(tmp_path / "nope.jsonl"))
    with pytest.raises(SourceError, match="no rows"):
        load_gsm8k(str(write_jsonl(tmp_path / "empty.jsonl", [])))


def test_parquet_equals_jsonl(tmp_path):
    records = [good(i) for i in range(30)] + [{"question": "bad", "answer": "none"}]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "g.parquet")
    from_parquet = load_gsm8k(str(tmp_path / "g.parquet"))
    from_jsonl = load_gsm8k(str(write_jsonl(tmp_path / "g.jsonl", records)))
    assert from_parquet == from_jsonl and from_parquet[1] == 1


def test_hub_failure_is_a_source_error(monkeypatch):
    # The hub path is real code; offline it must fail fast with a message naming the dataset.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SourceError, match=r"openai/gsm8k@abc123 \(train\): cannot load from the hub"):
        load_gsm8k("openai/gsm8k", revision="abc123")


def test_real_gsm8k_train():
    assert REAL.is_file(), f"the real GSM8K split is expected beside the checkout at {REAL}"
    splits, n_bad = load_gsm8k(str(REAL))
    assert n_bad == 0
    assert sum(map(len, splits.values())) == 7473
    assert 0.04 < len(splits["eval"]) / 7473 < 0.06 and 0.09 < len(splits["sft"]) / 7473 < 0.11
    for r in splits["sft"]:
        assert "<<" not in r["solution"] and "####" not in r["solution"]
        assert r["answer"].lstrip("-").replace(".", "", 1).isdigit()
