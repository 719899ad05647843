"""The online per-prompt difficulty model (tasks/grpo/online.py) and DUMP's visit counting."""

import math
import random

import pytest

from tasks.config.grpo import CurriculumConfig, GRPOConfig, OnlineConfig
from tasks.grpo.curricula import DumpSampler
from tasks.grpo.online import OnlineModel, flat_probability
from tasks.grpo.sampler import build_sampler

G = 8


def test_flat_probability_closed_form_and_monte_carlo():
    # Beta(1, 1): E[p^8 + (1-p)^8] = 2 / 9
    assert flat_probability(1.0, 1.0, G) == pytest.approx(2 / 9)
    # Beta(2, 2), G = 8: 2 * B(10, 2) / B(2, 2) = 2 * (1/110) / (1/6) = 12/110
    assert flat_probability(2.0, 2.0, G) == pytest.approx(12 / 110)
    rng = random.Random(0)
    draws = [rng.betavariate(3.0, 1.5) for _ in range(200_000)]
    mc = sum(p**G + (1 - p) ** G for p in draws) / len(draws)
    assert flat_probability(3.0, 1.5, G) == pytest.approx(mc, abs=3e-3)
    assert flat_probability(4000.0, 0.004, G) > 0.99  # believed always solved: almost surely flat


