"""Bad input, one test each (issue 17): a bad record is dropped with file, line and reason and counted;
a bad source stops the stage with an error naming the file, line or field; nothing malformed reaches
the parquet outputs."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import ConfigError, Params
from tasks.config.curate import ColumnsSource, CurateConfig, Gsm8kSource, MbppSource
from tasks.data.io import SourceError
from tasks.data.sources import load_file_source

GOOD = [
    json.dumps({"question": f"How many apples are there in basket {i}?", "answer": f"Count.\n#### {i}"})
    for i in range(1, 9)
]


def load(path: Path, spec_cls=Gsm8kSource, **kw) -> tuple[list[dict], list[dict]]:
    drops: list[dict] = []
    out = load_file_source(spec_cls(path=str(path), **kw), None, drops)
    return [r for s in out.values() for r in s], drops


def with_line(tmp_path: Path, bad: bytes) -> Path:
    """A GSM8K file whose line 3 is ``bad``; the other lines are good."""
    lines = [g.encode() for g in GOOD]
    path = tmp_path / "g.jsonl"
    path.write_bytes(b"\n".join(lines[:2] + [bad] + lines[2:]) + b"\n")
    return path


def only_drop(drops: list[dict], path: Path, reason: str) -> None:
    assert len(drops) == 1, drops
    assert drops[0]["where"] == f"{path}:3" and drops[0]["reason"].startswith(reason), drops


def test_non_utf8_bytes_drop_only_that_line(tmp_path):
    path = with_line(tmp_path, b'{"question": "caf\xe9 ok?", "answer": "#### 1"}')
    rows, drops = load(path)
    assert len(rows) == 8
    only_drop(drops, path, "not UTF-8")


def test_lone_surrogate_is_dropped(tmp_path):
    path = with_line(tmp_path, b'{"question": "bad \\ud800 here?", "answer": "#### 1"}')
    rows, drops = load(path)
    only_drop(drops, path, "lone surrogate (question)")


def test_malformed_json_line(tmp_path):
    path = with_line(tmp_path, b'{"question": "unterminated')
    only_drop(load(path)[1], path, "malformed JSON")


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"question": None, "answer": "#### 1"}, "null field (question)"),
        ({"answer": "#### 1"}, "missing field (question)"),
        ({"question": 12, "answer": "#### 1"}, "wrong type (question: int"),
        ({"question": "q?", "answer": ["#### 1"]}, "wrong type (answer: list"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_null_and_wrong_typed_fields(tmp_path, record, reason):
    path = with_line(tmp_path, json.dumps(record).encode())
    only_drop(load(path)[1], path, reason)


def test_empty_strings(tmp_path):
    path = with_line(tmp_path, json.dumps({"question": "   ", "answer": "#### 1"}).encode())
    only_drop(load(path)[1], path, "empty field (question)")


def test_nul_characters(tmp_path):
    path = with_line(tmp_path, json.dumps({"question": "a\x00b?", "answer": "#### 1"}).encode())
    only_drop(load(path)[1], path, "NUL character (question)")


def mbpp(task_id, test="assert f(1) == 1") -> str:
    return json.dumps(
        {
            "task_id": task_id,
            "text": f"Write f number {task_id}.",
            "code": "def f(x):\n    return x",
            "test_list": [test, "assert f(2) == 2"],
            "test_setup_code": "",
        }
    )


def test_duplicate_ids_keep_the_first(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join([mbpp(1), mbpp(2), mbpp(1), mbpp(3)]) + "\n")
    rows, drops = load(path, MbppSource)
    assert sorted(r["id"] for r in rows) == ["mbpp-1", "mbpp-2", "mbpp-3"]
    assert drops[0]["where"] == f"{path}:3" and drops[0]["reason"] == f"duplicate id (1; first at {path}:1)"


def test_mbpp_assert_that_does_not_parse(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join([mbpp(1), mbpp(2), mbpp(3, "assert f(1 == 1"), mbpp(4)]) + "\n")
    rows, drops = load(path, MbppSource)
    assert len(rows) == 3
    only_drop(drops, path, "assert does not parse (test_list[0]")


def test_missing_file_and_directory_stop_with_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SourceError, match=r"nope\.jsonl: file not found"):
        load(tmp_path / "nope.jsonl")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "notes.bin").write_bytes(b"\x00\x01")
    with pytest.raises(
        SourceError, match=r"adir@latest \(train\): a directory that is not a loadable dataset"
    ):
        load(tmp_path / "adir")


def test_unknown_adapter_is_a_config_error_naming_the_key():
    from tasks.config import _format_error

    with pytest.raises(Exception) as e:
        Params.model_validate({"curate": {"sources": [{"kind": "alpaca", "path": "x.jsonl"}]}})
    msg = _format_error(e.value, "params.yaml")
    assert "curate.sources.0" in msg and "alpaca" in msg
    assert isinstance(ConfigError(msg), ValueError)


def test_csv_without_the_mapped_columns(tmp_path):
    pd.DataFrame({"question": ["q?"], "gold": ["1"]}).to_csv(tmp_path / "t.csv", index=False)
    spec = ColumnsSource(path=str(tmp_path / "t.csv"), columns={"prompt": "question", "answer": "answer"})
    with pytest.raises(SourceError, match=r"t\.csv: no column 'answer' \(mapped as columns\.answer\)"):
        load_file_source(spec, None, [])


@pytest.mark.slow
def test_five_megabyte_prompt_is_dropped_and_counted_not_a_gate_failure(tmp_path):
    from tasks.data.validate import validate_splits
    from tasks.stages.curate import build, columns_of, known_sources, to_frame

    huge = json.dumps({"question": "x " * 2_500_000 + "?", "answer": "#### 1"})
    path = with_line(tmp_path, huge.encode())
    cfg = CurateConfig(
        sources=[Gsm8kSource(path=str(path), eval_fraction=0.3)],
        verify={"math": False},
        fingerprint=str(tmp_path / "none.json"),
    )
    splits, report = build(cfg)
    assert report["filters"]["length"] == {"gsm8k": 1}
    assert [d["reason"] for d in report["drops"]] == ["prompt too long (5000001 chars > 2048)"]
    cols = columns_of(splits)
    validate_splits({s: to_frame(splits[s], cols) for s in splits}, cfg.limits, known_sources(cfg))
