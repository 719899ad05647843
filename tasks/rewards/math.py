r"""Math accuracy reward: extract the final answer and compare it with the gold answer by math-verify.

Choices:

- Extraction, first rule that finds something wins: the content of the *last* closed
  ``<answer>...</answer>``; else the content of the *last* ``\boxed{...}`` if its braces balance;
  else the last GSM8K ``#### n`` line. The last, because models restate and revise; an answer tag
  or a box that never closes (a truncated completion) does not count.
- Cheap rejection before any parsing: a non-string or empty completion, nothing extracted, or an
  extracted answer longer than ``MAX_ANSWER_CHARS`` all score 0.0 without calling sympy, so
  adversarial megabyte outputs cost a few string scans.
- Thousands separators (``1,000``, LaTeX ``1{,}000``) are removed on both sides before parsing, so
  ``1,000`` equals ``1000`` and is never read as a tuple.
- An answer that looks like LaTeX (has ``\``, ``^``, ``_`` or ``{``) and no math delimiters is
  parsed as inline math (``$...$``), which reads ``2^{10}`` and ``3\frac12`` correctly where the
  plain-text reader sees ``2`` and ``3``; anything else is read as plain text first (so
  ``18 dollars`` is 18, not a product of symbols), falling back to inline math. A currency
  ``\$`` is dropped.
- Plain integers (the common case: the synthetic suite, GSM8K) skip math-verify's parser and
  become ``[sympy.Integer(n), "n"]``, exactly what ``parse`` returns for them, because that
  parser costs ~2 ms per call (sympy's ``parse_expr`` re-imports its namespace each time) and
  would otherwise dominate a GRPO step's reward time.
- ``verify(gold, pred)`` with gold first: math-verify is asymmetric.
- The gold: absent/None -> None (reward not applicable to this row); present but not parseable to a
  math expression -> ``GoldParseError``, which the executor scores 0.0 and counts as an error, so a
  bad dataset row is visible instead of silently scoring zero. Parsed golds are cached per
  process, since all G completions of a GRPO group share one gold.
- Timeouts: math-verify guards itself with ``signal.alarm`` (whole seconds, main thread only), and
  that guard *cancels* any alarm already armed. ``RewardExecutor`` arms a per-item timer in its
  worker before calling us; when a timer is armed (or we are off the main thread, where signals
  cannot be used) we pass math-verify ``None`` so the executor's timer governs and the timeout is
  counted. Called directly with no timer armed, math-verify's own ``MATH_VERIFY_TIMEOUT_S``
  applies. Parsing and checking untrusted output belongs in the executor's worker processes.

math_verify (and sympy) are imported inside the functions so that importing the reward registry
stays cheap for the config loader.
"""

from __future__ import annotations

import functools
import logging
import re
import signal
import threading
from collections.abc import Mapping
from typing import Any

MAX_ANSWER_CHARS = 1_000
MATH_VERIFY_TIMEOUT_S = 5  # math-verify's own alarm, used only when no caller timer is armed

_GSM8K_LINE = re.compile(r"^[ \t]*####[ \t]*(.*?)[ \t]*$", re.MULTILINE)
_INTEGER = re.compile(r"-?\d{1,300}")
_LATEX_HINT = re.compile(r"[\\^_{]")
# 1-3 digits then groups of exactly three, not inside a longer number or decimal part.
_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,])")


class GoldParseError(ValueError):
    """The row's gold answer is not a math expression math-verify can read."""


