"""mean@n, maj@k, pass@k against hand-worked cases; the bootstraps against known answers; the eval
spec and the gate's decision rule."""

import math

import numpy as np
import pytest

from tasks.evaluation.gate import decide
from tasks.evaluation.harness import ModelEval
from tasks.evaluation.spec import digest, why_not_comparable
from tasks.evaluation.summary import item_metrics, summarise
from tasks.metrics import bootstrap_ci, maj_at_k, mean_at_n, paired_bootstrap_diff, pass_at_k


# ----------------------------------------------------------------------------- hand-worked
def test_mean_at_n_is_c_over_n_per_problem():
    c = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1]])
    assert mean_at_n(c).tolist() == [0.5, 1.0, 0.25]
    # mean@n equals unbiased pass@1 (pass@1 = c / n) on every problem
    assert [pass_at_k(4, int(x), 1) for x in c.sum(1)] == pytest.approx(mean_at_n(c))


def test_maj_at_k_hand_worked():
    answers = ["12", "13", "13", None, "12", "12"]
    ok = [True, False, False, False, True, True]
    assert maj_at_k(answers, ok, 1) == 1.0  # just "12"
    assert maj_at_k(answers, ok, 3) == 0.0  # "13" twice beats "12" once
    assert maj_at_k(answers, ok, 4) == 0.0  # None does not vote: still 13 x2 vs 12 x1
    assert maj_at_k(answers, ok, 5) == 1.0  # 12 x2 vs 13 x2: tie, "12" was first
    assert maj_at_k(answers, ok, 6) == 1.0  # 12 x3
    assert maj_at_k([None, None], [False, False], 2) == 0.0  # nobody voted
    with pytest.raises(ValueError, match="k=3 n=2"):
        maj_at_k(["1", "2"], [True, False], 3)


def test_item_metrics_on_a_worked_model():
    # two problems, n = 4: problem 0 has 1 correct of 4, the majority wrong; problem 1 has 3 of 4
    ev = ModelEval(
        correct=np.array([0.0, 1.0]),
        fmt=np.ones(2),
        lengths=np.array([10.0, 20.0]),
        truncated=np.zeros(2, bool),
        sample_correct=np.array([[1, 0, 0, 0], [0, 1, 1, 1]], dtype=float),
        votes=[["5", "6", "6", "7"], ["8", "9", "9", "9"]],
    )
    m = item_metrics(ev, [1, 2, 4])
    assert m["mean@4"].mean(1).tolist() == [0.25, 0.75]
    # pass@2: 1 - C(3,2)/C(4,2) = 0.5 and 1 - C(1,2)/C(4,2) = 1
    assert m["pass@2"].tolist() == pytest.approx([0.5, 1.0])
    assert m["pass@4"].tolist() == [1.0, 1.0]
    assert m["maj@1"].tolist() == [1.0, 0.0]  # first samples: "5" right, "8" wrong
    assert m["maj@4"].tolist() == [0.0, 1.0]  # "6" wins (wrong), "9" wins (right)
    r = summarise(ev, np.array(["a", "b"]), [1, 2, 4], 200, 0)
    assert r["mean@4"] == pytest.approx(0.5) and r["maj@4"] == 0.5 and r["pass@2"] == pytest.approx(0.75)
    assert r["mean_length"] == 15.0 and r["truncation_rate"] == 0.0
    assert set(r["ci95"]) >= {"accuracy", "mean@4", "pass@2", "maj@4", "format_rate", "p95_length"}


# ----------------------------------------------------------------------------- bootstrap
def test_paired_bootstrap_of_a_constant_difference_is_that_constant():
    rng = np.random.default_rng(1)
    b = rng.integers(0, 2, 300).astype(float) * 0.5
    d = paired_bootstrap_diff(b + 0.25, b, np.array(["x"] * 300), 500, 0)
    assert (d["diff"], d["ci95_low"], d["ci95_high"]) == pytest.approx((0.25, 0.25, 0.25))


