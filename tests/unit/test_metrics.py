"""pass@k, per-source means and the paired stratified bootstrap, against closed forms."""

import math

import numpy as np
import pytest

from tasks.metrics import mean_over_sources, paired_bootstrap_diff, pass_at_k, per_source_means


# ----------------------------------------------------------------------------- pass@k
def test_pass_at_k_matches_the_closed_form_everywhere_up_to_ten():
    # 1 - C(n-c, k) / C(n, k), with math.comb(n-c, k) = 0 when k > n-c (some correct sample is
    # always among any k), for every 0 <= c <= n <= 10 and 1 <= k <= n.
    checked = 0
    for n in range(1, 11):
        for c in range(n + 1):
            for k in range(1, n + 1):
                want = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12), (n, c, k)
                checked += 1
    assert checked == sum((n + 1) * n for n in range(1, 11))  # 440 cases, none skipped


def test_pass_at_k_hand_values():
    assert pass_at_k(10, 0, 5) == 0.0  # nothing correct
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 = c / n
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 2, 4) == 1.0  # n - c = 3 < k: any 4 samples include a correct one


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5), (0, 0, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match=f"n={n} c={c} k={k}"):
        pass_at_k(n, c, k)


# ----------------------------------------------------------------------------- per-source means
def test_mean_over_sources_weighs_sources_equally():
    # a: (1 + 0 + 0 + 0) / 4 = 0.25; b: (1 + 1) / 2 = 1.0 -> mean of means 0.625 (the pooled mean
    # would be 3/6 = 0.5)
    values = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    sources = np.array(["a", "a", "a", "a", "b", "b"])
    assert mean_over_sources(values, sources) == pytest.approx(0.625)
    assert per_source_means(values, sources) == {"a": 0.25, "b": 1.0}


# ----------------------------------------------------------------------------- bootstrap
SOURCES = np.array(["x", "x", "x", "y", "y"])


def test_identical_models_differ_by_exactly_zero():
    a = np.array([1, 0, 1, 1, 0])
    out = paired_bootstrap_diff(a, a.copy(), SOURCES, samples=200, seed=0)
    assert out == {"diff": 0.0, "ci95_low": 0.0, "ci95_high": 0.0}


def test_constant_shift_in_one_source():
    # a = b + 1 on every x prompt, a = b on every y prompt: per-source diffs are 1 and 0, so the
    # mean over sources is 0.5 - and so is every bootstrap replicate (each resample of x still
    # averages 1), so the CI collapses to [0.5, 0.5].
    b = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    a = b + np.array([1.0, 1.0, 1.0, 0.0, 0.0])
    out = paired_bootstrap_diff(a, b, SOURCES, samples=200, seed=0)
    assert out["diff"] == pytest.approx(0.5, abs=1e-12)
    assert out["ci95_low"] == pytest.approx(0.5, abs=1e-12)
    assert out["ci95_high"] == pytest.approx(0.5, abs=1e-12)


def test_diff_by_hand_and_ci_contains_it():
    # x: a - b = (1, 0, 0) -> 1/3; y: a - b = (-1, 0) -> -1/2; diff = (1/3 - 1/2) / 2 = -1/12
    a = np.array([1, 1, 0, 0, 1])
    b = np.array([0, 1, 0, 1, 1])
    out = paired_bootstrap_diff(a, b, SOURCES, samples=500, seed=3)
    assert out["diff"] == pytest.approx(-1 / 12, abs=1e-12)
    assert out["ci95_low"] <= out["diff"] <= out["ci95_high"]
    assert out["ci95_low"] < out["ci95_high"]  # the resamples do vary here
    # every replicate is a mean of a resampled x mean (in {0, 1/3, 2/3, 1}) and a y mean
    # (in {-1, -1/2, 0}), so the CI lies within [(0 - 1)/2, (1 + 0)/2]
    assert -0.5 <= out["ci95_low"] and out["ci95_high"] <= 0.5


def test_bootstrap_is_deterministic_for_a_seed():
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 2, 60), rng.integers(0, 2, 60)
    sources = np.array(["p", "q", "r"] * 20)
    first = paired_bootstrap_diff(a, b, sources, samples=300, seed=11)
    assert paired_bootstrap_diff(a, b, sources, samples=300, seed=11) == first
    other = paired_bootstrap_diff(a, b, sources, samples=300, seed=12)
    assert other["diff"] == first["diff"]  # the point estimate does not depend on the seed
    assert (other["ci95_low"], other["ci95_high"]) != (first["ci95_low"], first["ci95_high"])
    assert first["ci95_low"] <= first["diff"] <= first["ci95_high"]
