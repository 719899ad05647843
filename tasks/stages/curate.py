"""The curate stage: sources -> clean splits -> data gate -> ``data/curated/{sft,rl,eval}.parquet``.

    python -m tasks.stages.curate [--params params.yaml] [-S curate.seed=1 ...]

Order of work, and why:
1. Validate the whole params file (a ConfigError exits 2 before anything runs or is written).
2. Load every configured source into sft/rl/eval rows (tasks/data/sources.py); a hub source loads
   at the commit the ``sources`` stage recorded in ``data/sources.json``. Each unusable record is
   dropped with file, line and reason; a missing or unreadable source exits 1 naming it.
3. Drop rows over the length limits (tasks/data/filters.py), before the gate, so one over-long row
   never fails the whole dataset.
4. Normalise, exact dedup, near-dedup (MinHash LSH), decontaminate sft and rl against eval and the
   configured benchmark files: eval wins every collision (tasks/data/clean.py, neardup.py).
5. Verify golds through the reward code (tasks/data/verify.py); optionally estimate pass rates
   (tasks/data/difficulty.py). A split emptied by the filters exits 1.
6. Run the Great Expectations gate on all three splits (rendering Data Docs). Any failure exits 1
   with the report, and nothing is written, so a downstream stage can never read half-good data.
7. Write parquet (explicit schema, no pandas index; rl shuffled by the seed), the dataset card,
   ``report.json`` (every drop and matched pair) and ``metrics/curate.json``, each through a temp
   file and an atomic rename. No timestamps go in any output, so the same params give
   byte-identical files (and DVC sees no change).
8. Log counts, the card, the report, the Data Docs and the parquet md5s (as MLflow dataset
   inputs) to MLflow (a nested run under the pipeline's run).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tasks.config import stage_cli
from tasks.config.curate import CurateConfig, SyntheticSource
from tasks.data.card import dataset_card
from tasks.data.clean import clean_splits, source_counts
from tasks.data.difficulty import apply_difficulty
from tasks.data.filters import benchmark_items, length_filter
from tasks.data.fingerprint import resolve_revision, resolved_revisions
from tasks.data.io import SourceError, is_hub
from tasks.data.sources import COLUMNS, EXTRA_COLUMNS, MATH_REWARDS, SPLITS, load_source
from tasks.data.validate import DataValidationError, validate_splits
from tasks.data.verify import verify_rows

log = logging.getLogger("tasks.stages.curate")

METRICS_FILE = Path("metrics/curate.json")


# ----------------------------------------------------------------------------- build
def known_sources(cfg: CurateConfig) -> set[str]:
    """Every ``source`` value the configured sources may produce (what the gate accepts)."""
    return set().union(*(spec.labels() for spec in cfg.sources))


def _revision(spec, recorded: dict[str, str]) -> str | None:
    """The commit a hub source loads at: the sha the ``sources`` stage recorded, else resolved now."""
    if isinstance(spec, SyntheticSource) or not is_hub(spec.path):
        return None
    return recorded.get(spec.label) or resolve_revision(spec.path, spec.revision)


def load_all(cfg: CurateConfig, drops: list[dict]) -> tuple[dict[str, list[dict]], dict]:
    """Every source's rows by split, and what loading found (bad rows, shortfall, revisions)."""
    recorded = resolved_revisions(cfg.fingerprint)
    merged: dict[str, list[dict]] = {s: [] for s in SPLITS}
    bad_rows: dict[str, int] = {}
    revisions: dict[str, str] = {}
    shortfall = 0
    for spec in cfg.sources:
        stats: dict[str, int] = {}
        rev = _revision(spec, recorded)
        if rev is not None:
            revisions[spec.label] = rev
        for split, rows in load_source(spec, cfg.seed, stats, rev, drops).items():
            merged[split] += rows
        key = spec.kind if isinstance(spec, SyntheticSource) else spec.label
        bad_rows[key] = bad_rows.get(key, 0) + stats.get("bad_rows", 0)
        shortfall += stats.get("shortfall", 0)
    return merged, {"bad_rows": bad_rows, "shortfall": shortfall, "revisions": revisions}


def _dropped_by_source(drops: list[dict]) -> dict[str, int]:
    return dict(sorted(Counter(d["source"] for d in drops).items()))


def build(cfg: CurateConfig) -> tuple[dict[str, list[dict]], dict]:
    """Load, filter and clean every source; return (splits, report). Pure apart from reading sources."""
    drops: list[dict] = []
    merged, loaded = load_all(cfg, drops)
    n_bad, loaded_rows = len(drops), {s: len(merged[s]) for s in SPLITS}
    merged = length_filter(merged, cfg.limits, drops)
    length_drops = drops[n_bad:]
    benchmarks = [item for b in cfg.decontam.benchmarks for item in benchmark_items(b)]
    splits, report = clean_splits(merged, loaded["bad_rows"], cfg.near_dup, cfg.decontam, benchmarks)
    n_before = len(drops)
    synthetic = set().union(*(s.labels() for s in cfg.sources if isinstance(s, SyntheticSource)))
    splits, unverifiable = verify_rows(splits, cfg.verify, synthetic, drops)
    n_verified = len(drops)
    if cfg.difficulty.enabled:
        splits = apply_difficulty(splits, cfg.difficulty, drops)
    # RL is sampled by the trainer; shuffle once here so a prefix is already a mix of sources.
    random.Random(f"curate-rl:{cfg.seed}").shuffle(splits["rl"])
    report["filters"]["length"] = _dropped_by_source(length_drops)
    report["filters"]["unverifiable"] = _dropped_by_source(drops[n_before:n_verified])
    report["filters"]["difficulty_band"] = _dropped_by_source(drops[n_verified:])
    report["by_source"] |= {f: report["filters"][f] for f in ("length", "unverifiable", "difficulty_band")}
    report["unverifiable_reasons"] = {k: dict(sorted(c.items())) for k, c in sorted(unverifiable.items())}
    report["counts"] = {s: source_counts(splits[s]) for s in SPLITS}
    report["rows"] = {s: len(splits[s]) for s in SPLITS}
    report["shortfall"] = loaded["shortfall"]
    report["revisions"] = loaded["revisions"]
    report["drops"] = drops
    emptied = [s for s in SPLITS if loaded_rows[s] and not splits[s]]
    if emptied:  # a whole split filtered away is a configuration problem, not a dataset
        raise DataValidationError(
            "data validation failed\n" + "\n".join(f"split {s!r}: all {loaded_rows[s]} rows were removed by the "
            f"filters (see limits, near_dup, decontam, verify); first drop: {_first_drop(drops, s)}" for s in emptied))
    return splits, report


