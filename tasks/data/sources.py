"""Load one configured source into rows already assigned to the ``sft``, ``rl`` and ``eval`` splits.

Row schema (every source, every split)::

    {id: str, source: str, prompt: str, answer: str, difficulty: int, solution: str | None}

plus, only when some row has them (so the synthetic default's parquet files stay byte-identical),
``tests`` (JSON test cases of a code row), ``rewards`` (the rewards that apply: ``code,format`` for
code rows) and ``type`` (a MATH subject, ``code``). ``difficulty`` is the synthetic family's level
or MATH's level (1 = easiest) and -1 where a source has none. ``solution`` is a worked trace
``<think>...</think><answer>...</answer>`` on sft and eval rows and None on rl rows: RL needs only
the verifiable answer, and worked solutions are the scarce resource by design.

Synthetic: each family is generated once with ``sft + rl + eval`` problems (distinct within the
family); the first ``eval_per_family`` go to eval, the next ``sft_per_family`` to sft, the rest to
rl. A family with fewer distinct problems than asked (add_1d has 100) fills eval and sft first and
rl gets what remains; the shortfall is logged and counted.

File and hub sources (``load_file_source``): records are read by ``tasks/data/io.py``, converted by
the kind's adapter (``tasks/data/adapters.py``, ``tasks/data/gsm8k.py``); each unusable record is
dropped with ``{source, where, reason}`` (file and line) appended to ``drops``. A row's id is the
label plus the source's own id (MBPP ``task_id``, a mapped id column) or a hash of its prompt; a
repeated own id is a bad row (the first wins). ``weight`` < 1 keeps a hash-chosen share of rows;
the split hashes the id (``split_of``), so adding rows never moves existing ones. More than half
the records bad means the file is not in the format its kind says: an error naming it.
"""

from __future__ import annotations

import hashlib
import logging

from tasks.config.curate import ColumnsSource, FileSource, SyntheticSource
from tasks.data import adapters
from tasks.data.gsm8k import adapt_gsm8k, split_of, stable_hash
from tasks.data.io import Bad, SourceError, csv_header, is_local, read_records
from tasks.data.synthetic import generate_family

log = logging.getLogger(__name__)

SPLITS = ("sft", "rl", "eval")
COLUMNS = ("id", "source", "prompt", "answer", "difficulty", "solution")
EXTRA_COLUMNS = ("tests", "rewards", "type", "pass_rate")
# The rewards of a math row, written out when the rewards column exists (code rows: code,format).
MATH_REWARDS = "accuracy,format,tag_count,length"
ADAPTERS = {
    "gsm8k": adapt_gsm8k,
    "math": adapters.adapt_math,
    "numina": adapters.adapt_numina,
    "mbpp": adapters.adapt_mbpp,
    "stdio": adapters.adapt_stdio,
    "columns": adapters.adapt_columns,
}
FORMAT_NAMES = {"gsm8k": "GSM8K", "math": "MATH", "numina": "NuminaMath", "mbpp": "MBPP"}


