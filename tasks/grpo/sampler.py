"""Prompt samplers for GRPO: which prompts go into the next batch.

Every sampler has the same interface, so a curriculum replaces ``uniform`` without touching the
training loop: ``sample(k)`` (row indices; moves only the RNG and queues), ``update(stats)`` (the
trainer's per-prompt dict of the step just taken: ``rows``, ``accuracy``, ``advantages`` group by
group; called once per optimiser step, never by evaluation, and the only thing that changes what a
sampler has learnt), ``probabilities()`` (per-source probabilities of the NEXT draw, sorted by
source), ``arm_stats()`` (per-source numbers for logging) and ``state_dict()`` /
``load_state_dict()`` (an exact resume, RNG included; plain lists/dicts/numbers, so the state
survives ``torch.save`` and JSON). Constants come from ``CurriculumConfig``.

- ``uniform``: a seeded permutation of all rows, renewed when exhausted (each prompt once per epoch).

Any sampler can put its proposals through the online per-prompt difficulty model
(``grpo.online.enabled``, ``tasks/grpo/online.py``): the sampler picks where to look (all rows, or
DUMP's source), the model skips prompts predicted to give an all-equal group.

The curricula (``dump``, ``prioritized``, ``static``) are in ``tasks/grpo/curricula.py``.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from tasks.config.grpo import CurriculumConfig, OnlineConfig
from tasks.grpo.curricula import (
    DumpSampler,
    PrioritizedSampler,
    StaticSampler,
    as_rng_state,
    load_online,
    with_online,
)
from tasks.grpo.online import OnlineModel, next_row


class PromptSampler(Protocol):
    """What the GRPO loop needs from a prompt sampler (see the module docstring)."""

    def sample(self, k: int) -> list[int]: ...

    def update(self, stats: dict[str, Any]) -> None: ...

    def probabilities(self) -> dict[str, float]: ...

    def arm_stats(self) -> dict[str, dict[str, float]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    online: OnlineModel | None  # the per-prompt difficulty model (grpo.online), or None


class UniformSampler:
    def __init__(self, sources: list[str], seed: int, online: OnlineModel | None = None):
        self.n = len(sources)
        self.sources = sources
        self.rng = random.Random(seed)
        self.queue: list[int] = []
        self.drawn = 0
        self.online = online

    def _epoch(self) -> list[int]:
        queue = list(range(self.n))
        self.rng.shuffle(queue)
        return queue

    def sample(self, k: int) -> list[int]:
        out = [next_row(self.queue, self._epoch, self.online, self.rng) for _ in range(k)]
        self.drawn += k
        return out

    def update(self, stats: dict[str, Any]) -> None:
        """Uniform sampling ignores feedback (the online model, when on, learns from it)."""
        if self.online is not None:
            self.online.update(stats)

    def probabilities(self) -> dict[str, float]:
        """Share of each source in the RL pool (uniform over prompts)."""
        counts: dict[str, int] = {}
        for s in self.sources:
            counts[s] = counts.get(s, 0) + 1
        return {s: c / self.n for s, c in sorted(counts.items())}

    def arm_stats(self) -> dict[str, dict[str, float]]:
        return {s: {"rows": sum(x == s for x in self.sources)} for s in sorted(set(self.sources))}

    def state_dict(self) -> dict[str, Any]:
        state = {"rng": self.rng.getstate(), "queue": list(self.queue), "drawn": self.drawn}
        return with_online(state, self.online)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate(as_rng_state(state["rng"]))
        self.queue = list(state["queue"])
        self.drawn = state["drawn"]
        load_online(state, self.online)


SAMPLERS = ("uniform", "dump", "prioritized", "static")


def build_sampler(
    name: str,
    sources: list[str],
    seed: int,
    cfg: CurriculumConfig | None = None,
    difficulties: list[int] | None = None,
    ids: list | None = None,
    online: OnlineConfig | None = None,
    group_size: int = 8,
    pass_rates: list[float | None] | None = None,
) -> PromptSampler:
    """A sampler over the RL rows: row i has sources[i], difficulties[i] (for static), ids[i] (for
    prioritized at level "prompt" and the online model) and pass_rates[i] (the online model's prior;
    None: its source's). ``online`` enabled: the sampler's proposals go through the online model."""
    if not sources:
        raise ValueError("build_sampler: no RL rows")
    if difficulties is not None and len(difficulties) != len(sources):
        raise ValueError(f"build_sampler: {len(difficulties)} difficulties for {len(sources)} rows")
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {list(SAMPLERS)}")
    cfg = cfg or CurriculumConfig()
    model = None
    if online is not None and online.enabled:
        model = OnlineModel(sources, ids if ids is not None else [], group_size, online, pass_rates)
    if name == "uniform":
        return UniformSampler(sources, seed, model)  # without the model: the committed reference sequence
    if name == "dump":
        return DumpSampler(sources, seed, cfg, model)
    if name == "prioritized":
        return PrioritizedSampler(sources, seed, cfg, ids, model)
    return StaticSampler(sources, seed, cfg, difficulties, model)
