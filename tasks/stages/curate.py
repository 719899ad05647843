"""The curate stage: sources -> clean splits -> data gate -> ``data/curated/{sft,rl,eval}.parquet``.

    python -m tasks.stages.curate [--params params.yaml] [-S curate.seed=1 ...]

Order of work, and why:
1. Validate the whole params file (a ConfigError exits 2 before anything runs or is written).
2. Load every configured source into sft/rl/eval rows (tasks/data/sources.py).
3. Normalise, dedup each split, decontaminate sft and rl against eval: eval wins every collision.
4. Run the Great Expectations gate on all three splits. Any failure exits 1 with the report, and
   nothing is written, so a downstream stage can never read half-good data.
5. Write parquet (explicit schema, no pandas index; rl shuffled by the seed), a dataset card and
   ``metrics/curate.json``, each through a temp file and an atomic rename. No timestamps go in
   any output, so the same params give byte-identical files (and DVC sees no change).
6. Log counts, the card and the parquet md5s to MLflow (a nested run under the pipeline's run).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from pathlib import Path

from tasks.config import stage_cli
from tasks.config.curate import CurateConfig, Gsm8kSource
from tasks.data.clean import clean_splits
from tasks.data.gsm8k import SOURCE as GSM8K
from tasks.data.gsm8k import SourceError
from tasks.data.sources import COLUMNS, SPLITS, load_source
from tasks.data.validate import DataValidationError, validate_splits

log = logging.getLogger("tasks.stages.curate")

METRICS_FILE = Path("metrics/curate.json")


# ----------------------------------------------------------------------------- build
def known_sources(cfg: CurateConfig) -> set[str]:
    """Every ``source`` value the configured sources may produce (what the gate accepts)."""
    names: set[str] = set()
    for spec in cfg.sources:
        names |= {GSM8K} if isinstance(spec, Gsm8kSource) else set(spec.families)
    return names


def build(cfg: CurateConfig) -> tuple[dict[str, list[dict]], dict]:
    """Load and clean every source; return (splits, report). Pure apart from reading sources."""
    merged: dict[str, list[dict]] = {s: [] for s in SPLITS}
    bad_rows: dict[str, int] = {}
    shortfall = 0
    for spec in cfg.sources:
        stats: dict[str, int] = {}
        for split, rows in load_source(spec, cfg.seed, stats).items():
            merged[split] += rows
        bad_rows[spec.kind] = bad_rows.get(spec.kind, 0) + stats.get("bad_rows", 0)
        shortfall += stats.get("shortfall", 0)
    splits, report = clean_splits(merged, bad_rows)
    # RL is sampled by the trainer; shuffle once here so a prefix is already a mix of sources.
    random.Random(f"curate-rl:{cfg.seed}").shuffle(splits["rl"])
    report["rows"] = {s: len(splits[s]) for s in SPLITS}
    report["shortfall"] = shortfall
    return splits, report


def to_frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows, columns=list(COLUMNS))


# ----------------------------------------------------------------------------- write
def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("id", pa.string()), ("source", pa.string()), ("prompt", pa.string()), ("answer", pa.string()),
         ("difficulty", pa.int64()), ("solution", pa.string())]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    _atomic_write(path, lambda p: pq.write_table(table, p))


def write_text(text: str, path: Path) -> None:
    _atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def dataset_card(cfg: CurateConfig, report: dict, md5s: dict[str, str]) -> str:
    """A short markdown card: provenance, counts, filters. Deterministic (no dates)."""
    out = ["# Curated dataset", "", f"Built by `python -m tasks.stages.curate` with seed {cfg.seed}.", "", "## Sources", ""]
    for spec in cfg.sources:
        fields = ", ".join(f"{k}={v}" for k, v in spec.model_dump().items() if k != "kind")
        out.append(f"- **{spec.kind}**: {fields}")
    sources = sorted({s for split in SPLITS for s in report["counts"][split]})
    out += ["", "## Rows per source and split", ""]
    rows = [[s, *(report["counts"][sp].get(s, 0) for sp in SPLITS)] for s in sources]
    rows.append(["**total**", *(report["rows"][sp] for sp in SPLITS)])
    out += _table(["source", *SPLITS], rows)
    filters = report["filters"]
    out += ["", "## Filters (rows removed)", ""]
    out += _table(["filter", *SPLITS], [[f, *(filters[f].get(sp, 0) for sp in SPLITS)] for f in ("dedup", "decontam")])
    bad = ", ".join(f"{k}: {v}" for k, v in filters["bad_rows"].items()) or "none"
    out += ["", f"Malformed rows dropped at load: {bad}.",
            f"Synthetic problems asked for but not distinct enough to exist: {report['shortfall']}.",
            "", "Dedup keys on the NFKC, whitespace-collapsed prompt. Decontamination removes sft/rl rows whose",
            "prompt equals an eval prompt or, above 50 characters, shares a 13-word n-gram with one.",
            "", "## Schema", "",
            "`id`, `source`, `prompt`, `answer` (strings); `difficulty` (int; -1 = unlabelled real data);",
            "`solution` (`<think>...</think><answer>...</answer>` on sft and eval rows, null on rl rows).",
            "", "## Files (md5)", ""]
    out += [f"- `{name}`: `{digest}`" for name, digest in md5s.items()]
    return "\n".join(out) + "\n"


def flat_metrics(report: dict) -> dict[str, float]:
    m: dict[str, float] = {f"rows.{s}": n for s, n in report["rows"].items()}
    m |= {f"count.{sp}.{src}": n for sp, c in report["counts"].items() for src, n in c.items()}
    m |= {f"filter.{f}.{k}": n for f, c in report["filters"].items() for k, n in c.items()}
    m["shortfall"] = report["shortfall"]
    return m


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args, params = stage_cli(__doc__, argv)
    # Our own loggers at INFO; libraries (GX is chatty) at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("tasks").setLevel(logging.INFO)
    cfg = params.curate

    t0 = time.perf_counter()
    try:
        splits, report = build(cfg)
        t1 = time.perf_counter()
        frames = {s: to_frame(splits[s]) for s in SPLITS}
        gate = validate_splits(frames, cfg.limits, known_sources(cfg))
    except (SourceError, DataValidationError) as e:
        print(str(e), file=sys.stderr)
        return 1
    t2 = time.perf_counter()
    log.info("built %s in %.2fs; data gate passed in %.2fs", report["rows"], t1 - t0, t2 - t1)

    from tasks.tracking import md5, stage_run

    out = Path(cfg.out_dir)
    paths = {s: out / f"{s}.parquet" for s in SPLITS}
    for s in SPLITS:
        write_parquet(splits[s], paths[s])
    card = dataset_card(cfg, report, {p.name: md5(p) for p in paths.values()})
    write_text(card, out / "card.md")
    write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", METRICS_FILE)

    with stage_run(params.tracking, "curate", cfg.model_dump()) as run:
        run.log_metrics(flat_metrics(report) | {"time.build_s": t1 - t0, "time.gate_s": t2 - t1})
        run.log_artifact(out / "card.md")
        run.log_text("\n".join(r.render() for r in gate) + "\n", "validation.txt")
        run.log_input_files(list(paths.values()))
    log.info("wrote %s and %s", out, METRICS_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
