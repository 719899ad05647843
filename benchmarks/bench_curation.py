"""Curation throughput and filter quality on 100k and 1M synthetic rows (``make bench-curation``).

Each size runs in its own process (so ``peak_mem_mb`` is that size's peak RSS), through the same
functions the curate stage calls: ``load_file_source`` on a jsonl file (``columns`` adapter),
``length_filter``, then ``clean_splits`` (normalise, exact dedup, MinHash LSH near-dup,
decontamination against a benchmark file). Rows are GSM8K-length word problems (30-60 words drawn
from a 5,000-word vocabulary, so unplanted rows share no 5-word shingle and no 13-gram); planted:

- 2% exact duplicates (an earlier row's prompt with other spacing);
- 2% near-duplicates (an earlier row with its last word replaced: Jaccard of 5-shingles >= 0.9);
- 1% contaminated rows (half a verbatim benchmark item, half a 20-word span of one inside other
  words), against 2,000 benchmark items given as ``decontam.benchmarks``.

Recall and precision compare what near-dup and decontamination removed with what was planted.
Targets (issue 17, 2 cores): >= 5,000 rows/s at 100k, 1M >= 0.9x that, recall and precision >= 0.95,
peak memory <= 4 GB. Writes ``benchmarks/results/curation.json``.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's tasks/, whatever the installed copy
RESULTS = ROOT / "benchmarks" / "results" / "curation.json"
SIZES = (100_000, 1_000_000)


def make_rows(n: int, seed: int = 0) -> tuple[list[dict], list[str], dict[str, set[str]]]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]

    def sentence(k: int) -> list[str]:
        return [rng.choice(vocab) for _ in range(k)]

    bench = [" ".join(sentence(rng.randint(30, 60))) for _ in range(2000)]
    rows: list[dict] = []
    planted: dict[str, set[str]] = {"exact": set(), "near": set(), "contam": set()}
    base: list[str] = []  # unplanted prompts, the only ones copied from
    for i in range(n):
        rid, u = f"r{i}", rng.random()
        if base and u < 0.02:
            prompt, kind = "  " + rng.choice(base).replace(" ", "  ", 3) + " ", "exact"
        elif base and u < 0.04:
            words = rng.choice(base).split()
            prompt, kind = " ".join(words[:-1] + [rng.choice(vocab) + "x"]), "near"
        elif u < 0.05:
            item = rng.choice(bench).split()
            span = item if rng.random() < 0.5 else sentence(10) + item[5:25] + sentence(10)
            prompt, kind = " ".join(span), "contam"
        else:
            prompt, kind = " ".join(sentence(rng.randint(30, 60))), None
            base.append(prompt)
        if kind:
            planted[kind].add(rid)
        rows.append({"id": rid, "question": prompt, "gold": str(rng.randint(0, 999))})
    return rows, bench, planted


def run_size(n: int) -> dict:
    from tasks.config.curate import Benchmark, ColumnsSource, DecontamConfig, GateBounds, NearDupConfig
    from tasks.data.clean import clean_splits
    from tasks.data.filters import benchmark_items, length_filter
    from tasks.data.sources import load_file_source

    rows, bench, planted = make_rows(n)
    tmp = Path(tempfile.mkdtemp(prefix="bench-curation-"))
    data, bench_file = tmp / "rows.jsonl", tmp / "bench.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench_file.write_text("".join(json.dumps({"problem": b}) + "\n" for b in bench))
    del rows
    spec = ColumnsSource(
        name="bench",
        path=str(data),
        sft_fraction=0.0,
        eval_fraction=0.0,
        columns={"prompt": "question", "answer": "gold", "id": "id"},
    )
    steps: dict[str, float] = {}
    t0, cpu0 = time.perf_counter(), time.process_time()
    splits = load_file_source(spec, None, [])
    steps["load"] = time.perf_counter() - t0
    t = time.perf_counter()
    splits = length_filter(splits, GateBounds(max_prompt_chars=4096), [])
    steps["length"] = time.perf_counter() - t
    items = list(benchmark_items(Benchmark(path=str(bench_file), name="bench")))
    out, report = clean_splits(splits, None, NearDupConfig(), DecontamConfig(), items, timings=steps)
    total, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    near_removed = {p["id"].removeprefix("bench-") for p in report["near_dup_pairs"]}
    contam_removed = {p["id"].removeprefix("bench-") for p in report["decontam_pairs"]}
    kept = {r["id"].removeprefix("bench-") for rows in out.values() for r in rows}
    # recall: planted rows absent from the output (a contaminated row may go as an exact copy of
    # another contaminated row first); precision: what the filter removed that was planted
    near_r = len(planted["near"] - kept) / max(1, len(planted["near"]))
    near_p = len(near_removed & planted["near"]) / max(1, len(near_removed))
    con_r = len(planted["contam"] - kept) / max(1, len(planted["contam"]))
    con_p = len(contam_removed & planted["contam"]) / max(1, len(contam_removed))
    return {
        "rows": n,
        "seconds": round(total, 2),
        "rows_per_s": round(n / total),
        "cpu_seconds": round(cpu, 2),
        "rows_per_cpu_s": round(n / cpu),
        "per_step_rows_per_s": {k: round(n / v) for k, v in steps.items() if v > 0},
        "per_step_s": {k: round(v, 2) for k, v in steps.items()},
        "planted": {k: len(v) for k, v in planted.items()},
        "removed": {
            "exact_dedup": sum(report["filters"]["dedup"].values()),
            "near_dup": len(near_removed),
            "decontam": len(contam_removed),
        },
        "near_dup_recall": round(near_r, 4),
        "near_dup_precision": round(near_p, 4),
        "contamination_recall": round(con_r, 4),
        "contamination_precision": round(con_p, 4),
        "peak_mem_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(run_size(int(sys.argv[2]))))
        return 0
    sizes = [int(s) for s in sys.argv[1:]] or list(SIZES)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for n in sizes:
        load = os.getloadavg()[0]
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(n)], capture_output=True, text=True, env=env
        )
        if proc.returncode:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        runs[n] = json.loads(proc.stdout.strip().splitlines()[-1]) | {"load_avg_1m_at_start": load}
        print(json.dumps(runs[n], indent=2))
    result = {"cpus": os.cpu_count(), "runs": {str(k): v for k, v in runs.items()}}
    if 100_000 in runs:
        r = runs[100_000]
        result |= {"rows_per_s_100k": r["rows_per_s"]}
        result |= {
            k: r[k]
            for k in (
                "near_dup_recall",
                "near_dup_precision",
                "contamination_recall",
                "contamination_precision",
            )
        }
    if 1_000_000 in runs:
        result["rows_per_s_1m"] = runs[1_000_000]["rows_per_s"]
    result["peak_mem_mb"] = max(r["peak_mem_mb"] for r in runs.values())
    result["per_step_rows_per_s"] = {str(k): v["per_step_rows_per_s"] for k, v in runs.items()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
