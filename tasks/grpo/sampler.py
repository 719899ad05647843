"""Prompt samplers for GRPO: which prompts go into the next batch.

Every sampler has the same small interface, so a curriculum replaces ``uniform`` without touching
the training loop:

- ``sample(k) -> list[int]``: row indices for the next batch;
- ``update(stats)``: per-prompt statistics from the step just taken (rows, rewards, advantages),
  called by the trainer only, never by evaluation;
- ``state_dict()`` / ``load_state_dict()``: everything needed to continue exactly after a resume
  (the RNG state included).

``uniform`` draws without replacement inside an epoch (a seeded permutation of all rows, renewed
when exhausted), so every RL prompt is seen once before any is seen twice.
"""

from __future__ import annotations

import random
from typing import Any


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

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate(), "queue": list(self.queue), "drawn": self.drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate(_as_rng_state(state["rng"]))
        self.queue = list(state["queue"])
        self.drawn = state["drawn"]


def _as_rng_state(state: Any) -> tuple:
    # JSON round trips turn the RNG state's tuples into lists.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


SAMPLERS = {"uniform": UniformSampler}


def build_sampler(name: str, sources: list[str], seed: int):
    return SAMPLERS[name](sources, seed)
