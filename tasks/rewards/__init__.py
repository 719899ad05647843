"""Verifiable rewards: a registry of pure reward functions and how their scores are combined.

A reward is ``fn(completion, row) -> float | None``: the completion is untrusted model output (any
object; non-strings score 0.0), the row is the dataset row (``row["answer"]`` is the gold), and
None means "not applicable to this row". A row may also list the rewards that apply to it (a
``rewards`` column, see ``executor.applicable_rewards``), so math and code rows share one batch.
Rewards never run in the trainer's process: the trainer scores through
``tasks.rewards.executor.RewardExecutor``, which runs them in spawned worker processes with a
per-item timeout, then combines them:

    res = executor.score(completions, rows, list(weights))
    rewards = combine(res.per_reward, weights)

Importing this package is cheap (no math_verify, sympy or torch, no processes): ``tasks.config``
imports ``REWARDS`` to validate ``grpo.rewards``. The math reward imports math_verify lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tasks.rewards.code import code_binary, code_reward
from tasks.rewards.format import format_reward, tag_count
from tasks.rewards.length import length_reward
from tasks.rewards.math import GoldParseError, accuracy

RewardFn = Callable[[object, Mapping[str, Any]], "float | None"]

REWARDS: dict[str, RewardFn] = {
    "accuracy": accuracy,
    "format": format_reward,
    "tag_count": tag_count,
    "length": length_reward,
    "code": code_reward,
    "code_binary": code_binary,
}


def zero_if_none(values: list[float | None]) -> list[float]:
    """Scores with "not applicable" (None) counted as 0: the one place that rule lives.

    >>> zero_if_none([1.0, None, 0.5])
    [1.0, 0.0, 0.5]
    """
    return [0.0 if v is None else v for v in values]


def applicable_mean(values: list[float | None]) -> float:
    """Mean over the items a reward applies to (NaN when it applies to none): what ``reward/<name>`` logs.

    >>> applicable_mean([1.0, None, 0.0]), applicable_mean([None])
    (0.5, nan)
    """
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else float("nan")


def combine(per_reward: Mapping[str, list[float | None]], weights: Mapping[str, float]) -> list[float]:
    """Weighted sum of rewards per completion; a None (not applicable) contributes 0.

    Only rewards named in ``weights`` count; other entries of ``per_reward`` (logged-only rewards)
    are ignored. Treating None as 0 means a row that a reward does not apply to neither gains nor
    loses from it, and within a GRPO group (one row) it shifts nothing.

    >>> combine({"accuracy": [1.0, 0.0, None], "format": [1.0, 0.0, 1.0]}, {"accuracy": 1.0, "format": 0.1})
    [1.1, 0.0, 0.1]
    >>> combine({"accuracy": [1.0]}, {"format": 1.0})
    Traceback (most recent call last):
    ...
    ValueError: combine: weight given for 'format' but no scores for it (have ['accuracy'])
    """
    if not weights:
        raise ValueError("combine: weights is empty; name at least one reward")
    missing = [name for name in weights if name not in per_reward]
    if missing:
        raise ValueError(
            f"combine: weight given for {missing[0]!r} but no scores for it (have {sorted(per_reward)})"
        )
    lengths = {name: len(per_reward[name]) for name in weights}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"combine: score lists differ in length: {lengths}")
    n = next(iter(lengths.values()))
    filled = {name: zero_if_none(per_reward[name]) for name in weights}
    return [sum(w * filled[name][i] for name, w in weights.items()) for i in range(n)]


__all__ = [
    "REWARDS",
    "GoldParseError",
    "RewardFn",
    "accuracy",
    "applicable_mean",
    "code_binary",
    "code_reward",
    "combine",
    "format_reward",
    "length_reward",
    "tag_count",
    "zero_if_none",
]
