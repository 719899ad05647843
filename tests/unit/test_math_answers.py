"""The accuracy reward on every gold answer of the real MATH training split (``../shared/data/math``).

For each gold (the last ``\\boxed`` of a solution, read by the reward's own ``extract_answer``): the
gold scores 1.0 against itself; the gold with ``+1`` appended, and the gold with its last digit
changed, score 0.0. Exceptions are allowed only where math-verify itself, used directly
(``verify(parse("$gold$"), parse("$pred$"))``), cannot tell the two apart, and each must fall in a
named category:

- ``percent``: math-verify reads ``64\\%+1`` as 64 (what follows ``\\%`` is dropped);
- ``base``: ``43_5`` is read as 43, the subscript (the base) ignored, so a digit change there is lost;
- ``unit``: ``\\text{ hours}``, ``\\mbox{ cm}^2``, ``^\\circ`` and what follows them are dropped;
- ``approx``: ``\\approx 8.24`` keeps one side;
- ``matrix``: a matrix plus 1 compares equal to the matrix;
- ``tiny``: ``\\frac{1}{2^{98}}`` vs ``\\frac{1}{2^{99}}`` are equal within math-verify's float tolerance.

Golds that math-verify cannot parse at all raise ``GoldParseError`` (a counted, visible error): the
two empty ``\\boxed{}`` of upstream MATH, and ``a + b + c`` / ``\\sin^2 t``, which math-verify's LaTeX
extraction truncates. The ~22,000 checks run in a pool of 2 worker processes (math-verify uses
``signal.alarm``, which needs a main thread).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from tasks.rewards.math import GoldParseError, accuracy, extract_answer

MATH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "math" / "train.jsonl"
UNPARSEABLE = {"": "empty \\boxed{} upstream", "a + b + c": "truncated", "\\sin^2 t": "truncated"}
CATEGORIES = {
    "percent": r"\\%",
    "base": r"\d_(\d|\{\d+\})",
    "unit": r"\\text|\\mbox|\\circ",
    "approx": r"\\approx",
    "matrix": r"pmatrix",
    "tiny": r"\^\{9\d\}",
}


def _last_digit_changed(gold: str) -> str | None:
    digits = [m.start() for m in re.finditer(r"\d", gold)]
    if not digits:
        return None
    k = digits[-1]
    return gold[:k] + str((int(gold[k]) + 1) % 10) + gold[k + 1 :]


def _scores(gold: str) -> dict[str, float | str | None]:
    out: dict[str, float | str | None] = {}
    for kind, pred in (("self", gold), ("plus1", gold + "+1"), ("digit", _last_digit_changed(gold))):
        try:
            out[kind] = None if pred is None else accuracy(f"<answer>{pred}</answer>", {"answer": gold})
        except GoldParseError:
            out[kind] = "GoldParseError"
    return out


def _math_verify_equal(pair: tuple[str, str]) -> bool:
    from math_verify import parse, verify

    gold, pred = pair
    return bool(verify(parse(f"${gold}$"), parse(f"${pred}$")))


def _math_verify_parses(gold: str) -> bool:
    from math_verify import parse

    return any(not isinstance(p, str) for p in parse(f"${gold}$"))


@pytest.mark.slow
def test_every_math_gold_matches_itself_and_not_its_neighbours():
    assert MATH.is_file(), f"MATH data missing: {MATH} (the tests need ../shared beside the checkout)"
    golds = [extract_answer(json.loads(line)["solution"]) for line in MATH.open()]
    assert len(golds) == 7500 and None not in golds
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        scores = list(pool.map(_scores, golds, chunksize=100))
        bad_self = [g for g, s in zip(golds, scores) if s["self"] != 1.0]
        misses = [
            (kind, g, pred)
            for g, s in zip(golds, scores)
            for kind, pred in (("plus1", g + "+1"), ("digit", _last_digit_changed(g)))
            if s[kind] not in (0.0, None, "GoldParseError")
        ]
        mv_equal = list(pool.map(_math_verify_equal, [(g, p) for _, g, p in misses]))
        mv_parses = list(pool.map(_math_verify_parses, bad_self))

    assert sorted(set(bad_self)) == sorted(UNPARSEABLE)
    # an empty gold meets an empty answer, which scores 0.0 before the gold is read
    assert all(scores[golds.index(g)]["self"] == ("GoldParseError" if g else 0.0) for g in bad_self)
    assert mv_parses == [False] * len(bad_self)  # math-verify cannot read them either
    for (kind, gold, pred), equal in zip(misses, mv_equal):
        assert equal, f"{kind}: {pred!r} scores 1.0 against {gold!r}, but math-verify tells them apart"
        assert any(re.search(rx, gold) for rx in CATEGORIES.values()), f"{kind}: {gold!r} in no category"
    counts = {k: sum(kind == k for kind, _, _ in misses) for k in ("plus1", "digit")}
    print(f"MATH golds: {len(golds)}; not self-equal {len(bad_self)}; math-verify exceptions {counts}")
