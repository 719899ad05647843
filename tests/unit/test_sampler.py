"""The uniform GRPO prompt sampler: epochs without replacement and an exact resume."""

import json

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
