"""Cleaning: normalise, exact dedup, decontaminate train against eval, and count what each removed.

Choices:
- ``normalise`` strips surrounding whitespace from every text field, applies Unicode NFKC (so
  full-width digits and ligatures compare equal to their plain forms) and collapses runs of spaces
  and tabs inside the prompt to one space (none at a line end). Newlines are kept: they can carry meaning (lists, code).
- Dedup and decontamination key on the normalised prompt, so rows differing only in spacing or
  Unicode form are the same problem. The first occurrence wins, keeping the output deterministic.
- Decontamination removes a train row when its prompt equals an eval prompt, or, for prompts longer
  than 50 characters, when it shares any 13-gram of words with any eval prompt (the usual rule from
  the GPT-3 report). Words are lowercase alphanumeric runs, so punctuation and case do not hide a
  copy. Short prompts (synthetic arithmetic) use exact match only: "12+7=" shares no 13-gram anyway
  and a looser rule would be meaningless at that length.
- Eval wins every collision: train rows are removed, eval rows never are (except its own dups).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

NGRAM = 13
NGRAM_MIN_CHARS = 50

_HSPACE = re.compile(r"[^\S\n]+")  # whitespace runs other than newlines
_TRAILING = re.compile(r" +\n")  # a space left at a line end by the collapse
_WORD = re.compile(r"\w+")


def normalise_text(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def normalise(row: dict) -> dict:
    """A copy of ``row`` with NFKC, stripped text fields and single spaces in the prompt."""
    out = dict(row)
    for key in ("prompt", "answer", "solution"):
        if isinstance(out.get(key), str):
            out[key] = normalise_text(out[key])
    out["prompt"] = _collapse(out["prompt"])
    return out


def _collapse(text: str) -> str:
    return _TRAILING.sub("\n", _HSPACE.sub(" ", text))


def prompt_key(prompt: str) -> str:
    """The identity of a prompt for dedup and decontamination (idempotent on normalised prompts)."""
    return _collapse(normalise_text(prompt))


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def exact_dedup(rows: list[dict]) -> tuple[list[dict], int]:
    """Keep the first row of each normalised prompt; return (rows, n_removed)."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        key = prompt_key(row["prompt"])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


def decontaminate(train_rows: list[dict], eval_rows: list[dict]) -> tuple[list[dict], int]:
    """Drop train rows that equal an eval prompt or (if long) share a word 13-gram with one."""
    eval_keys = {prompt_key(r["prompt"]) for r in eval_rows}
    eval_grams: set[tuple[str, ...]] = set()
    for r in eval_rows:
        eval_grams |= ngrams(r["prompt"])
    kept = []
    for row in train_rows:
        key = prompt_key(row["prompt"])
        if key in eval_keys:
            continue
        if len(key) > NGRAM_MIN_CHARS and eval_grams and not eval_grams.isdisjoint(ngrams(key)):
            continue
        kept.append(row)
    return kept, len(train_rows) - len(kept)


def clean_splits(
    splits: dict[str, list[dict]], bad_rows: dict[str, int] | None = None
) -> tuple[dict[str, list[dict]], dict]:
    """Normalise, dedup every split, decontaminate sft and rl against eval; return (splits, report).

    Report: ``{"filters": {"dedup": {split: n}, "decontam": {split: n}, "bad_rows": {source: n}},
    "counts": {split: {source: n}}}``.
    """
    out: dict[str, list[dict]] = {}
    dedup: dict[str, int] = {}
    decontam: dict[str, int] = {"sft": 0, "rl": 0, "eval": 0}
    # Eval first: it is what train rows are checked against.
    for split in ("eval", "sft", "rl"):
        out[split], dedup[split] = exact_dedup([normalise(r) for r in splits.get(split, [])])
    for split in ("sft", "rl"):
        out[split], decontam[split] = decontaminate(out[split], out["eval"])
    report = {
        "filters": {
            "dedup": {s: dedup[s] for s in ("sft", "rl", "eval")},
            "decontam": decontam,
            "bad_rows": dict(sorted((bad_rows or {}).items())),
        },
        "counts": {s: source_counts(out[s]) for s in ("sft", "rl", "eval")},
    }
    return {s: out[s] for s in ("sft", "rl", "eval")}, report


def source_counts(rows: Iterable[dict]) -> dict[str, int]:
    return dict(sorted(Counter(r["source"] for r in rows).items()))
