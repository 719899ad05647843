"""Evaluation statistics as plain functions: pass@k, per-source means, bootstrap CIs.

- pass@k uses the unbiased estimator of Chen et al. (2021): with n samples of which c are
  correct, pass@k = 1 - C(n-c, k) / C(n, k), computed as a running product to avoid huge
  binomials.
- The headline accuracy is the *mean over sources* of each source's accuracy, so a large source
  cannot drown a small one (and the number matches how the suite was designed).
- The GRPO-SFT difference CI is a paired, stratified bootstrap: resample prompts with replacement
  within each source, keep the pairing of the two models on each prompt, recompute the
  mean-over-sources difference; the 2.5% and 97.5% quantiles bound the 95% interval.
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


def paired_bootstrap_diff(
    a: np.ndarray, b: np.ndarray, sources: np.ndarray, samples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Mean-over-sources of (a - b) and its 95% CI by a stratified paired bootstrap."""
    rng = np.random.default_rng(seed)
    diff = a.astype(float) - b.astype(float)
    groups = [diff[sources == s] for s in np.unique(sources)]
    boots = np.empty(samples)
    for i in range(samples):
        boots[i] = np.mean([g[rng.integers(0, len(g), len(g))].mean() for g in groups])
    q: np.ndarray = np.quantile(boots, [0.025, 0.975])
    return {"diff": float(np.mean([g.mean() for g in groups])), "ci95_low": float(q[0]), "ci95_high": float(q[1])}
