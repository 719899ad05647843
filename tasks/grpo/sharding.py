"""GRPO over several processes: one global prompt draw, a slice per rank, one curriculum.

- Every rank holds the same sampler (same seed) and makes the same calls, so every rank draws the
  same global batch; :class:`ShardedSampler` hands each rank its contiguous slice (sizes differ by
  at most one when the world size does not divide the draw).
- ``update`` gathers every rank's per-prompt statistics in rank order, so each rank's sampler sees
  the whole global batch and the curriculum state stays identical everywhere (checked at the end
  of a run through :func:`digest` and :func:`weights_digest` in the logs).
- Metrics are averaged over the ranks that reported them (:func:`mean_metrics`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tasks import distributed
from tasks.grpo.sampler import PromptSampler


class ShardedSampler:
    """A :class:`PromptSampler` seen through one rank: the global draw everywhere, this rank's slice."""

    def __init__(self, sampler: PromptSampler, r: int, world: int):
        self.sampler, self.r, self.world = sampler, r, world
        self.online = sampler.online  # same object: its statistics are the global batch's

    def sample(self, k: int) -> list[int]:
        return distributed.shard(self.sampler.sample(k), self.r, self.world)

    def update(self, stats: dict[str, Any]) -> None:
        """Concatenate every rank's per-prompt statistics in rank order: the global batch's."""
        self.update_rounds([stats])

    def update_rounds(self, rounds: list[dict[str, Any]]) -> None:
        """One sampler update with every round's global statistics, round after round, each in rank
        order: what one process that generated every round itself would pass."""
        merged: dict[str, list] = {}
        per_rank = distributed.gather_objects(rounds)
        for i in range(len(rounds)):
            for part in per_rank:
                for key, values in part[i].items():
                    merged.setdefault(key, []).extend(values)
        self.sampler.update(merged)

    def probabilities(self) -> dict[str, float]:
        return self.sampler.probabilities()

    def arm_stats(self) -> dict[str, dict[str, float]]:
        return self.sampler.arm_stats()

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


def mean_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Each key averaged over the ranks that reported it (per-source keys differ between ranks)."""
    if distributed.world_size() == 1:
        return metrics
    per_rank = distributed.gather_objects(metrics)
    keys = dict.fromkeys(k for m in per_rank for k in m)
    return {k: sum(m[k] for m in per_rank if k in m) / sum(k in m for m in per_rank) for k in keys}


def digest(state: Any) -> str:
    """A short fingerprint of JSON-able state (a sampler's), to compare ranks in the logs."""
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_digest(model) -> str:
    """A short fingerprint of a model's parameters (identical on every rank of a replica)."""
    h = hashlib.sha256()
    for p in distributed.unwrap(model).parameters():
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
