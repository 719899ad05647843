"""GSM8K-format adapter: ``{"question", "answer"}`` rows -> the curated row schema.

A GSM8K answer is a worked solution with calculator annotations and a final line:

    Natalia sold 48/2 = <<48/2=24>>24 clips in May.
    ...
    #### 72

Choices:
- ``answer`` is the number after ``####`` with thousands separators removed (``1,000`` -> ``1000``);
  anything that is not a plain (optionally negative, optionally decimal) number makes the row bad.
- ``solution`` is ``<think>reasoning</think><answer>n</answer>`` where the reasoning is everything
  before ``####`` with the ``<<...>>`` annotations stripped (they are calculator calls, not prose).
- ``id`` is ``gsm8k-`` + the first 16 hex digits of sha256(question), so it survives reordering.
- ``difficulty`` is -1: real data carries no difficulty label, and -1 keeps the column a plain int.
- Split assignment hashes the id (salted, so it is independent of the id's own digits) to a number
  in [0, 1): below ``eval_fraction`` is eval, below ``eval_fraction + sft_fraction`` is sft, the rest
  rl. A row's split depends only on its own question, so adding rows never moves existing ones.
- Malformed rows (bad JSON, missing field, no ``####``, non-numeric answer) are counted and
  dropped; more than half bad means the file is not GSM8K format, which is an error naming it.

Sources: a local ``.jsonl`` / ``.parquet`` file, or a hub id read with
``datasets.load_dataset(path, "main", revision=..., split=...)``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tasks.data.io import SourceError
from tasks.data.synthetic import format_solution

SOURCE = "gsm8k"
NO_DIFFICULTY = -1
LOCAL_SUFFIXES = (".jsonl", ".parquet")

_ANNOTATION = re.compile(r"<<[^<>]*>>")
# 1,234,567 or 1234567, optionally negative and with decimals; commas only as thousands groups.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")




def stable_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def parse_answer(answer: str) -> tuple[str, str] | None:
    """Split a GSM8K answer into (reasoning without annotations, final number); None if malformed."""
    if "####" not in answer:
        return None
    reasoning, final = answer.rsplit("####", 1)
    final = final.strip()
    if not _NUMBER.fullmatch(final):
        return None
    reasoning = _ANNOTATION.sub("", reasoning).strip()
    return reasoning, final.replace(",", "")


def to_row(record: Any) -> dict | None:
    """One GSM8K record -> a curated row, or None if it is malformed."""
    if not isinstance(record, dict):
        return None
    question, answer = record.get("question"), record.get("answer")
    if not isinstance(question, str) or not isinstance(answer, str) or not question.strip():
        return None
    parsed = parse_answer(answer)
    if parsed is None:
        return None
    reasoning, final = parsed
    return {
        "id": f"{SOURCE}-{stable_hash(question)}",
        "source": SOURCE,
        "prompt": question,
        "answer": final,
        "difficulty": NO_DIFFICULTY,
        "solution": format_solution(reasoning, final),
    }


def split_of(row_id: str, sft_fraction: float, eval_fraction: float) -> str:
    """Deterministic split from the id alone: eval, then sft, then rl, by a uniform hash in [0, 1)."""
    u = int(hashlib.sha256(f"split:{row_id}".encode()).hexdigest()[:15], 16) / 16**15
    if u < eval_fraction:
        return "eval"
    if u < eval_fraction + sft_fraction:
        return "sft"
    return "rl"


# ----------------------------------------------------------------------------- reading
def is_local(path: str) -> bool:
    return Path(path).suffix in LOCAL_SUFFIXES or Path(path).exists()


def _read_jsonl(path: Path) -> Iterator[Any]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                yield None  # counted as a bad row, like any other malformed record


def _read_parquet(path: Path) -> Iterator[Any]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches():
        yield from batch.to_pylist()


def _read_hub(path: str, revision: str | None, split: str) -> Iterator[Any]:
    from datasets import load_dataset

    try:
        ds = load_dataset(path, "main", revision=revision, split=split)
    except Exception as e:  # network, auth, unknown id or revision: all end the same way
        raise SourceError(f"{path}@{revision or 'latest'} ({split}): cannot load from the hub: {e}") from e
    yield from ds


def read_records(path: str, revision: str | None = None, split: str = "train") -> Iterator[Any]:
    """Raw records from a local file (by suffix) or the hub."""
    if not is_local(path):
        return _read_hub(path, revision, split)
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"{path}: file not found")
    if p.suffix == ".parquet":
        return _read_parquet(p)
    if p.suffix == ".jsonl":
        return _read_jsonl(p)
    raise SourceError(f"{path}: unsupported file type {p.suffix!r}; expected one of {LOCAL_SUFFIXES}")


def normalise_records(records: Iterable[Any], name: str, limit: int | None = None) -> tuple[list[dict], int]:
    """Convert records to rows; return (rows, n_bad). Raise if more than half are bad."""
    rows: list[dict] = []
    n_seen = n_bad = 0
    for record in records:
        if limit is not None and n_seen >= limit:
            break
        n_seen += 1
        row = to_row(record)
        if row is None:
            n_bad += 1
        else:
            rows.append(row)
    if n_seen == 0:
        raise SourceError(f"{name}: no rows")
    if n_bad * 2 > n_seen:
        raise SourceError(
            f"{name}: {n_bad} of {n_seen} rows are not GSM8K format "
            "(need 'question' and 'answer' ending in '#### <number>')"
        )
    return rows, n_bad


def load_gsm8k(
    path: str,
    revision: str | None = None,
    split: str = "train",
    limit: int | None = None,
    sft_fraction: float = 0.1,
    eval_fraction: float = 0.05,
) -> tuple[dict[str, list[dict]], int]:
    """Read, normalise and split a GSM8K-format source; return ({split: rows}, n_bad)."""
    rows, n_bad = normalise_records(read_records(path, revision, split), path, limit)
    out: dict[str, list[dict]] = {"sft": [], "rl": [], "eval": []}
    for row in rows:
        s = split_of(row["id"], sft_fraction, eval_fraction)
        if s == "rl":
            row = {**row, "solution": None}  # RL rows carry only the verifiable answer
        out[s].append(row)
    return out, n_bad
