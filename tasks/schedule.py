"""The learning-rate schedule both training stages use, as a pure function of the step.

Linear warmup from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps`` steps, then
``constant`` (stay at ``lr``), ``cosine`` or ``linear`` decay from ``lr`` to ``min_lr_ratio * lr``
at the last step. Being a function of the step alone, a resumed run needs no scheduler state.
"""

from __future__ import annotations

import math

from tasks.config.training import TrainingConfig


def lr_at(step: int, cfg: TrainingConfig) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of a ``cfg.steps``-step run.

    >>> from tasks.config import SFTConfig
    >>> cfg = SFTConfig(lr=1.0, warmup_steps=2, steps=10, lr_schedule="cosine", min_lr_ratio=0.1)
    >>> [round(lr_at(s, cfg), 4) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.55, 0.1]
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.min_lr_ratio
    if cfg.lr_schedule == "cosine":
        return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    return cfg.lr * (floor + (1 - floor) * (1 - progress))
