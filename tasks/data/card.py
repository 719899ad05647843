"""The dataset card (``data/curated/card.md``): provenance, counts after each filter, decontamination
hits, difficulty histogram and output hashes. Deterministic: no dates, so the same inputs give the
same bytes. Every matched (train id, benchmark item) pair is listed; dropped rows are listed up to
``MAX_LISTED`` with file, line and reason (all of them are in ``report.json`` beside the card).
"""

from __future__ import annotations

from collections import Counter

SPLITS = ("sft", "rl", "eval")
MAX_LISTED = 50
FILTERS = ("bad_rows", "length", "dedup", "near_dup", "decontam", "unverifiable", "difficulty_band")


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]


def _sources(cfg, report: dict) -> list[str]:
    out = ["## Sources", ""]
    for spec in cfg.sources:
        fields = ", ".join(f"{k}={v}" for k, v in spec.model_dump().items() if k != "kind" and v is not None)
        label = getattr(spec, "label", None)
        rev = report.get("revisions", {}).get(label) if label else None
        out.append(f"- **{spec.kind}**: {fields}" + (f"; resolved revision `{rev}`" if rev else ""))
    for b in cfg.decontam.benchmarks:
        out.append(f"- benchmark (decontamination only): `{b.path}`")
    return out


def _filters(report: dict) -> list[str]:
    by = report.get("by_source", {})
    labels = sorted({s for sp in SPLITS for s in report["counts"][sp]} | {s for f in by.values() for s in f})
    filters = report["filters"]
    out = ["", "## Rows removed by each filter, per source", ""]
    rows = []
    for s in labels:
        bad = filters["bad_rows"].get(s, 0)
        rows.append([s, bad, *(by.get(f, {}).get(s, 0) for f in FILTERS[1:])])
    out += _table(["source", *FILTERS], rows)
    out += ["", "Per split:", ""]
    out += _table(
        ["filter", *SPLITS],
        [[f, *(filters[f].get(sp, 0) for sp in SPLITS)] for f in ("dedup", "near_dup", "decontam")],
    )
    if reasons := report.get("unverifiable_reasons"):
        out += ["", "Unverifiable rows: " + "; ".join(f"{k}: {dict(v)}" for k, v in reasons.items()) + "."]
    out += ["", f"Synthetic problems asked for but not distinct enough to exist: {report['shortfall']}."]
    return out


def _pairs(report: dict) -> list[str]:
    pairs = report.get("decontam_pairs", [])
    out = ["", f"## Decontamination hits ({len(pairs)})", ""]
    if pairs:
        out += _table(
            ["train id", "split", "matched item"], [[p["id"], p["split"], p["item"]] for p in pairs]
        )
    near = report.get("near_dup_pairs", [])
    out += ["", f"Near-duplicates removed: {len(near)} (first {min(len(near), MAX_LISTED)} listed).", ""]
    if near:
        out += _table(
            ["removed id", "split", "kept id", "jaccard"],
            [[p["id"], p["split"], p["kept_id"], p["jaccard"]] for p in near[:MAX_LISTED]],
        )
    return out


def _drops(report: dict) -> list[str]:
    drops = report.get("drops", [])
    out = ["", f"## Dropped rows ({len(drops)}; first {min(len(drops), MAX_LISTED)} listed)", ""]
    cats = Counter((d["source"], d["reason"].split(" (")[0]) for d in drops)
    if cats:
        out += _table(["source", "reason", "rows"], [[s, r, n] for (s, r), n in sorted(cats.items())])
        out += [
            "",
            *_table(
                ["source", "where", "reason"],
                [[d["source"], d["where"], d["reason"]] for d in drops[:MAX_LISTED]],
            ),
        ]
    return out


def _difficulty(splits: dict[str, list[dict]]) -> list[str]:
    hist = Counter(r.get("difficulty", -1) for rows in splits.values() for r in rows)
    out = ["", "## Difficulty histogram (all splits; -1 = unlabelled)", ""]
    out += _table(["difficulty", "rows"], [[d, n] for d, n in sorted(hist.items())])
    rates = [r["pass_rate"] for rows in splits.values() for r in rows if r.get("pass_rate") is not None]
    if rates:
        bins = Counter(min(int(p * 10), 9) for p in rates)
        out += ["", "Estimated pass rate:", ""]
        out += _table(
            ["pass rate", "rows"], [[f"[{b / 10:.1f}, {(b + 1) / 10:.1f})", bins[b]] for b in range(10)]
        )
    return out


def dataset_card(
    cfg, report: dict, md5s: dict[str, str], splits: dict[str, list[dict]], columns: list[str]
) -> str:
    out = [
        "# Curated dataset",
        "",
        f"Built by `python -m tasks.stages.curate` with seed {cfg.seed}.",
        "",
        *_sources(cfg, report),
    ]
    labels = sorted({s for split in SPLITS for s in report["counts"][split]})
    out += ["", "## Rows per source and split", ""]
    rows = [[s, *(report["counts"][sp].get(s, 0) for sp in SPLITS)] for s in labels]
    rows.append(["**total**", *(report["rows"][sp] for sp in SPLITS)])
    out += _table(["source", *SPLITS], rows)
    out += _filters(report) + _pairs(report) + _drops(report) + _difficulty(splits)
    out += [
        "",
        "## Schema",
        "",
        ", ".join(f"`{c}`" for c in columns) + ".",
        "`difficulty` is an int (-1 = unlabelled); `solution` is `<think>...</think><answer>...</answer>` on",
        "sft and eval rows and null on rl rows; code rows carry JSON `tests` and `rewards` = `code,format`.",
        "",
        "## Files (md5)",
        "",
    ]
    out += [f"- `{name}`: `{digest}`" for name, digest in md5s.items()]
    return "\n".join(out) + "\n"
