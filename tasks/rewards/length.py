"""Length reward: DAPO's soft overlong punishment.

With a generation budget ``L_max`` (``grpo.max_new_tokens``) and a cache zone ``L_cache``
(``grpo.overlong_cache``), a completion of ``n`` tokens scores

    0                                   if n <= L_max - L_cache
    ((L_max - L_cache) - n) / L_cache   if L_max - L_cache < n <= L_max   (0 down to -1, linearly)
    -1                                  if n > L_max

Choices:

- The length is counted in *tokens* by the trainer, which alone has the tokenizer; it puts the
  facts on the row it sends to the executor: ``completion_tokens``, ``max_completion_tokens``
  and ``overlong_cache``. A row without them is a wiring mistake, so this raises (the executor
  counts it as an error) rather than quietly returning 0.
- It is a penalty (<= 0), meant to be added to a correctness reward with weight ~1: a correct
  answer that runs into the budget earns less than the same answer stated briefly, and a
  truncated completion is pushed away smoothly instead of by a cliff.
- ``L_cache = 0`` degenerates to the hard rule: 0 inside the budget, -1 beyond it.
- The completion text is not read at all, so the row decides and nothing here is untrusted. The
  other DAPO remedy, dropping truncated completions from the loss, is ``grpo.mask_truncated``
  (in the trainer, since it changes the loss mask, not a score).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FIELDS = ("completion_tokens", "max_completion_tokens", "overlong_cache")


def overlong_penalty(n: int, max_tokens: int, cache: int) -> float:
    """DAPO's soft overlong punishment for an ``n``-token completion.

    >>> [overlong_penalty(n, 64, 16) for n in (10, 48, 56, 64, 65)]
    [0.0, 0.0, -0.5, -1.0, -1.0]
    >>> overlong_penalty(64, 64, 0), overlong_penalty(65, 64, 0)
    (0.0, -1.0)
    """
    if n < 0 or max_tokens < 1 or not 0 <= cache <= max_tokens:
        raise ValueError(
            f"overlong_penalty: need n >= 0, max_tokens >= 1, 0 <= cache <= max_tokens "
            f"(got n={n}, max_tokens={max_tokens}, cache={cache})"
        )
    if n > max_tokens:
        return -1.0
    free = max_tokens - cache
    if n <= free:
        return 0.0
    return (free - n) / cache


def length_reward(completion: object, row: Mapping[str, Any]) -> float:
    """Registered as ``"length"``: the overlong penalty from the token facts the trainer adds.

    >>> length_reward("...", {"completion_tokens": 60, "max_completion_tokens": 64, "overlong_cache": 16})
    -0.75
    >>> length_reward("...", {"answer": "3"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: length reward: row lacks completion_tokens (the trainer adds completion_tokens, ...)
    """
    for key in FIELDS:
        if key not in row:
            raise ValueError(f"length reward: row lacks {key} (the trainer adds {', '.join(FIELDS)})")
    return overlong_penalty(
        int(row["completion_tokens"]), int(row["max_completion_tokens"]), int(row["overlong_cache"])
    )
