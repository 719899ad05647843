"""Cleaning: normalise, exact dedup, decontaminate train against eval, and count what each removed.

Choices:
- ``normalise`` strips surrounding whitespace from every text field, applies Unicode NFKC (so
  full-width digits and ligatures compare equal to their plain forms) and collapses runs of spaces
  and tabs inside the prompt to one space (none at a line end). Newlines are kept: they can carry
  meaning (lists, code).
- Dedup and decontamination key on the normalised prompt, so rows differing only in spacing or
  Unicode form are the same problem. The first occurrence wins, keeping the output deterministic.
- Decontamination removes a train row when its prompt equals an eval prompt, or, for prompts longer
  than 50 characters, when it shares any 13-gram of words with any eval prompt (the usual rule from
  the GPT-3 report; n and the length are configurable). Words are lowercase alphanumeric runs, so
  punctuation and case do not hide a copy; figure code (``[asy]`` blocks) is left out, as shared
  drawing boilerplate. Short prompts (synthetic arithmetic) use exact match only: "12+7=" shares no
  13-gram anyway and a looser rule would be meaningless at that length.
- Eval wins every collision: train rows are removed, eval rows never are (except its own dups).
- Benchmarks named in config (a user's GSM8K test, MATH test, AIME files) are references like the
  eval split: a train row matching one is removed and the (train id, benchmark item) pair reported.
- Near-duplicates (MinHash LSH) sit between exact dedup and decontamination: ``tasks/data/neardup.py``.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable

NGRAM = 13
NGRAM_MIN_CHARS = 50

_HSPACE = re.compile(r"[^\S\n]+")  # whitespace runs other than newlines
_TRAILING = re.compile(r" +\n")  # a space left at a line end by the collapse
_MESSY = re.compile(r"[^\S\n ]|  | \n")  # anything the collapse would change
_WORD = re.compile(r"\w+")
_FIGURE = re.compile(r"\[asy\].*?(?:\[/asy\]|$)", re.DOTALL)


def normalise_text(text: str) -> str:
    if not unicodedata.is_normalized("NFKC", text):  # the check is far cheaper than the transform
        text = unicodedata.normalize("NFKC", text)
    return text.strip()


def normalise(row: dict) -> dict:
    """A copy of ``row`` with NFKC, stripped text fields and single spaces in the prompt."""
    out = dict(row)
    for key in ("prompt", "answer", "solution"):
        if isinstance(out.get(key), str):
            out[key] = normalise_text(out[key])
    out["prompt"] = _collapse(out["prompt"])
    return out


def _collapse(text: str) -> str:
    if _MESSY.search(text) is None:  # already single-spaced: most prompts, and every normalised one
        return text
    return _TRAILING.sub("\n", _HSPACE.sub(" ", text))


def prompt_key(prompt: str) -> str:
    """The identity of a prompt for dedup and decontamination (idempotent on normalised prompts)."""
    return _collapse(normalise_text(prompt))


def overlap_text(text: str) -> str:
    """The text n-gram and shingle overlap is measured on: figure code (MATH's ``[asy]...[/asy]``
    Asymptote drawings) removed, since it is shared boilerplate, not the problem."""
    return _FIGURE.sub(" ", text) if "[asy]" in text else text


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = _WORD.findall(overlap_text(text).lower())
    return set(zip(*(words[i:] for i in range(n))))  # every run of n words, built in C


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


class Reference:
    """Prompts train rows must not overlap: exact keys and word n-grams, each mapped to its item."""

    def __init__(self, items: Iterable[tuple[str, str]], n: int = NGRAM):
        self.n = n
        self.keys: dict[str, str] = {}
        self.grams: dict[tuple[str, ...], str] = {}
        for label, prompt in items:
            self.keys.setdefault(prompt_key(prompt), label)
            for g in ngrams(prompt, n):
                self.grams.setdefault(g, label)

    def match(self, prompt: str, min_chars: int = NGRAM_MIN_CHARS) -> str | None:
        """The reference item ``prompt`` copies (exact, or an n-gram when long enough), else None."""
        key = prompt_key(prompt)
        if key in self.keys:
            return self.keys[key]
        if len(key) > min_chars and self.grams:
            grams = ngrams(key, self.n)
            if self.grams.keys().isdisjoint(grams):  # the common case, answered in C
                return None
            return next(self.grams[g] for g in grams if g in self.grams)
        return None


def decontaminate(
    train_rows: list[dict],
    eval_rows: list[dict] | Reference,
    min_chars: int = NGRAM_MIN_CHARS,
    pairs: list[dict] | None = None,
) -> tuple[list[dict], int]:
    """Drop train rows that equal a reference prompt or (if long) share a word n-gram with one.

    ``eval_rows`` is the eval split (each item labelled ``eval:<id>``) or a prebuilt ``Reference``;
    each removal is appended to ``pairs`` as ``{"id", "split", "item"}`` when given.
    """
    ref = (
        eval_rows
        if isinstance(eval_rows, Reference)
        else Reference((f"eval:{r['id']}", r["prompt"]) for r in eval_rows)
    )
    kept = []
    for row in train_rows:
        item = ref.match(row["prompt"], min_chars)
        if item is None:
            kept.append(row)
        elif pairs is not None:
            pairs.append({"id": row["id"], "source": row["source"], "item": item})
    return kept, len(train_rows) - len(kept)


def _near_dups(out: dict[str, list[dict]], near_dup, removed_by_source: Counter):
    """MinHash near-duplicate removal when configured: ``(splits, removed per split, pairs)``."""
    near = {s: 0 for s in ("sft", "rl", "eval")}
    if near_dup is None or not near_dup.enabled:
        return out, near, []
    from tasks.data.neardup import near_dup_filter

    out, removed, pairs = near_dup_filter(
        out, near_dup.threshold, near_dup.shingle, near_dup.num_perm, near_dup.min_words
    )
    for c in removed.values():
        removed_by_source += c
    return out, {s: sum(removed[s].values()) for s in near}, pairs


def clean_splits(
    splits: dict[str, list[dict]],
    bad_rows: dict[str, int] | None = None,
    near_dup=None,
    decontam=None,
    benchmarks: Iterable[tuple[str, str]] = (),
    timings: dict[str, float] | None = None,
) -> tuple[dict[str, list[dict]], dict]:
    """Normalise, dedup every split, near-dedup, decontaminate sft and rl; return (splits, report).

    ``near_dup`` / ``decontam`` are the config sections (None: near-dup off, default n-grams);
    ``benchmarks`` are ``(item label, prompt)`` pairs train rows must not overlap, besides eval;
    ``timings``, when given, receives each step's seconds (the benchmark reads them).
    Report: ``{"filters": {"dedup"|"near_dup"|"decontam": {split: n}, "bad_rows": {source: n}},
    "by_source": {filter: {source: n}}, "counts": {split: {source: n}}, "decontam_pairs": [...],
    "near_dup_pairs": [...]}``.
    """
    timings = {} if timings is None else timings
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        timings[step] = time.perf_counter() - clock
        clock = time.perf_counter()

    out: dict[str, list[dict]] = {}
    dedup: dict[str, int] = {}
    by_source: dict[str, Counter] = {"dedup": Counter(), "near_dup": Counter(), "decontam": Counter()}
    # Eval first: it is what train rows are checked against.
    for split in ("eval", "sft", "rl"):
        rows = [normalise(r) for r in splits.get(split, [])]
        out[split], dedup[split] = exact_dedup(rows)
        by_source["dedup"] += Counter(r["source"] for r in rows) - Counter(r["source"] for r in out[split])
    lap("normalise_dedup")
    out, near, near_pairs = _near_dups(out, near_dup, by_source["near_dup"])
    lap("near_dup")
    n, min_chars = (decontam.ngram, decontam.min_chars) if decontam is not None else (NGRAM, NGRAM_MIN_CHARS)
    items = [(f"eval:{r['id']}", r["prompt"]) for r in out["eval"]] + list(benchmarks)
    ref = Reference(items, n)
    decon: dict[str, int] = {"sft": 0, "rl": 0, "eval": 0}
    pairs: list[dict] = []
    for split in ("sft", "rl"):
        before = len(pairs)
        out[split], decon[split] = decontaminate(out[split], ref, min_chars, pairs)
        for p in pairs[before:]:
            p["split"] = split
            by_source["decontam"][p["source"]] += 1
    lap("decontam")
    report = {
        "filters": {
            "dedup": {s: dedup[s] for s in ("sft", "rl", "eval")},
            "near_dup": near,
            "decontam": decon,
            "bad_rows": dict(sorted((bad_rows or {}).items())),
        },
        "by_source": {f: dict(sorted(c.items())) for f, c in by_source.items()},
        "counts": {s: source_counts(out[s]) for s in ("sft", "rl", "eval")},
        "decontam_pairs": pairs,
        "near_dup_pairs": near_pairs,
    }
    return {s: out[s] for s in ("sft", "rl", "eval")}, report


def source_counts(rows: Iterable[dict]) -> dict[str, int]:
    return dict(sorted(Counter(r["source"] for r in rows).items()))
