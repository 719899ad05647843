"""Load one configured source into rows already assigned to the ``sft``, ``rl`` and ``eval`` splits.

Row schema (every source, every split)::

    {id: str, source: str, prompt: str, answer: str, difficulty: int, solution: str | None}

``difficulty`` is the synthetic family's level (1 = easiest) and -1 for real data, which has none
(-1 rather than null keeps the parquet column a plain int64). ``solution`` is a worked trace
``<think>...</think><answer>...</answer>`` on sft and eval rows and None on rl rows: RL needs only
the verifiable answer, and worked solutions are the scarce resource by design.

Synthetic: each family is generated once with ``sft + rl + eval`` problems (distinct within the
family); the first ``eval_per_family`` go to eval, the next ``sft_per_family`` to sft, the rest to
rl. A family with fewer distinct problems than asked (add_1d has 100) fills eval and sft first and
rl gets what remains; the shortfall is logged and counted.

GSM8K-format: see ``tasks/data/gsm8k.py``; malformed rows are counted as ``bad_rows``.
"""

from __future__ import annotations

import logging

from tasks.config.curate import Gsm8kSource, SyntheticSource
from tasks.data.gsm8k import load_gsm8k
from tasks.data.synthetic import generate_family

log = logging.getLogger(__name__)

SPLITS = ("sft", "rl", "eval")
COLUMNS = ("id", "source", "prompt", "answer", "difficulty", "solution")


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


def load_source(
    spec: SyntheticSource | Gsm8kSource, seed: int, stats: dict[str, int] | None = None
) -> dict[str, list[dict]]:
    """Rows of one source, keyed by split.

    ``stats``, when given, receives counts the caller reports: ``bad_rows`` (malformed rows dropped)
    and ``shortfall`` (synthetic problems asked for but not distinct enough to exist).
    """
    stats = {} if stats is None else stats
    if isinstance(spec, SyntheticSource):
        return load_synthetic(spec, seed, stats)
    if isinstance(spec, Gsm8kSource):
        splits, n_bad = load_gsm8k(
            spec.path, spec.revision, spec.split, spec.limit, spec.sft_fraction, spec.eval_fraction
        )
        stats["bad_rows"] = stats.get("bad_rows", 0) + n_bad
        if n_bad:
            log.warning("%s: dropped %d malformed rows", spec.path, n_bad)
        return splits
    raise TypeError(f"unknown source spec {type(spec).__name__}")
