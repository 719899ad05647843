"""Format rewards: does the completion use the ``<think>...</think><answer>...</answer>`` template?

Two shapes of the same signal, both ``fn(completion, row) -> float``:

- ``format_reward`` (registered as ``"format"``) is all-or-nothing: 1.0 only for exactly one think
  block followed by exactly one non-empty answer block, with nothing else around them but
  whitespace. Whitespace is also allowed *between* ``</think>`` and ``<answer>``, because chat
  models commonly put a newline there and it carries no meaning; any other text there fails.
- ``tag_count`` gives 0.25 per correctly used tag, a denser signal early in training when almost
  no completion is fully formatted. A tag is "correctly used" when it appears exactly once and
  sits in template order relative to every other tag that appears exactly once, so a duplicated
  tag earns nothing and swapped blocks earn nothing.

Neither looks at the row: the template is the same for every prompt. A completion that is not a
string (None, bytes, a number) scores 0.0 rather than raising, since model output is untrusted.
Both are linear-time string scans, safe on megabyte-long completions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

TAGS = ("<think>", "</think>", "<answer>", "</answer>")

# Whole-string template; DOTALL so blocks may span lines. The lazy groups cannot run past a tag
# because tag counts are checked first (each tag exactly once).
_TEMPLATE = re.compile(r"\s*<think>(.*)</think>\s*<answer>(.*)</answer>\s*", re.DOTALL)


def format_reward(completion: object, row: Mapping[str, Any] | None = None) -> float:
    """1.0 when the completion is exactly ``<think>...</think><answer>...</answer>``, else 0.0.

    >>> format_reward("<think>7+5+0=12 4+8+1=13</think><answer>132</answer>", {})
    1.0
    >>> format_reward("  <think>a</think>\\n<answer>1</answer>\\n", {})  # whitespace only
    1.0
    >>> format_reward("<think>a</think><answer> </answer>", {})  # empty answer
    0.0
    >>> format_reward("<think>a</think>so <answer>1</answer>", {})  # text between blocks
    0.0
    >>> format_reward("<answer>1</answer><think>a</think>", {})  # wrong order
    0.0
    >>> format_reward("<think>a</think><answer>1</answer><answer>2</answer>", {})
    0.0
    >>> format_reward(None, {})
    0.0
    """
    if not isinstance(completion, str):
        return 0.0
    if any(completion.count(tag) != 1 for tag in TAGS):
        return 0.0
    match = _TEMPLATE.fullmatch(completion)
    if match is None or not match.group(2).strip():
        return 0.0
    return 1.0


def tag_count(completion: object, row: Mapping[str, Any] | None = None) -> float:
    """0.25 for each of the four tags used exactly once and in template order.

    >>> tag_count("<think>a</think><answer>1</answer>", {})
    1.0
    >>> tag_count("<think>a</think><answer>1", {})  # truncated: no closing answer tag
    0.75
    >>> tag_count("<think>a</think> 12", {})
    0.5
    >>> tag_count("<think><think>a</think><answer>1</answer>", {})  # duplicated <think>
    0.75
    >>> tag_count("<answer>1</answer><think>a</think>", {})  # blocks swapped
    0.0
    >>> tag_count(b"<think>", {})
    0.0
    """
    if not isinstance(completion, str):
        return 0.0
    # Position of each tag that occurs exactly once; others can never earn credit.
    pos = {k: completion.find(tag) for k, tag in enumerate(TAGS) if completion.count(tag) == 1}
    credit = 0.0
    for k, p in pos.items():
        in_order = all((j < k) == (q < p) for j, q in pos.items() if j != k)
        if in_order:
            credit += 0.25
    return credit
