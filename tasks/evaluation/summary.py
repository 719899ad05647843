"""One model's metrics from its verdicts: per source and overall, each headline with a 95% CI.

Headline metrics and how "overall" aggregates them:

- mean over sources (each source weighs the same, the suite's design): greedy ``accuracy``,
  ``mean@n``, ``pass@k`` and ``maj@k`` for every k;
- pooled over items: ``format_rate``, ``truncation_rate``, ``mean_length`` and ``p95_length``
  (greedy completions, tokens).

CIs are stratified bootstraps over problems (``tasks.metrics.bootstrap_ci``; mean@n also redraws
the samples within each problem); ``p95_length``'s is a plain bootstrap of the quantile. All use
``seed``, so the same verdicts give the same intervals.
"""

from __future__ import annotations

import numpy as np

from tasks.evaluation.harness import ModelEval
from tasks.metrics import bootstrap_ci, maj_at_k, mean_at_n, mean_over_sources, pass_at_k, per_source_means


def item_metrics(ev: ModelEval, ks: list[int]) -> dict[str, np.ndarray]:
    """Per-item values of every mean-over-sources metric (mean@n as the ``[N, n]`` verdicts)."""
    n = ev.sample_correct.shape[1]
    c = ev.sample_correct.sum(1).astype(int)
    out: dict[str, np.ndarray] = {"accuracy": ev.correct, f"mean@{n}": ev.sample_correct.astype(float)}
    out |= {f"pass@{k}": np.array([pass_at_k(n, int(ci), k) for ci in c]) for k in ks}
    out |= {
        f"maj@{k}": np.array([maj_at_k(v, list(ok), k) for v, ok in zip(ev.votes, ev.sample_correct)])
        for k in ks
    }
    return out


def _p95_ci(lengths: np.ndarray, samples: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    boots = np.quantile(lengths[rng.integers(0, len(lengths), (samples, len(lengths)))], 0.95, axis=1)
    return [float(x) for x in np.quantile(boots, [0.025, 0.975])]


def summarise(ev: ModelEval, sources: np.ndarray, ks: list[int], samples: int, seed: int) -> dict:
    """The result dict of one model (``metrics/eval.json``'s entry for it)."""
    items = item_metrics(ev, ks)
    pooled = {"format_rate": ev.fmt, "truncation_rate": ev.truncated.astype(float), "mean_length": ev.lengths}
    one: np.ndarray = np.zeros(len(sources), dtype=int)  # one stratum: a pooled mean
    result: dict = {
        name: mean_over_sources(mean_at_n(v) if v.ndim == 2 else v, sources) for name, v in items.items()
    }
    result |= {name: float(v.mean()) for name, v in pooled.items()}
    result["p95_length"] = float(np.quantile(ev.lengths, 0.95))
    ci = {name: list(bootstrap_ci(v, sources, samples, seed)) for name, v in items.items()}
    ci |= {name: list(bootstrap_ci(v, one, samples, seed)) for name, v in pooled.items()}
    ci["p95_length"] = _p95_ci(ev.lengths, samples, seed)
    result |= {"ci95": ci, "reward_errors": ev.errors, "reward_timeouts": ev.timeouts}
    per_source: dict[str, dict] = {}
    per = {
        name: per_source_means(mean_at_n(v) if v.ndim == 2 else v, sources)
        for name, v in (items | pooled).items()
    }
    for s in np.unique(sources):
        key, mask = str(s), sources == s
        per_source[key] = {name: per[name][key] for name in per}
        per_source[key] |= {
            "p95_length": float(np.quantile(ev.lengths[mask], 0.95)),
            "n": int(mask.sum()),
            "accuracy_ci95": list(bootstrap_ci(ev.correct[mask], one[mask], samples, seed)),
        }
    result["per_source"] = per_source
    result["examples"] = ev.examples
    return result
