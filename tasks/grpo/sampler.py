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

The curricula (``dump``, ``prioritized``, ``static``) are in ``tasks/grpo/curricula.py``.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from tasks.config.grpo import CurriculumConfig
from tasks.grpo.curricula import DumpSampler, PrioritizedSampler, StaticSampler, as_rng_state


class PromptSampler(Protocol):
    """What the GRPO loop needs from a prompt sampler (see the module docstring)."""

    def sample(self, k: int) -> list[int]: ...

    def update(self, stats: dict[str, Any]) -> None: ...

    def probabilities(self) -> dict[str, float]: ...

    def arm_stats(self) -> dict[str, dict[str, float]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class UniformSampler:
    def __init__(self, sources: list[str], seed: int):
        self.n = len(sources)
        self.sources = sources
        self.rng = random.Random(seed)
        self.queue: list[int] = []
        self.drawn = 0

    def sample(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            if not self.queue:
                self.queue = list(range(self.n))
                self.rng.shuffle(self.queue)
            out.append(self.queue.pop())
        self.drawn += k
        return out

    def update(self, stats: dict[str, Any]) -> None:
        """Uniform sampling ignores feedback; the hook exists for curricula."""

    def probabilities(self) -> dict[str, float]:
        """Share of each source in the RL pool (uniform over prompts)."""
        counts: dict[str, int] = {}
        for s in self.sources:
            counts[s] = counts.get(s, 0) + 1
        return {s: c / self.n for s, c in sorted(counts.items())}

    def arm_stats(self) -> dict[str, dict[str, float]]:
        return {s: {"rows": sum(x == s for x in self.sources)} for s in sorted(set(self.sources))}

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate(), "queue": list(self.queue), "drawn": self.drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate(as_rng_state(state["rng"]))
        self.queue = list(state["queue"])
        self.drawn = state["drawn"]


SAMPLERS = ("uniform", "dump", "prioritized", "static")


def build_sampler(
    name: str,
    sources: list[str],
    seed: int,
    cfg: CurriculumConfig | None = None,
    difficulties: list[int] | None = None,
    ids: list | None = None,
) -> PromptSampler:
    """A sampler over the RL rows: row i has sources[i], difficulties[i] (for static) and ids[i] (for
    prioritized at level "prompt")."""
    if not sources:
        raise ValueError("build_sampler: no RL rows")
    if difficulties is not None and len(difficulties) != len(sources):
        raise ValueError(f"build_sampler: {len(difficulties)} difficulties for {len(sources)} rows")
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {list(SAMPLERS)}")
    cfg = cfg or CurriculumConfig()
    if name == "uniform":
        return UniformSampler(sources, seed)  # exactly the committed reference sequence
    if name == "dump":
        return DumpSampler(sources, seed, cfg)
    if name == "prioritized":
        return PrioritizedSampler(sources, seed, cfg, ids)
    return StaticSampler(sources, seed, cfg, difficulties)
