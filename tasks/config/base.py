"""What every config module shares: the strict base model, the error type, the output format.

Every config model forbids unknown keys (a typo is an error, not a silently ignored setting) and
is frozen (a stage cannot change its own settings behind DVC's back).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# The reasoning format every stage shares: <think>...</think><answer>...</answer>.
THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
