"""Evaluation statistics as plain functions: pass@k, mean@n, maj@k, per-source means, bootstrap CIs.

- pass@k uses the unbiased estimator of Chen et al. (2021): with n samples of which c are
  correct, pass@k = 1 - C(n-c, k) / C(n, k), computed as a running product to avoid huge
  binomials.
- The headline accuracy is the *mean over sources* of each source's accuracy, so a large source
  cannot drown a small one (and the number matches how the suite was designed).
- The GRPO-SFT difference CI is a paired, stratified bootstrap: resample prompts with replacement
  within each source, keep the pairing of the two models on each prompt, recompute the
  mean-over-sources difference; the 2.5% and 97.5% quantiles bound the 95% interval. Given
  per-sample matrices ``[problems, n]`` (mean@n) it also resamples the n samples within each
  drawn problem (a two-level bootstrap: problems, then samples), independently per model, since
  sample j of one model has nothing to do with sample j of another.
- ``bootstrap_ci`` is the same stratified resampling for one model's headline metric. Sources
  given as one constant label make it a plain (pooled) mean's CI.
- mean@n is the mean verdict over all n samples of a problem (what DeepSeek-R1 and open-r1 call
  pass@1 with n samples); maj@k votes over the *first* k samples of a problem: the most frequent
  extracted answer wins (ties: the one seen first), samples with no answer do not vote, and the
  problem counts as solved when the winning answer's verdict is correct. Answers are compared as
  normalised strings, so ``0.5`` and ``1/2`` are two candidates (a documented simplification).
"""

from __future__ import annotations

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one prompt.

    >>> pass_at_k(4, 1, 1)
    0.25
    >>> round(pass_at_k(4, 1, 2), 4)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    0.5
    >>> pass_at_k(4, 0, 4), pass_at_k(4, 3, 2)
    (0.0, 1.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_at_n(correct: np.ndarray) -> np.ndarray:
    """Per-problem mean verdict over its n samples: ``[problems, n]`` -> ``[problems]``.

    >>> mean_at_n(np.array([[1, 0, 0, 1], [0, 0, 0, 0]])).tolist()
    [0.5, 0.0]
    """
    return np.asarray(correct, dtype=float).mean(axis=1)


def maj_at_k(answers: list[str | None], correct: list[bool], k: int) -> float:
    """1.0 when the majority answer of the first ``k`` samples is correct, else 0.0.

    >>> maj_at_k(["3", "4", "4", None], [True, False, False, False], 4)  # "4" wins 2-1
    0.0
    >>> maj_at_k(["3", "4", "4", "3"], [True, False, False, True], 4)  # tie: "3" came first
    1.0
    >>> maj_at_k(["3", "4", "4", "3"], [True, False, False, True], 1)
    1.0
    """
    if not 1 <= k <= len(answers) or len(answers) != len(correct):
        raise ValueError(f"need 1 <= k <= n and one verdict per answer, got k={k} n={len(answers)}")
    votes: dict[str, list] = {}  # answer -> [count, first index, verdict]; dicts keep insertion order
    for i, (a, ok) in enumerate(zip(answers[:k], correct[:k])):
        if a is None:
            continue
        v = votes.setdefault(a, [0, i, bool(ok)])
        v[0] += 1
    if not votes:
        return 0.0
    best = max(votes.values(), key=lambda v: (v[0], -v[1]))
    return float(best[2])


def per_source_means(values: np.ndarray, sources: np.ndarray) -> dict[str, float]:
    """Mean of ``values`` per source, sources sorted: the one per-source aggregation (evaluation,
    GRPO's training accuracy, the curriculum experiment).

    >>> per_source_means(np.array([1.0, 0.0, 1.0]), np.array(["b", "a", "b"]))
    {'a': 0.0, 'b': 1.0}
    """
    return {str(s): float(values[sources == s].mean()) for s in np.unique(sources)}


def mean_over_sources(values: np.ndarray, sources: np.ndarray) -> float:
    """Mean of per-source means.

    >>> mean_over_sources(np.array([1.0, 0.0, 0.0, 1.0, 1.0]), np.array(["a", "a", "a", "b", "b"]))
    0.6666666666666666
    """
    return float(np.mean(list(per_source_means(values, sources).values())))


def _resample_samples(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-problem means of ``x`` ``[m, n]`` after drawing each problem's n samples with replacement."""
    cols = rng.integers(0, x.shape[1], x.shape)
    return np.take_along_axis(x, cols, axis=1).mean(axis=1)


def paired_bootstrap_diff(
    a: np.ndarray, b: np.ndarray, sources: np.ndarray, samples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Mean-over-sources of (a - b) and its 95% CI by a stratified paired bootstrap.

    ``a`` and ``b`` are per-problem values ``[N]`` or per-sample verdicts ``[N, n]`` (then each
    drawn problem's samples are redrawn too, per model).
    """
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape[0] != b.shape[0] or a.shape[0] != len(sources):
        raise ValueError(
            f"paired bootstrap needs the same items: {a.shape[0]} vs {b.shape[0]} vs {len(sources)}"
        )
    labels = np.unique(sources)
    if a.ndim == 1 and b.ndim == 1:
        diff = a - b
        groups = [diff[sources == s] for s in labels]
        boots = np.empty(samples)
        for i in range(samples):
            boots[i] = np.mean([g[rng.integers(0, len(g), len(g))].mean() for g in groups])
        point = float(np.mean([g.mean() for g in groups]))
    else:
        pairs = [(a[sources == s], b[sources == s]) for s in labels]
        boots = np.empty(samples)
        for i in range(samples):
            means = []
            for ga, gb in pairs:
                idx = rng.integers(0, len(ga), len(ga))
                ra = _resample_samples(ga[idx], rng) if ga.ndim == 2 else ga[idx]
                rb = _resample_samples(gb[idx], rng) if gb.ndim == 2 else gb[idx]
                means.append((ra - rb).mean())
            boots[i] = np.mean(means)
        point = float(np.mean([_row_mean(ga).mean() - _row_mean(gb).mean() for ga, gb in pairs]))
    q: np.ndarray = np.quantile(boots, [0.025, 0.975])
    return {"diff": point, "ci95_low": float(q[0]), "ci95_high": float(q[1])}


def _row_mean(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=1) if x.ndim == 2 else x


def bootstrap_ci(
    values: np.ndarray, sources: np.ndarray, samples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% CI of the mean over sources of ``values`` ``[N]`` (or ``[N, n]``: two-level), stratified."""
    zeros = np.zeros_like(np.asarray(values, dtype=float))
    d = paired_bootstrap_diff(values, zeros, sources, samples, seed)
    return d["ci95_low"], d["ci95_high"]