def _first_drop(drops: list[dict], split: str) -> str:
    return f"{drops[0]['where']}: {drops[0]['reason']}" if drops else "none recorded (dedup or decontamination)"


def columns_of(splits: dict[str, list[dict]]) -> list[str]:
    """The row schema plus each optional column some row fills (the same for every split).

    Once any row lists its rewards (a code row), every row does: a math row gets the non-code
    rewards, so the column never holds a null (pandas reads a null string back as NaN, which is
    not a list of names).
    """
    extra = [c for c in EXTRA_COLUMNS if any(r.get(c) is not None for rows in splits.values() for r in rows)]
    if "rewards" in extra:
        for rows in splits.values():
            for r in rows:
                if r.get("rewards") is None:
                    r["rewards"] = MATH_REWARDS
    return list(COLUMNS) + extra


def to_frame(rows: list[dict], columns: list[str] | None = None):
    import pandas as pd

    return pd.DataFrame(rows, columns=columns or list(COLUMNS))


# ----------------------------------------------------------------------------- write
def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(rows: list[dict], path: Path, columns: list[str] | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"difficulty": pa.int64(), "pass_rate": pa.float64()}
    schema = pa.schema([(c, types.get(c, pa.string())) for c in columns or COLUMNS])
    table = pa.Table.from_pylist(rows, schema=schema)
    _atomic_write(path, lambda p: pq.write_table(table, p))


def write_text(text: str, path: Path) -> None:
    _atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def flat_metrics(report: dict) -> dict[str, float]:
    m: dict[str, float] = {f"rows.{s}": n for s, n in report["rows"].items()}
    m |= {f"count.{sp}.{src}": n for sp, c in report["counts"].items() for src, n in c.items()}
    m |= {f"filter.{f}.{k}": n for f, c in report["filters"].items() for k, n in c.items()}
    m["decontam_hits"] = len(report["decontam_pairs"])
    m["shortfall"] = report["shortfall"]
    return m


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args, params = stage_cli(__doc__, argv)
    # Our own loggers at INFO; libraries (GX is chatty) at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("tasks").setLevel(logging.INFO)
    cfg = params.curate

    # Data Docs carry GX run timestamps, so they live outside the DVC outputs (and go to MLflow).
    docs_dir = Path(tempfile.mkdtemp(prefix="r1flow-data-docs-"))
    t0 = time.perf_counter()
    try:
        splits, report = build(cfg)
        t1 = time.perf_counter()
        columns = columns_of(splits)
        frames = {s: to_frame(splits[s], columns) for s in SPLITS}
        gate = validate_splits(frames, cfg.limits, known_sources(cfg), str(docs_dir) if cfg.data_docs else None)
    except (SourceError, DataValidationError) as e:
        print(str(e), file=sys.stderr)
        if any(docs_dir.rglob("*.html")):
            print(f"GX Data Docs of the failed gate: {docs_dir / 'index.html'}", file=sys.stderr)
        return 1
    t2 = time.perf_counter()
    log.info("built %s in %.2fs; data gate passed in %.2fs", report["rows"], t1 - t0, t2 - t1)

    from tasks.tracking import md5, stage_run

    out = Path(cfg.out_dir)
    paths = {s: out / f"{s}.parquet" for s in SPLITS}
    for s in SPLITS:
        write_parquet(splits[s], paths[s], columns)
    card = dataset_card(cfg, report, {p.name: md5(p) for p in paths.values()}, splits, columns)
    write_text(card, out / "card.md")
    write_text(json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n", out / "report.json")
    counts = {k: v for k, v in report.items() if k not in ("drops", "decontam_pairs", "near_dup_pairs")}
    write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n", METRICS_FILE)

    with stage_run(params.tracking, "curate", cfg.model_dump()) as run:
        run.log_metrics(flat_metrics(report) | {"time.build_s": t1 - t0, "time.gate_s": t2 - t1})
        run.log_artifact(out / "card.md")
        run.log_artifact(out / "report.json")
        run.log_text("\n".join(r.render() for r in gate) + "\n", "validation.txt")
        if cfg.data_docs:
            run.log_artifacts(docs_dir, "data_docs")
        run.log_input_files(list(paths.values()))
    shutil.rmtree(docs_dir, ignore_errors=True)
    log.info("wrote %s and %s", out, METRICS_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
