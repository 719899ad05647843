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
  dropped with file, line and reason; more than half bad means the file is not GSM8K format, which
  is an error naming it (the generic loader in ``tasks/data/sources.py`` does both).

Sources: anything ``tasks/data/io.py`` reads; a hub id uses the config ``main`` by default.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from tasks.data.adapters import NO_DIFFICULTY, text_field
from tasks.data.io import SourceError  # noqa: F401  (re-exported: callers catch it from here)
from tasks.data.synthetic import format_solution

SOURCE = "gsm8k"

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


def adapt_gsm8k(record: dict, spec=None) -> dict | str:
    """One GSM8K record -> a row (without id/source, which the loader adds), or the reason it is bad."""
    question, answer = text_field(record, "question"), text_field(record, "answer")
    parsed = parse_answer(answer)
    if parsed is None:
        return "no final answer (answer: needs '#### <number>')"
    reasoning, final = parsed
    return {"prompt": question, "answer": final, "difficulty": NO_DIFFICULTY,
            "solution": format_solution(reasoning, final)}


def to_row(record: Any) -> dict | None:
    """One GSM8K record -> a curated row, or None if it is malformed."""
    if not isinstance(record, dict):
        return None
    try:
        row = adapt_gsm8k(record)
    except ValueError:
        return None
    if isinstance(row, str):
        return None
    return {"id": f"{SOURCE}-{stable_hash(row['prompt'])}", "source": SOURCE, **row}


def split_of(row_id: str, sft_fraction: float, eval_fraction: float) -> str:
    """Deterministic split from the id alone: eval, then sft, then rl, by a uniform hash in [0, 1)."""
    u = int(hashlib.sha256(f"split:{row_id}".encode()).hexdigest()[:15], 16) / 16**15
    if u < eval_fraction:
        return "eval"
    if u < eval_fraction + sft_fraction:
        return "sft"
    return "rl"


def load_gsm8k(
    path: str,
    revision: str | None = None,
    split: str = "train",
    limit: int | None = None,
    sft_fraction: float = 0.1,
    eval_fraction: float = 0.05,
) -> tuple[dict[str, list[dict]], int]:
    """Read, normalise and split a GSM8K-format source; return ({split: rows}, n_bad)."""
    from tasks.config.curate import Gsm8kSource
    from tasks.data.sources import load_file_source

    spec = Gsm8kSource(path=path, revision=revision, split=split, limit=limit,
                       sft_fraction=sft_fraction, eval_fraction=eval_fraction)
    drops: list[dict] = []
    splits = load_file_source(spec, revision, drops)
    return splits, len(drops)
