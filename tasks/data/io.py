"""Reading raw records from a source: local ``.jsonl`` / ``.parquet`` / ``.csv``, a dataset directory, or the hub.

Every record comes with ``where``, the place a person looks to fix it: ``file:line`` for jsonl and
csv, ``file:row N`` for parquet and ``id@sha[split]:row N`` for hub data. A record that cannot be
read at all (bytes that are not UTF-8, malformed JSON, a line that is not an object) comes as a
``Bad`` with the reason, so the adapter counts and drops it and the rest of the file still loads:
jsonl is read as bytes and decoded line by line for exactly this reason.

Whole-source problems stop the stage with a ``SourceError`` naming the path: a missing file, a
directory that is not a dataset, an unsupported suffix, a CSV without a mapped column, a hub id
that cannot be loaded.

A path is local when it exists or has a local suffix; anything else is a hub id. A directory is
loaded with ``datasets.load_dataset(dir)``, the same call the hub path makes, so the hub code path
is tested here on local directories without any download.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCAL_SUFFIXES = (".jsonl", ".parquet", ".csv")


class SourceError(ValueError):
    """A data source that cannot be read or is mostly not in the expected format."""


@dataclass(frozen=True)
class Bad:
    """A record that could not be read; ``reason`` says why."""

    reason: str


def is_local(path: str) -> bool:
    return Path(path).suffix in LOCAL_SUFFIXES or Path(path).exists()


def is_hub(path: str) -> bool:
    return not is_local(path)


def check_local(path: str) -> Path:
    """The path of a local source that exists and is readable as one; else a SourceError naming it."""
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{path}: file not found")
    if p.is_dir():
        return p
    if p.suffix not in LOCAL_SUFFIXES:
        raise SourceError(f"{path}: unsupported file type {p.suffix!r}; expected one of {LOCAL_SUFFIXES}")
    return p


def _read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield where, Bad(f"not UTF-8 (byte {e.start})")
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                yield where, Bad(f"malformed JSON ({e.msg}, column {e.colno})")
                continue
            yield where, record if isinstance(record, dict) else Bad("not a JSON object")


def _read_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    n = 0
    for batch in pq.ParquetFile(path).iter_batches():
        for record in batch.to_pylist():
            n += 1
            yield f"{path}:row {n}", record


def csv_header(path: Path) -> list[str]:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return next(csv.reader(f), [])


def _read_csv(path: Path) -> Iterator[tuple[str, Any]]:
    # surrogateescape keeps undecodable bytes as lone surrogates, found per row below
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        for record in reader:
            where = f"{path}:{reader.line_num}"
            if None in record:
                yield where, Bad(f"{len(record[None])} more fields than the header has")
            elif any(_undecodable(v) for v in record.values()):
                yield where, Bad("not UTF-8")
            else:
                yield where, record


def _undecodable(value: Any) -> bool:
    return isinstance(value, str) and any("\udc80" <= c <= "\udcff" for c in value)


def load_dataset_rows(path: str, subset: str | None, revision: str | None, split: str):
    """``datasets.load_dataset`` for a hub id (at ``revision``) or a local dataset directory."""
    from datasets import load_dataset

    try:
        return load_dataset(path, subset, revision=revision, split=split)
    except Exception as e:  # network, auth, unknown id/revision/split, nothing loadable: one outcome
        what = (
            "a directory that is not a loadable dataset"
            if Path(path).is_dir()
            else "cannot load from the hub"
        )
        raise SourceError(f"{path}@{revision or 'latest'} ({split}): {what}: {e}") from e


def _read_dataset(
    path: str, subset: str | None, revision: str | None, split: str
) -> Iterator[tuple[str, Any]]:
    ds = load_dataset_rows(path, subset, revision, split)
    tag = f"{path}@{revision}" if revision else path
    for i, record in enumerate(ds, 1):
        yield f"{tag}[{split}]:row {i}", record


def read_records(
    path: str, revision: str | None = None, split: str = "train", subset: str | None = None
) -> Iterator[tuple[str, Any]]:
    """``(where, record | Bad)`` pairs from a local file (by suffix), a dataset directory or the hub."""
    if is_hub(path):
        return _read_dataset(path, subset, revision, split)
    p = check_local(path)
    if p.is_dir():
        return _read_dataset(str(p), subset, None, split)
    return {".parquet": _read_parquet, ".jsonl": _read_jsonl, ".csv": _read_csv}[p.suffix](p)
