r"""Math accuracy reward: extract the final answer and compare it with the gold answer by math-verify.

Choices:

- Extraction, first rule that finds something wins: the content of the *last* closed
  ``<answer>...</answer>``; else the content of the *last* ``\boxed{...}`` if its braces balance
  (or the token after a brace-less ``\boxed 2``); else the last GSM8K ``#### n`` line. The last,
  because models restate and revise; an answer tag or a box that never closes (a truncated
  completion) does not count.
- Cheap rejection before any parsing: a non-string or empty completion, nothing extracted, or an
  extracted answer longer than ``MAX_ANSWER_CHARS`` all score 0.0 without calling sympy, so
  adversarial megabyte outputs cost a few string scans.
- Reading the answer, in this order:
  1. an integer, after thousands separators (``1,000``, ``1{,}000``) and a currency ``\$`` are
     dropped: the fast path below;
  2. a number followed by plain words (``18 dollars``, ``5 cm``): the number, which is what
     math-verify makes of ``18 \text{ dollars}``. A one-letter word is a variable (``5 x``);
  3. everything else is LaTeX, given to math-verify as inline math (``$...$``, or as it is if it
     has its own delimiters), the way its authors parse a gold: complex numbers (``6 - 5i``),
     expressions, tuples and intervals (``(12,102)``), sets and lists (``3, 5, 7``), equations,
     decimals, ``\text{}`` units, degrees and percentages are math-verify's to read. There is
     deliberately no second, plain-text reading: math-verify's plain-text reader keeps a single
     number, so ``6 - 5i`` would become 5. Only LaTeX's explicit thousands separators
     (``29,\!322``, ``20{,}000``) and a sentence's trailing ``.``/``,`` are removed first.
  Where math-verify itself cannot tell two answers apart (``64\%+1`` is read as 64, ``43_5`` as
  43, what follows a ``\text`` unit is dropped), neither can this reward; ``tests/unit/
  test_math_answers.py`` lists those cases over all of MATH.
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

_LATEX_THOUSANDS = re.compile(r"(?<=\d)(?:,\\!|\{,\})(?=\d{3}(?!\d))")
_BARE_TOKEN = re.compile(r"[^\s$]*")
_GSM8K_LINE = re.compile(r"^[ \t]*####[ \t]*(.*?)[ \t]*$", re.MULTILINE)
_INTEGER = re.compile(r"-?\d{1,300}")
# A number followed by plain words, e.g. "18 dollars", "5 cm.": the words are a unit. Words of one
# letter are not: "5 x" is a product.
_NUMBER_WITH_UNIT = re.compile(r"(-?(?:\d+(?:\.\d*)?|\.\d+))(?:\s+[A-Za-z]{2,})+\.?")
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
    r"""Content of the last ``\boxed{...}`` if its braces balance within the length cap, or the
    token after a brace-less ``\boxed 2`` (as two MATH solutions write it).

    >>> _last_boxed(r"so $\boxed 2$.")
    '2'
    >>> print(_last_boxed(r"\boxedfoo{3}"))  # another command, not a box
    None
    """
    start = len(text)
    while (start := text.rfind("\\boxed", 0, start)) != -1:
        i = start + len("\\boxed")
        rest = text[i : i + MAX_ANSWER_CHARS + 2]
        body = rest.lstrip(" ")
        if body.startswith("{"):
            return _balanced(body)
        if body and body is not rest:  # "\boxed 2": the token up to a space, $ or line end
            return _BARE_TOKEN.match(body).group(0) or None
        if not rest[:1].isalpha():
            return None
    return None


def _balanced(text: str) -> str | None:
    """The content of the brace group ``text`` starts with; None if it never closes."""
    depth = 0
    for j, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[1:j]
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
        return _integer(text)
    unit = _NUMBER_WITH_UNIT.fullmatch(text)
    if unit:  # "18 dollars": the number, as math-verify reads "18 \text{ dollars}"
        number = unit.group(1)
        return (
            _integer(number) if _INTEGER.fullmatch(number) else parse(f"${number}$", parsing_timeout=timeout)
        )
    # The thousands rule above is for integers only (it would read the interval (12,102) as 12102);
    # in LaTeX only the explicit separators go: 29,\!322 and 20{,}000.
    latex = _LATEX_THOUSANDS.sub("", answer.strip().replace("\\$", "")).rstrip(".,; ")
    if "$" in latex or "\\(" in latex or "\\[" in latex:
        return parse(latex, parsing_timeout=timeout)
    return parse(f"${latex}$", parsing_timeout=timeout)


def _integer(text: str) -> list:
    from sympy import Integer

    return [Integer(text), text]


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
