"""GRPO prompt samplers: uniform epochs, the DUMP / prioritized / static curricula, exact resumes."""

import json
import math

import pytest
import torch

from tasks.config import CurriculumConfig
from tasks.config.grpo import OnlineConfig
from tasks.grpo.curricula import DumpSampler, PrioritizedSampler, StaticSampler, static_order
from tasks.grpo.sampler import UniformSampler, build_sampler

SOURCES = ["a", "a", "b", "c", "c", "c", "b"]  # 7 prompts


def test_every_prompt_once_per_epoch():
    s = UniformSampler(SOURCES, seed=0)
    # 7 batches of 3 = 21 draws = 3 epochs; batches straddle epoch boundaries (7 is not a multiple
    # of 3), and still each consecutive block of 7 draws is a permutation of the 7 rows.
    drawn = [i for _ in range(7) for i in s.sample(3)]
    for epoch in range(3):
        assert sorted(drawn[7 * epoch : 7 * epoch + 7]) == list(range(7))
    assert s.drawn == 21
    # a fresh permutation each epoch (with this seed the three orders are not all the same)
    assert len({tuple(drawn[i : i + 7]) for i in (0, 7, 14)}) > 1


def test_batch_larger_than_the_pool():
    s = UniformSampler(SOURCES, seed=1)
    out = s.sample(10)  # one whole epoch, then 3 rows of the next
    assert sorted(out[:7]) == list(range(7))
    assert len(set(out[7:])) == 3


def test_same_seed_same_sequence_different_seed_differs():
    a, b, c = UniformSampler(SOURCES, 5), UniformSampler(SOURCES, 5), UniformSampler(SOURCES, 6)
    seq_a = [a.sample(2) for _ in range(6)]
    assert seq_a == [b.sample(2) for _ in range(6)]
    assert seq_a != [c.sample(2) for _ in range(6)]


def _resume_check(roundtrip) -> None:
    ref = UniformSampler(SOURCES, seed=3)
    ref.sample(5)  # mid-epoch: 2 rows left in the queue
    state = roundtrip(ref.state_dict())
    expected = [ref.sample(3) for _ in range(8)]  # crosses several epoch boundaries (RNG state used)

    resumed = UniformSampler(SOURCES, seed=999)  # a different seed: everything must come from state
    resumed.load_state_dict(state)
    assert resumed.drawn == 5
    assert [resumed.sample(3) for _ in range(8)] == expected


def test_state_dict_round_trip_continues_identically():
    _resume_check(lambda st: st)


def test_state_dict_survives_json():
    # checkpoints may store the sampler state as JSON, which turns the RNG state's tuples into lists
    _resume_check(lambda st: json.loads(json.dumps(st)))


def test_probabilities_and_registry():
    s = build_sampler("uniform", SOURCES, 0)
    assert isinstance(s, UniformSampler)
    assert s.probabilities() == {"a": 2 / 7, "b": 2 / 7, "c": 3 / 7}


# ----------------------------------------------------------------------------- curricula
G = 4  # completions per prompt in the fake steps below


def _stats(rows: list[dict], acc: list[float], adv: list[list[float]]) -> dict:
    """The trainer's per-prompt dict: advantages laid out group by group."""
    flat = [x for group in adv for x in group]
    return {
        "rows": rows,
        "accuracy": acc,
        "advantages": flat,
    }