def _stats(rows, accs):
    """One step's statistics: group accuracy a -> a*G passes; advantages 0 exactly when all-equal."""
    adv = []
    for a in accs:
        adv += [0.0] * G if a in (0.0, 1.0) else [1.0, -1.0] * (G // 2)
    return {"rows": rows, "accuracy": accs, "advantages": adv}


SOURCES = ["solved"] * 400 + ["learn"] * 400 + ["hopeless"] * 400
IDS = [f"p{i}" for i in range(len(SOURCES))]
TRUE = {"solved": 1.0, "learn": 0.5, "hopeless": 0.0}


def _run(sampler, steps=60, k=8):
    drawn = {s: 0 for s in TRUE}
    for step in range(steps):
        idx = sampler.sample(k)
        rows = [{"id": IDS[i], "source": SOURCES[i]} for i in idx]
        sampler.update(_stats(rows, [TRUE[r["source"]] for r in rows]))
        if step >= steps // 2:
            for r in rows:
                drawn[r["source"]] += 1
    return drawn


@pytest.mark.parametrize("name", ["uniform", "dump"])
def test_skips_predicted_flat_prompts_but_keeps_exploring(name):
    online = OnlineConfig(enabled=True, explore=0.05)
    s = build_sampler(name, SOURCES, 0, CurriculumConfig(), ids=IDS, online=online, group_size=G)
    drawn = _run(s)
    # second half: the informative source dominates; the flat ones are still visited (explore)
    assert drawn["learn"] > 2.5 * (drawn["solved"] + drawn["hopeless"])
    assert drawn["solved"] > 0 and drawn["hopeless"] > 0
    m = s.online.metrics()
    if name == "uniform":  # DUMP itself stops proposing the flat sources: little is left to skip
        assert m["skip_rate"] > 0.3
    assert m["pooled_pass_rate/solved"] > 0.8 and m["pooled_pass_rate/hopeless"] < 0.2  # smoothed
    assert abs(m["pooled_pass_rate/learn"] - 0.5) < 0.05
    assert sum(v for k, v in m.items() if k.startswith("pass_rate_hist/")) == 8
    plain = build_sampler(name, SOURCES, 0, CurriculumConfig(), ids=IDS)
    base = _run(plain)
    # uniform: the model did it; DUMP finds the source by itself, and the model must not get in its way
    assert drawn["learn"] > base["learn"] * (1.5 if name == "uniform" else 0.9)


def test_a_source_of_solved_and_hopeless_prompts_is_seen_through_its_spread():
    """Mean 0.5 twice: "split" prompts are each always right or always wrong (flat groups), "mid"
    prompts are right half the time. Only the spread between groups tells them apart."""
    sources = ["split"] * 300 + ["mid"] * 300
    ids = [f"q{i}" for i in range(len(sources))]
    truth = [float(i % 2) for i in range(300)] + [0.5] * 300
    s = build_sampler("uniform", sources, 0, ids=ids, online=OnlineConfig(enabled=True), group_size=G)
    drawn = {"split": 0, "mid": 0}
    for step in range(40):
        idx = s.sample(8)
        s.update(_stats([{"id": ids[i], "source": sources[i]} for i in idx], [truth[i] for i in idx]))
        for i in idx:
            drawn[sources[i]] += step >= 20
    m = s.online.metrics()
    assert abs(m["pooled_pass_rate/split"] - 0.5) < 0.15 and abs(m["pooled_pass_rate/mid"] - 0.5) < 0.05
    assert m["prior_strength/split"] < 1 < 10 < m["prior_strength/mid"]  # U-shaped vs concentrated
    assert drawn["mid"] > 3 * drawn["split"]


def test_predicted_flat_tracks_observed_flat_once_learnt():
    s = build_sampler("uniform", SOURCES, 1, ids=IDS, online=OnlineConfig(enabled=True), group_size=G)
    predicted, observed = [], []
    for step in range(80):
        idx = s.sample(8)
        rows = [{"id": IDS[i], "source": SOURCES[i]} for i in idx]
        s.update(_stats(rows, [TRUE[r["source"]] for r in rows]))
        if step >= 40:
            predicted.append(s.online.metrics()["predicted_flat"])
            observed.append(s.online.metrics()["observed_flat"])
    assert abs(sum(predicted) / len(predicted) - sum(observed) / len(observed)) < 0.15


def test_pass_rate_column_is_the_prior_before_any_update():
    rates = [1.0] * 400 + [0.5] * 400 + [0.0] * 400
    online = OnlineConfig(enabled=True, prior_strength=50.0, proposals=8)
    with_prior = build_sampler("uniform", SOURCES, 0, ids=IDS, online=online, group_size=G, pass_rates=rates)
    picked = [SOURCES[i] for i in with_prior.sample(64)]
    assert picked.count("learn") > 52  # no update yet: only the column can say which are flat
    no_prior = build_sampler("uniform", SOURCES, 0, ids=IDS, online=online, group_size=G)
    assert [SOURCES[i] for i in no_prior.sample(64)].count("learn") < 40  # pooled prior 0.5 everywhere


def test_online_model_rejects_unknown_prompts_and_duplicate_ids():
    with pytest.raises(ValueError, match="unique id"):
        OnlineModel(["a", "a"], ["x", "x"], G, OnlineConfig(enabled=True))
    m = OnlineModel(["a"], ["x"], G, OnlineConfig(enabled=True))
    with pytest.raises(ValueError, match="'y'"):
        m.update(_stats([{"id": "y", "source": "a"}], [0.5]))


def test_online_with_prompt_level_prioritized_is_refused_by_the_config():
    with pytest.raises(ValueError, match="level 'source'"):
        GRPOConfig(sampler="prioritized", curriculum={"level": "prompt"}, online={"enabled": True})


def test_dump_counts_visits_in_prompts_or_rollouts_hand_worked():
    rows = [{"id": 0, "source": "a"}, {"id": 1, "source": "a"}, {"id": 2, "source": "b"}]
    adv = [[1.0, -1.0, 1.0, -1.0], [0.5, -0.5, 0.5, -0.5], [0.0] * 4]
    stats = {"rows": rows, "accuracy": [0.5, 0.5, 0.0], "advantages": [x for g in adv for x in g]}
    # stat_a = mean |adv| over a's 8 rollouts = 0.75, stat_b = 0
    prompts = DumpSampler(["a", "a", "b"], 0, CurriculumConfig(c=1.0, tau=1.0, count="prompts"))
    prompts.update(stats)
    # n = (2, 1), N = 3: score_a = 0.75 + sqrt(2 ln 4 / 3) = 1.711351, score_b = sqrt(2 ln 4 / 2) = 1.177410
    sa, sb = 0.75 + math.sqrt(2 * math.log(4) / 3), math.sqrt(2 * math.log(4) / 2)
    assert [st["ucb"] for st in prompts.arm_stats().values()] == pytest.approx([sa, sb])
    assert prompts.probabilities()["a"] == pytest.approx(1 / (1 + math.exp(sb - sa)))  # 0.630402
    assert prompts.probabilities()["a"] == pytest.approx(0.6304019, abs=1e-6)
    rollouts = DumpSampler(["a", "a", "b"], 0, CurriculumConfig(c=1.0, tau=1.0, count="rollouts"))
    rollouts.update(stats)
    # n = (8, 4), N = 12: score_a = 0.75 + sqrt(2 ln 13 / 9) = 1.504976, score_b = sqrt(2 ln 13 / 5) = 1.012907
    ra, rb = 0.75 + math.sqrt(2 * math.log(13) / 9), math.sqrt(2 * math.log(13) / 5)
    assert [st["ucb"] for st in rollouts.arm_stats().values()] == pytest.approx([ra, rb])
    assert rollouts.probabilities()["a"] == pytest.approx(0.6205938, abs=1e-6)