def load_synthetic(spec: SyntheticSource, seed: int, stats: dict[str, int]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    n_eval, n_sft = spec.eval_per_family, spec.sft_per_family
    asked = n_eval + n_sft + spec.rl_per_family
    for family in spec.families:
        rows = generate_family(family, asked, seed)
        if len(rows) < asked:
            short = asked - len(rows)
            stats["shortfall"] = stats.get("shortfall", 0) + short
            log.warning("%s: %d distinct problems of %d asked; rl gets %d", family, len(rows), asked,
                        max(0, len(rows) - n_eval - n_sft))
        out["eval"] += rows[:n_eval]
        out["sft"] += rows[n_eval : n_eval + n_sft]
        out["rl"] += [{**r, "solution": None} for r in rows[n_eval + n_sft :]]
    return out


def _kept_by_weight(row_id: str, weight: float) -> bool:
    return weight >= 1 or int(hashlib.sha256(f"weight:{row_id}".encode()).hexdigest()[:15], 16) / 16**15 < weight


def _check_columns(spec: ColumnsSource) -> None:
    """A CSV must have every mapped column in its header: an error naming the file and column."""
    if not (is_local(spec.path) and spec.path.endswith(".csv")):
        return
    from pathlib import Path

    from tasks.data.io import check_local

    header = set(csv_header(check_local(spec.path))) if Path(spec.path).is_file() else set()
    for field, column in spec.columns.model_dump().items():
        if column is not None and column not in header:
            raise SourceError(f"{spec.path}: no column {column!r} (mapped as columns.{field}); header has {sorted(header)}")


def load_file_source(spec: FileSource, revision: str | None, drops: list[dict]) -> dict[str, list[dict]]:
    """Rows of one file/hub source keyed by split; bad records go to ``drops`` with file and line."""
    if isinstance(spec, ColumnsSource):
        _check_columns(spec)
    adapt, label = ADAPTERS[spec.kind], spec.label
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    seen: dict[str, str] = {}
    n_seen = n_bad = 0
    # openai/gsm8k keeps its rows in the config "main"; other hub ids and local dirs name their own.
    subset = spec.subset or ("main" if spec.kind == "gsm8k" and not is_local(spec.path) else None)
    for where, record in read_records(spec.path, revision, spec.split, subset):
        if spec.limit is not None and n_seen >= spec.limit:
            break
        n_seen += 1
        row = adapt_record(adapt, record, spec)
        if isinstance(row, dict):
            own = adapters.source_id(record, spec)
            row = {"id": f"{label}-{own if own is not None else stable_hash(row['prompt'])}", "source": label, **row}
            if own is not None and row["id"] in seen:
                row = f"duplicate id ({own}; first at {seen[row['id']]})"
            elif own is not None:
                seen[row["id"]] = where
        if isinstance(row, str):
            n_bad += 1
            drops.append({"source": label, "where": where, "reason": row})
            continue
        if not _kept_by_weight(row["id"], spec.weight):
            continue
        split = split_of(row["id"], spec.sft_fraction, spec.eval_fraction)
        if split == "sft" and row.get("solution") is None:
            split = "rl"  # the cold start needs a worked trace; a row without one is an RL prompt
        out[split].append(row if split != "rl" else {**row, "solution": None})
    if n_seen == 0:
        raise SourceError(f"{spec.path}: no rows")
    if n_bad * 2 > n_seen:
        first = "; ".join(f"{d['where']}: {d['reason']}" for d in drops[-n_bad:][:3])
        raise SourceError(f"{spec.path}: {n_bad} of {n_seen} rows are not {FORMAT_NAMES.get(spec.kind, spec.kind)} "
                          f"format (e.g. {first})")
    if n_bad:
        log.warning("%s: dropped %d malformed rows", spec.path, n_bad)
    return out


def adapt_record(adapt, record, spec) -> dict | str:
    if isinstance(record, Bad):
        return record.reason
    try:
        return adapt(record, spec)
    except ValueError as e:  # the adapters' field checks name the field
        return str(e)


def load_source(spec, seed: int, stats: dict[str, int] | None = None, revision: str | None = None,
                drops: list[dict] | None = None) -> dict[str, list[dict]]:
    """Rows of one source, keyed by split.

    ``stats``, when given, receives counts the caller reports: ``bad_rows`` (malformed rows dropped)
    and ``shortfall`` (synthetic problems asked for but not distinct enough to exist). ``drops``
    receives each dropped record's ``{source, where, reason}``.
    """
    stats = {} if stats is None else stats
    if isinstance(spec, SyntheticSource):
        return load_synthetic(spec, seed, stats)
    drops = [] if drops is None else drops
    before = len(drops)
    splits = load_file_source(spec, revision if revision is not None else spec.revision, drops)
    stats["bad_rows"] = stats.get("bad_rows", 0) + len(drops) - before
    return splits