def test_dump_hand_worked_ucb_softmax_and_sliding_window():
    s = DumpSampler(["a", "a", "b"], seed=0, cfg=CurriculumConfig(window=3, c=1.0, tau=0.1))
    assert s.probabilities() == {"a": 0.5, "b": 0.5}  # no data: stats 0, N = 0 -> bonus 0 for both

    s.update(_stats([{"id": 0, "source": "a"}, {"id": 2, "source": "b"}], [0.5, 0.0], [[1, -1], [0, 0]]))
    # window a = [1, 1] (stat 1), b = [0, 0] (stat 0); n_a = n_b = 1, N = 2: equal bonuses cancel,
    # p_a = 1 / (1 + exp(-(1 - 0) / 0.1)) = 1 / (1 + e^-10) = 0.9999546021312976
    assert abs(s.probabilities()["a"] - 0.9999546021312976) < 1e-9

    s.update(_stats([{"id": 1, "source": "a"}], [0.5], [[0.5, -0.5]]))
    # window a holds 3 rollouts: [1, 1, 0.5, 0.5] -> [1, 0.5, 0.5], stat 2/3 (not 3/4: the oldest fell out)
    # n_a = 2, n_b = 1, N = 3:
    #   score_a = 2/3 + sqrt(2 ln 4 / 3) = 0.666667 + 0.961351 = 1.628018
    #   score_b = 0   + sqrt(2 ln 4 / 2) = 1.177410
    #   p_a = 1 / (1 + exp(-(1.628018 - 1.177410) / 0.1)) = 1 / (1 + exp(-4.506079)) = 0.989078917
    p = s.probabilities()
    assert abs(p["a"] - 0.9890789173985115) < 1e-9
    assert abs(p["b"] - 0.010921082601488375) < 1e-9
    a = s.arm_stats()["a"]
    assert a["window_mean_abs_adv"] == pytest.approx(2 / 3)
    assert (a["prompts"], a["rollouts"]) == (2, 4)
    assert a["window_success_rate"] == 0.5
    assert s.arm_stats()["b"]["ucb"] == pytest.approx(math.sqrt(math.log(4)))