def test_paired_bootstrap_matches_the_normal_closed_form():
    # per-item differences: +1 on 25%, -1 on 25%, 0 on 50% (N = 2000). Mean 0, variance 0.5, so the
    # 95% interval is +-1.96 * sqrt(0.5 / 2000) = +-0.0310.
    diff = np.repeat([1.0, -1.0, 0.0], [500, 500, 1000])
    a, b = np.clip(diff, 0, 1), np.clip(-diff, 0, 1)
    d = paired_bootstrap_diff(a, b, np.array(["x"] * 2000), 2000, 0)
    half = 1.96 * math.sqrt(0.5 / 2000)
    assert d["diff"] == 0.0
    assert d["ci95_low"] == pytest.approx(-half, rel=0.1) and d["ci95_high"] == pytest.approx(half, rel=0.1)


def test_two_level_bootstrap_adds_the_sample_variance():
    # a: every problem p = 0.5 over its n = 4 samples; b: all wrong. Over problems alone the per-
    # problem means are all 0.5 (no spread); redrawing samples gives var = 0.25 / 4 per problem, so
    # over N = 400 problems the CI is 0.5 +- 1.96 * sqrt(0.0625 / 400) = 0.5 +- 0.0245.
    a = np.tile([1.0, 0.0, 1.0, 0.0], (400, 1))
    d = paired_bootstrap_diff(a, np.zeros((400, 4)), np.array(["x"] * 400), 2000, 0)
    half = 1.96 * math.sqrt(0.0625 / 400)
    assert d["diff"] == 0.5
    assert d["ci95_high"] - 0.5 == pytest.approx(half, rel=0.15) and 0.5 - d["ci95_low"] == pytest.approx(
        half, rel=0.15
    )
    assert bootstrap_ci(a.mean(1), np.array(["x"] * 400), 500, 0) == (0.5, 0.5)  # one level: no spread


def test_same_seed_same_intervals():
    rng = np.random.default_rng(3)
    a, b, s = rng.random(100), rng.random(100), np.array(["p", "q"] * 50)
    assert paired_bootstrap_diff(a, b, s, 300, 7) == paired_bootstrap_diff(a, b, s, 300, 7)
    assert paired_bootstrap_diff(a, b, s, 300, 7) != paired_bootstrap_diff(a, b, s, 300, 8)


# ----------------------------------------------------------------------------- spec and gate
SPEC = {
    "data": [{"label": "heldout", "md5": "abc"}],
    "prompt": {"rendering": "r1", "chat_template": None},
    "sampling": {"n_samples": 4, "temperature": 1.0},
}


def test_spec_hash_and_differences():
    other = {**SPEC, "sampling": {"n_samples": 8, "temperature": 1.0}}
    assert digest(SPEC) == digest(dict(reversed(SPEC.items())))  # key order does not matter
    assert digest(SPEC) != digest(other)
    assert why_not_comparable(SPEC, SPEC) is None
    assert why_not_comparable(SPEC, other) == "sampling.n_samples: 4 != 8"


def test_gate_rule():
    me, same, other = {"spec": SPEC}, {"spec": SPEC}, {"spec": {**SPEC, "prompt": {"rendering": "r2"}}}
    up = {"diff": 0.05, "ci95_low": 0.02, "ci95_high": 0.08}
    assert decide(me, same, "champion", up, 0.0)["decision"] == "promoted"
    kept = decide(me, same, "champion", up, 0.03)  # the CI must clear the margin, not just 0
    assert kept["decision"] == "kept" and "not above the margin 0.03" in kept["reason"]
    worse = decide(me, same, "champion", {"diff": -0.05, "ci95_low": -0.08, "ci95_high": -0.02}, 0.0)
    assert worse["decision"] == "kept" and not worse["promote"]
    refused = decide(me, other, "champion", up, 0.0)
    assert refused["decision"] == "refused" and "prompt.rendering" in refused["reason"]


def test_metrics_doctests():
    import doctest

    import tasks.metrics

    assert doctest.testmod(tasks.metrics).failed == 0