def extract_answer(completion: str) -> str | None:
    r"""The final answer in a completion, by the rules in the module docstring; None if absent.

    >>> extract_answer("<answer>1</answer> no, <answer> 2 </answer>")
    '2'
    >>> extract_answer(r"so \boxed{\frac{1}{2}} or rather \boxed{x^{2}}")
    'x^{2}'
    >>> extract_answer("<answer>7</answer> and \\boxed{9}")  # an answer tag beats a box
    '7'
    >>> extract_answer("20 + 52 = 72\n#### 72\n")
    '72'
    >>> print(extract_answer("<answer>12"))  # never closed
    None
    """
    end = completion.rfind("</answer>")
    if end != -1:
        start = completion.rfind("<answer>", 0, end)
        if start != -1:
            return completion[start + len("<answer>") : end].strip()
    boxed = _last_boxed(completion)
    if boxed is not None:
        return boxed.strip()
    if "####" in completion:
        lines = _GSM8K_LINE.findall(completion)
        if lines:
            return lines[-1]
    return None


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{`` if its braces balance within the length cap."""
    start = text.rfind("\\boxed{")
    if start == -1:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, min(len(text), i + MAX_ANSWER_CHARS + 1)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None  # unbalanced, or longer than any answer we would parse


def normalise(answer: str) -> str:
    """Strip, drop LaTeX currency signs and thousands separators.

    >>> normalise(" 1,000,000 ")
    '1000000'
    >>> normalise("1{,}234.5")
    '1234.5'
    >>> normalise(r"\$1,000")
    '1000'
    >>> normalise("(1,2)")  # not a thousands separator
    '(1,2)'
    """
    answer = answer.strip().replace("{,}", ",").replace("\\$", "")
    return _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), answer)


def _math_verify_timeout() -> int | None:
    """math-verify's own alarm, unless a caller's timer is armed or signals are unusable here."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        return None
    return MATH_VERIFY_TIMEOUT_S


def _parse(answer: str, timeout: int | None) -> list:
    from math_verify import parse

    text = normalise(answer)
    if _INTEGER.fullmatch(text):
        from sympy import Integer

        return [Integer(text), text]
    delimited = "$" in text or "\\(" in text or "\\[" in text
    if delimited:
        return parse(text, parsing_timeout=timeout)
    as_math = f"${text}$"
    if _LATEX_HINT.search(text):
        return parse(as_math, parsing_timeout=timeout) or parse(text, parsing_timeout=timeout)
    return parse(text, parsing_timeout=timeout) or parse(as_math, parsing_timeout=timeout)


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout: int | None) -> tuple:
    parsed = _parse(gold, timeout)
    if all(isinstance(p, str) for p in parsed):  # nothing, or only the raw-string fallback
        raise GoldParseError(f"gold answer {gold[:80]!r} is not a parseable math expression")
    return tuple(parsed)


def accuracy(completion: object, row: Mapping[str, Any]) -> float | None:
    r"""1.0 if the completion's final answer equals ``row["answer"]`` mathematically, else 0.0.

    None when the row has no gold answer; ``GoldParseError`` when the gold is unreadable.

    >>> accuracy("<think>7+5+0=12 4+8+1=13</think><answer>132</answer>", {"answer": "132"})
    1.0
    >>> accuracy("<answer>1,000</answer>", {"answer": "1000"})
    1.0
    >>> accuracy(r"so \boxed{\frac{3}{4}}", {"answer": "0.75"})
    1.0
    >>> accuracy("3 + 9 = 12\n#### 12", {"answer": "13"})
    0.0
    >>> accuracy("the answer is 132", {"answer": "132"})  # nothing marked as the answer
    0.0
    >>> accuracy(None, {"answer": "132"})
    0.0
    >>> print(accuracy("<answer>1</answer>", {"prompt": "no gold here"}))
    None
    """
    gold = row.get("answer")
    if gold is None:
        return None
    if not isinstance(completion, str) or not completion:
        return 0.0
    answer = extract_answer(completion)
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return 0.0

    from math_verify import verify

    timeout = _math_verify_timeout()
    gold_parsed = _parse_gold(str(gold), timeout)
    pred = _parse(answer, timeout)
    if not pred:
        return 0.0
    return 1.0 if verify(list(gold_parsed), pred, timeout_seconds=timeout) else 0.0


def warmup() -> None:
    """Import math-verify and build its LaTeX parser once, so the first real item is not slow.

    Also quiets math-verify's logger: it warns once per process that we disabled its alarm
    (deliberately, see the module docstring) and on every parse timeout (which we count).
    """
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    accuracy(r"<answer>\frac{1}{2}</answer>", {"answer": "0.5"})
    accuracy("<answer>2^{10}</answer>", {"answer": "1,024"})


accuracy.warmup = warmup  # type: ignore[attr-defined]  # RewardExecutor calls this at worker start