def test_dump_prefers_the_learnable_source_over_the_too_hard_one():
    sources = ["hard"] * 10 + ["learn"] * 10
    s = build_sampler("dump", sources, seed=0, cfg=CurriculumConfig())
    drawn = {"hard": 0, "learn": 0}
    for _ in range(40):
        idx = s.sample(8)
        rows = [{"id": i, "source": sources[i]} for i in idx]
        # too hard: always wrong, all-equal groups, advantage 0; learnable: half right, |adv| = 1
        adv = [[0.0] * G if r["source"] == "hard" else [1.0, -1.0] * (G // 2) for r in rows]
        s.update(_stats(rows, [0.0 if r["source"] == "hard" else 0.5 for r in rows], adv))
        for r in rows:
            drawn[r["source"]] += 1
    assert drawn["learn"] > 10 * drawn["hard"]  # seed 0: 304 vs 16 draws
    assert drawn["hard"] > 0  # the UCB bonus keeps exploring the hard arm
    assert s.probabilities()["learn"] > 0.9


def test_dump_rejects_bad_updates():
    s = DumpSampler(["a", "b"], seed=0, cfg=CurriculumConfig())
    with pytest.raises(ValueError, match="'zzz'"):
        s.update(_stats([{"id": 0, "source": "zzz"}], [0.0], [[0, 0]]))
    with pytest.raises(ValueError, match="whole groups"):
        s.update({"rows": [{"source": "a"}, {"source": "b"}], "accuracy": [0, 0], "advantages": [1, 2, 3]})


def test_prioritized_by_source_hand_worked_with_floor():
    s = PrioritizedSampler(["a", "b", "c"], seed=0, cfg=CurriculumConfig(ema=0.5, min_prob=0.2))
    assert s.probabilities() == {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}  # all unseen: rate 0, weight 1
    s.update({"rows": [{"source": "a"}, {"source": "a"}, {"source": "b"}], "accuracy": [1.0, 0.5, 1.0]})
    # one EMA step per arm and update on the arm's mean accuracy in the batch:
    #   a: 0.5 * 0 + 0.5 * 0.75 = 0.375;  b: 0.5 * 0 + 0.5 * 1 = 0.5;  c: unseen, 0
    assert s.rates == [0.375, 0.5, 0.0]
    s.update({"rows": [{"source": "b"}], "accuracy": [1.0]})  # b: 0.75
    s.update({"rows": [{"source": "b"}], "accuracy": [1.0]})  # b: 0.875
    assert s.rates == [0.375, 0.875, 0.0]
    # weights max(1 - rate, 0.2): a 0.625, b max(0.125, 0.2) = 0.2 (the floor), c 1; sum 1.825
    p = s.probabilities()
    assert abs(p["a"] - 0.625 / 1.825) < 1e-9  # 0.3424657534
    assert abs(p["b"] - 0.2 / 1.825) < 1e-9  # 0.1095890411
    assert abs(p["c"] - 1 / 1.825) < 1e-9  # 0.5479452055
    assert s.arm_stats()["b"] == {"success_rate": 0.875, "updates": 3, "prob": pytest.approx(0.2 / 1.825)}


def test_prioritized_by_prompt_hand_worked_and_no_repeats_in_a_batch():
    cfg = CurriculumConfig(level="prompt", ema=0.5, min_prob=0.1)
    ids = ["p0", "p1", "p2", "p3"]
    s = build_sampler("prioritized", ["a", "a", "b", "b"], seed=0, cfg=cfg, ids=ids)
    s.update({"rows": [{"id": "p0", "source": "a"}, {"id": "p2", "source": "b"}], "accuracy": [1.0, 0.5]})
    # rates [0.5, 0, 0.25, 0] -> weights [0.5, 1, 0.75, 1], sum 3.25; a = 1.5 / 3.25, b = 1.75 / 3.25
    p = s.probabilities()
    assert abs(p["a"] - 1.5 / 3.25) < 1e-9 and abs(p["b"] - 1.75 / 3.25) < 1e-9
    for _ in range(3):
        s.update({"rows": [{"id": "p0", "source": "a"}], "accuracy": [1.0]})
    # p0: 0.5 -> 0.75 -> 0.875 -> 0.9375; weight max(0.0625, 0.1) = 0.1; weights [0.1, 1, 0.75, 1], sum 2.85
    p = s.probabilities()
    assert abs(p["a"] - 1.1 / 2.85) < 1e-9 and abs(p["b"] - 1.75 / 2.85) < 1e-9
    assert s.arm_stats()["a"]["prompts_seen"] == 1
    out = s.sample(6)  # every prompt once before any repeats inside one call
    assert sorted(out[:4]) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="'p9'"):
        s.update({"rows": [{"id": "p9", "source": "a"}], "accuracy": [1.0]})
    with pytest.raises(ValueError, match="ids"):
        build_sampler("prioritized", ["a", "b"], seed=0, cfg=cfg)


def test_static_order_from_difficulty_and_from_config():
    assert static_order(["x", "y", "y", "z"], None, [3, 1, 1, 2]) == ["y", "z", "x"]
    assert static_order(["b", "a", "c"], None, [1, 1, 0]) == ["c", "a", "b"]  # ties by name
    assert static_order(["x", "y", "z"], ["z", "x", "y"], None) == ["z", "x", "y"]
    with pytest.raises(ValueError, match="'w'"):
        static_order(["x", "y"], ["y", "w", "x"], None)
    with pytest.raises(ValueError, match=r"missing \['y'\]"):
        static_order(["x", "y"], ["x"], None)
    with pytest.raises(ValueError, match="'y' has no difficulty"):
        static_order(["x", "y"], None, [1, -1])  # -1: the trainer's "no difficulty column"
    with pytest.raises(ValueError, match="several difficulties"):
        static_order(["x", "x"], None, [1, 2])
    with pytest.raises(ValueError, match="difficulties"):
        build_sampler("static", ["x"], seed=0)


def test_static_pool_grows_every_stage_steps_updates():
    sources = ["x", "y", "y", "z"]  # difficulties 3, 1, 1, 2: order y, z, x
    cfg = CurriculumConfig(stage_steps=2)
    s = build_sampler("static", sources, seed=0, cfg=cfg, difficulties=[3, 1, 1, 2])
    pools = []
    for _ in range(7):
        drawn = {sources[i] for _ in range(3) for i in s.sample(4)}  # several sample calls per step
        pools.append((sorted(drawn), s.probabilities()))
        s.update({"rows": [], "accuracy": []})
    assert [p[0] for p in pools] == [["y"]] * 2 + [["y", "z"]] * 2 + [["x", "y", "z"]] * 3
    assert pools[0][1] == {"x": 0.0, "y": 1.0, "z": 0.0}
    assert pools[2][1] == {"x": 0.0, "y": 2 / 3, "z": 1 / 3}
    assert pools[6][1] == {"x": 0.25, "y": 0.5, "z": 0.25}
    assert s.arm_stats()["x"] == {"in_pool": 1.0, "joins_at_step": 4}


def test_static_new_stage_starts_a_fresh_epoch():
    s = StaticSampler(["y", "y", "z"], seed=0, cfg=CurriculumConfig(stage_steps=1), difficulties=[1, 1, 2])
    assert s.sample(1)[0] in (0, 1)  # one y left in the stage-0 queue
    s.update({"rows": [], "accuracy": []})
    assert sorted(s.sample(3)) == [0, 1, 2]  # the whole new pool, not the leftover y first


# ----------------------------------------------------------------------------- every sampler
FAMILY = ["easy"] * 5 + ["mid"] * 4 + ["hard"] * 3
IDS = [f"r{i}" for i in range(len(FAMILY))]
DIFF = {"easy": 1, "mid": 2, "hard": 3}
KINDS = {
    "uniform": ("uniform", CurriculumConfig()),
    "dump": ("dump", CurriculumConfig(window=5)),
    "prioritized-source": ("prioritized", CurriculumConfig(ema=0.7)),
    "prioritized-prompt": ("prioritized", CurriculumConfig(level="prompt", ema=0.7)),
    "static": ("static", CurriculumConfig(stage_steps=2)),
    "dump-rollouts": ("dump", CurriculumConfig(window=5, count="rollouts")),
}
KINDS.update(
    {f"{k}+online": v for k, v in KINDS.items() if k in ("uniform", "dump", "static", "prioritized-source")}
)


def _make(kind: str, seed: int):
    name, cfg = KINDS[kind]
    online = OnlineConfig(enabled=kind.endswith("+online"), explore=0.1)
    return build_sampler(name, FAMILY, seed, cfg, [DIFF[s] for s in FAMILY], IDS, online, G)


def _step(s, k: int = 4) -> list[int]:
    """Sample, then feed back fake results: easy always right, mid half right, hard always wrong."""
    idx = s.sample(k)
    rows = [{"id": IDS[i], "source": FAMILY[i]} for i in idx]
    acc = [{"easy": 1.0, "mid": 0.5, "hard": 0.0}[r["source"]] for r in rows]
    s.update(_stats(rows, acc, [[1.0, -1.0] * (G // 2) if a == 0.5 else [0.0] * G for a in acc]))
    return idx


def _torch_roundtrip(tmp_path):
    def roundtrip(state):
        torch.save({"sampler": state}, tmp_path / "state.pt")
        return torch.load(tmp_path / "state.pt", weights_only=False)["sampler"]

    return roundtrip


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("how", ["same", "json", "torch"])
def test_every_sampler_resumes_exactly(kind, how, tmp_path):
    roundtrip = {"same": lambda st: st, "json": lambda st: json.loads(json.dumps(st))}.get(how)
    roundtrip = roundtrip or _torch_roundtrip(tmp_path)
    ref = _make(kind, seed=3)
    for _ in range(5):
        _step(ref)
    ref.sample(3)  # mid-queue when the checkpoint is taken
    resumed = _make(kind, seed=999)  # a different seed: everything must come from the state
    resumed.load_state_dict(roundtrip(ref.state_dict()))
    assert resumed.probabilities() == ref.probabilities()
    assert resumed.arm_stats() == ref.arm_stats()
    for _ in range(6):  # sampling and updates continue identically
        assert _step(resumed) == _step(ref)
        assert resumed.probabilities() == ref.probabilities()
        if ref.online is not None:
            assert json.dumps(resumed.online.metrics()) == json.dumps(ref.online.metrics())  # NaN-safe


@pytest.mark.parametrize("kind", list(KINDS))
def test_sampling_does_not_change_probabilities(kind):
    s = _make(kind, seed=0)
    for _ in range(3):
        _step(s)
    before, stats = s.probabilities(), s.arm_stats()
    s.sample(25)
    assert s.probabilities() == before and s.arm_stats() == stats
    assert sum(before.values()) == pytest.approx(1.0) and list(before) == sorted(before)


def test_state_from_other_sources_is_rejected_and_unknown_name():
    s = _make("dump", 0)
    other = build_sampler("dump", ["easy", "mid"], 0)
    with pytest.raises(ValueError, match="sources"):
        s.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="unknown sampler 'ucb'"):
        build_sampler("ucb", FAMILY, 0)
