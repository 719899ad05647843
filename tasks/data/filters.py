"""Row filters between loading and cleaning: length limits, and benchmark prompts for decontamination.

Length limits (``curate.limits``) are applied here, before the gate, so an over-long row is dropped
and counted rather than failing the whole dataset at the gate (which re-checks the same bounds):

- characters: prompt length within ``[min_prompt_chars, max_prompt_chars]``; answer at most
  ``max_answer_chars``;
- tokens (optional): prompt and solution lengths in tokens of ``limits.tokenizer`` ('tiny' is the
  embedded character tokenizer, else a local path or hub id loaded like the model's). Token
  counting is skipped entirely when no token limit is set, so the default loads no tokenizer.

Every dropped row is ``{source, where: "id <row id>", reason}`` in the same list the loaders fill.
"""

from __future__ import annotations

from collections.abc import Iterator

from tasks.config.curate import Benchmark, GateBounds
from tasks.data.io import Bad, SourceError, read_records

BENCHMARK_FIELDS = ("problem", "question", "prompt", "text")


def _char_reason(row: dict, limits: GateBounds) -> str | None:
    n = len(row["prompt"])
    if n > limits.max_prompt_chars:
        return f"prompt too long ({n} chars > {limits.max_prompt_chars})"
    if n < limits.min_prompt_chars:
        return f"prompt too short ({n} chars < {limits.min_prompt_chars})"
    if len(row["answer"]) > limits.max_answer_chars:
        return f"answer too long ({len(row['answer'])} chars > {limits.max_answer_chars})"
    return None


def _tokenizer(name: str):
    if name == "tiny":
        from tasks.models import build_char_tokenizer

        return build_char_tokenizer()
    from tasks.models import load_tokenizer

    return load_tokenizer(name)


def length_filter(splits: dict[str, list[dict]], limits: GateBounds, drops: list[dict]) -> dict[str, list[dict]]:
    """Drop rows over the character (and, when set, token) limits; each drop is recorded."""
    tok = _tokenizer(limits.tokenizer) if (limits.max_prompt_tokens or limits.max_solution_tokens) else None
    out: dict[str, list[dict]] = {}
    for split, rows in splits.items():
        reasons = [_char_reason(r, limits) for r in rows]
        if tok is not None:
            reasons = _token_reasons(rows, reasons, tok, limits)
        out[split] = [r for r, why in zip(rows, reasons) if why is None]
        drops += [
            {"source": r["source"], "where": f"id {r['id']}", "reason": why}
            for r, why in zip(rows, reasons)
            if why is not None
        ]
    return out


def _token_reasons(rows: list[dict], reasons: list[str | None], tok, limits: GateBounds) -> list[str | None]:
    todo = [i for i, why in enumerate(reasons) if why is None]
    for key, cap in (("prompt", limits.max_prompt_tokens), ("solution", limits.max_solution_tokens)):
        if not cap:
            continue
        idx = [i for i in todo if reasons[i] is None and rows[i].get(key)]
        lengths = (
            [len(ids) for ids in tok([rows[i][key] for i in idx], add_special_tokens=False)["input_ids"]]
            if idx
            else []
        )
        for i, n in zip(idx, lengths):
            if n > cap:
                reasons[i] = f"{key} too long ({n} tokens > {cap})"
    return reasons


def benchmark_items(bench: Benchmark) -> Iterator[tuple[str, str]]:
    """``(label, prompt)`` for each item of a benchmark file; the label names the file and line."""
    name = bench.name or bench.path
    for where, record in read_records(bench.path):
        if isinstance(record, Bad):
            continue  # an unreadable benchmark line cannot be matched against anyway
        field = bench.field or next((f for f in BENCHMARK_FIELDS if isinstance(record.get(f), str)), None)
        if field is None or field not in record:
            raise SourceError(
                f"{where}: no prompt field (set decontam.benchmarks[].field; tried {BENCHMARK_FIELDS})"
            )
        if isinstance(record[field], str):
            yield f"{name}:{where.rsplit(':', 1)[-1]}", record[field]
