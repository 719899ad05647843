"""GRPO checkpoints: every rank gets its own random state back, and a short write never counts."""

from __future__ import annotations

import random

import pytest
import torch

from tasks.grpo.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint
from tasks.grpo.sampler import UniformSampler


def _parts(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1), UniformSampler(["a", "b", "a"], seed)


def test_each_rank_resumes_its_own_generator(tmp_path):
    model, opt, sampler = _parts(0)
    gens = [torch.Generator().manual_seed(10 + r) for r in range(2)]  # rank r's sampling stream
    for g in gens:
        torch.rand(5, generator=g)  # advance both, differently from a fresh seed
    states = []
    for g in gens:
        random.seed(g.initial_seed())
        states.append(rng_state(g))
    path = save_checkpoint(tmp_path, 4, model, opt, sampler, states, [{"step": 3}])
    expected = [torch.rand(4, generator=g) for g in gens]  # what each rank would draw next

    for r in (1, 0):
        m2, o2, s2 = _parts(1)
        g2 = torch.Generator().manual_seed(999)
        step, history = load_checkpoint(path, m2, o2, s2, g2, rank=r)
        assert step == 4 and history == [{"step": 3}]
        assert torch.equal(torch.rand(4, generator=g2), expected[r])
        assert random.getstate() == states[r]["python"]
        assert torch.equal(m2.weight, model.weight)
    assert not torch.equal(expected[0], expected[1])

    with pytest.raises(ValueError, match="written by 2 process"):
        load_checkpoint(path, *_parts(2), torch.Generator(), rank=2)


def test_only_renamed_checkpoints_are_found(tmp_path):
    model, opt, sampler = _parts(0)
    save_checkpoint(tmp_path, 2, model, opt, sampler, [rng_state(torch.Generator())], [])
    (tmp_path / ".tmp-step-000003").mkdir()  # a write cut short
    (tmp_path / "step-000004").mkdir()  # a folder without state.pt
    assert latest_checkpoint(tmp_path).name == "step-000002"
