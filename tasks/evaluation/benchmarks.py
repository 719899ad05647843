"""Eval sets: the held-out split and benchmark files, loaded through the data adapters.

Each benchmark in ``evaluate.benchmarks`` is read by ``tasks/data/io.py`` and converted by the
curate adapters (``tasks/data/adapters.py``), the same code that curates training data, so a
benchmark row and a training row mean the same thing. Every record goes to evaluation (no split).

Formats: ``gsm8k`` (question, answer ending ``#### n``), ``math`` (MATH: problem, solution with
``\\boxed{}``), ``numina`` (MATH-500: problem, solution, answer; the answer column wins), ``mbpp``
(code, scored by the sandboxed code reward), ``aime`` (problem + integer answer: the ``columns``
adapter with ``problem``/``answer``/``id``, then the answer must be an integer) and ``columns``
(any table, mapped). A hub id needs a pinned ``revision``; it is resolved to a commit sha and
loaded at that sha, which goes into the eval spec with the local files' md5.

Bad records are dropped and counted with file, line and reason (the adapters' rule); more than
half bad is an error naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from tasks.config.curate import ColumnMap, ColumnsSource, Gsm8kSource, MathSource, MbppSource, NuminaSource
from tasks.config.evaluate import EvalSet
from tasks.data.fingerprint import local_digest, resolve_revision
from tasks.data.io import SourceError, is_hub
from tasks.data.sources import load_file_source

ROW_KEYS = ("id", "source", "prompt", "answer", "tests", "rewards")
_CLASSES = {"gsm8k": Gsm8kSource, "math": MathSource, "numina": NuminaSource, "mbpp": MbppSource}
_INTEGER = re.compile(r"-?\d+")
AIME_COLUMNS = ColumnMap(prompt="problem", answer="answer", id="id")


def _source(bench: EvalSet):
    common = {
        "name": bench.label,
        "path": bench.path,
        "revision": bench.revision,
        "subset": bench.subset,
        "split": bench.split,
        "limit": bench.limit,
        "sft_fraction": 0.0,
        "eval_fraction": 1.0,
    }
    if bench.kind in ("columns", "aime"):
        return ColumnsSource(kind="columns", columns=bench.columns or AIME_COLUMNS, **common)
    return _CLASSES[bench.kind](**common)


def _keep(row: dict) -> dict:
    return {k: row[k] for k in ROW_KEYS if row.get(k) is not None}


def load_benchmark(bench: EvalSet, where: str, drops: list[dict]) -> tuple[list[dict], dict]:
    """The rows of one benchmark and its spec entry ``{label, kind, path, digest, items}``."""
    if is_hub(bench.path):
        if not bench.revision:
            raise SourceError(f"{where}.revision: hub dataset {bench.path} needs a pinned revision")
        resolved = resolve_revision(bench.path, bench.revision)
        entry = {"revision": bench.revision, "resolved": resolved}
    else:
        resolved, entry = None, local_digest(bench.path)
    rows = [_keep(r) for r in load_file_source(_source(bench), resolved, drops)["eval"]]
    if bench.kind == "aime":
        bad = [r for r in rows if not _INTEGER.fullmatch(r["answer"])]
        drops += [
            {"source": bench.label, "where": r["id"], "reason": "answer is not an integer (answer)"}
            for r in bad
        ]
        rows = [r for r in rows if _INTEGER.fullmatch(r["answer"])]
    if not rows:
        raise SourceError(f"{bench.path}: no usable rows for {where}")
    return rows, {"label": bench.label, "kind": bench.kind, "path": bench.path, **entry, "items": len(rows)}


def load_heldout(path: str) -> tuple[list[dict], dict]:
    df = pd.read_parquet(path)
    rows = [_keep(r) for r in df[[c for c in ROW_KEYS if c in df.columns]].to_dict("records")]
    return rows, {
        "label": "heldout",
        "kind": "parquet",
        "path": path,
        **local_digest(path),
        "items": len(rows),
    }


def load_eval_sets(
    heldout: str | None, benchmarks: list[EvalSet]
) -> tuple[list[dict], list[dict], list[dict]]:
    """All eval rows, the spec's data entries, and the dropped records."""
    rows: list[dict] = []
    data: list[dict] = []
    drops: list[dict] = []
    if heldout:
        if not Path(heldout).is_file():
            raise SourceError(f"{heldout}: held-out split not found")
        r, d = load_heldout(heldout)
        rows, data = rows + r, data + [d]
    for i, bench in enumerate(benchmarks):
        r, d = load_benchmark(bench, f"evaluate.benchmarks.{i}", drops)
        clash = {x["source"] for x in rows} & {x["source"] for x in r}
        if clash:
            raise SourceError(
                f"evaluate.benchmarks.{i}: source label {sorted(clash)[0]!r} is used twice; set `name`"
            )
        rows, data = rows + r, data + [d]
    return rows, data, drops
