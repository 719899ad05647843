"""Adapters: one raw record of a source format -> a curated row, or the reason it is unusable.

Every adapter is ``fn(record, spec) -> dict | str``: a row, or a reason naming the field. Reasons
read ``category (detail)``; the category is what the report counts. Field checks shared by all
formats (``text_field``): a value must be present, of the right type, non-empty after stripping,
free of NUL characters and encodable as UTF-8 (a JSON ``"\\ud800"`` escape decodes to a lone
surrogate, which parquet cannot store).

Formats and their choices:

- ``gsm8k``: see ``tasks/data/gsm8k.py``.
- ``math``: ``problem`` + ``solution``; the gold is the last ``\\boxed{...}`` (or ``\\fbox{...}``) of
  the solution, braces balanced, also the brace-less ``\\boxed 2``; ``level`` ("Level 3") becomes
  ``difficulty`` (-1 for "Level ?"), ``type`` is kept.
- ``numina``: ``problem`` / ``solution`` / optional ``answer``: the answer column first, else the
  boxed answer of the solution.
- ``mbpp``: a code row. The prompt is ``text`` plus the first assert as the signature hint (the
  usual MBPP prompt); the tests are every ``test_list`` assert, each preceded by
  ``test_setup_code`` (it may use names the program defines, so it runs after it); the reference
  ``code`` is kept for verification. An assert that does not parse drops the row.
- ``stdio``: ``prompt`` (or ``question``), ``tests`` as a list of ``{input, output}`` (or parallel
  ``inputs`` / ``outputs`` lists), optional ``solution`` program and ``id``.
- ``columns``: ``spec.columns`` names the fields; a row with ``tests`` is a code row, else math.

Code rows carry ``tests`` (a JSON string, what ``tasks.rewards.code.parse_tests`` reads) and
``rewards = "code,format"``; their ``answer`` is the empty string (the tests are the gold), and
their reference program rides in ``reference`` until verification, never into the outputs.
Math rows from files carry ``rewards = None`` (every configured reward applies, as today).
"""

from __future__ import annotations

import json
import re
from typing import Any

from tasks.data.synthetic import format_solution

NO_DIFFICULTY = -1
CODE_REWARDS = "code,format"
_LEVEL = re.compile(r"Level (\d+)")


def text_field(record: dict, key: str, required: bool = True) -> str | None:
    """The stripped-for-checking text at ``record[key]``; raises ValueError with the reason."""
    value = record.get(key)
    if value is None:
        if required:
            raise ValueError(f"missing field ({key})" if key not in record else f"null field ({key})")
        return None
    if not isinstance(value, str):
        raise ValueError(f"wrong type ({key}: {type(value).__name__}, expected str)")
    check_text(value, key)
    return value


def check_text(value: str, key: str) -> None:
    if not value.strip():
        raise ValueError(f"empty field ({key})")
    if "\x00" in value:
        raise ValueError(f"NUL character ({key})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"lone surrogate ({key})") from None


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces) or ``\\boxed x``.

    >>> last_boxed(r"so $\\boxed{\\frac{1}{2}}$ and not \\boxed{3")
    '\\\\frac{1}{2}'
    >>> last_boxed(r"The answer is $\\boxed 2$.")
    '2'
    """
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)", text)]
    for m in reversed(starts):
        rest = text[m.end() :]
        if rest.startswith("{"):
            depth = 0
            for i, c in enumerate(rest):
                depth += (c == "{") - (c == "}")
                if depth == 0:
                    return rest[1:i].strip() or None
            continue  # unbalanced: try the previous one
        if bare := re.match(r" +([^\s$]+)", rest):
            return bare.group(1).rstrip(".")
    return None


def _gold_ok(answer: str) -> str | None:
    if "<" in answer or ">" in answer:
        return "answer has '<' or '>' (it cannot sit inside <answer> tags)"
    return None


def _math_row(
    prompt: str, answer: str, solution: str | None, difficulty: int = NO_DIFFICULTY, kind: str | None = None
) -> dict | str:
    if bad := _gold_ok(answer):
        return bad
    return {
        "prompt": prompt,
        "answer": answer,
        "difficulty": difficulty,
        "type": kind,
        "solution": format_solution(solution.strip(), answer) if solution else None,
    }


def adapt_math(record: dict, spec) -> dict | str:
    prompt, solution = text_field(record, "problem"), text_field(record, "solution")
    answer = last_boxed(solution)
    if answer is None:
        return "no boxed answer (solution)"
    level = record.get("level")
    m = _LEVEL.fullmatch(level.strip()) if isinstance(level, str) else None
    kind = record.get("type") if isinstance(record.get("type"), str) else None
    return _math_row(prompt, answer, solution, int(m.group(1)) if m else NO_DIFFICULTY, kind)


def adapt_numina(record: dict, spec) -> dict | str:
    prompt, solution = text_field(record, "problem"), text_field(record, "solution", required=False)
    answer = text_field(record, "answer", required=False) if record.get("answer") not in (None, "") else None
    if answer is None and solution is not None:
        answer = last_boxed(solution)
    if answer is None:
        return "no answer (neither an answer column nor a boxed answer in the solution)"
    return _math_row(prompt, answer.strip(), solution)


def _code_row(prompt: str, tests: list[dict], reference: str | None, difficulty: int = NO_DIFFICULTY) -> dict:
    return {
        "prompt": prompt,
        "answer": "",
        "difficulty": difficulty,
        "type": "code",
        "solution": None,
        "tests": json.dumps(tests, ensure_ascii=False),
        "rewards": CODE_REWARDS,
        "reference": reference,
    }


def _parses(code: str, where: str) -> None:
    try:
        compile(code, where, "exec")
    except (SyntaxError, ValueError) as e:
        raise ValueError(f"assert does not parse ({where}: {getattr(e, 'msg', e)})") from None


def adapt_mbpp(record: dict, spec) -> dict | str:
    text, code = text_field(record, "text"), text_field(record, "code", required=False)
    asserts, setup = record.get("test_list"), record.get("test_setup_code") or ""
    if not isinstance(asserts, list) or not asserts or not all(isinstance(a, str) for a in asserts):
        return "wrong type (test_list: expected a non-empty list of strings)"
    if not isinstance(setup, str):
        return f"wrong type (test_setup_code: {type(setup).__name__}, expected str)"
    for i, a in enumerate(asserts):
        check_text(a, f"test_list[{i}]")
        _parses(a, f"test_list[{i}]")
    _parses(setup, "test_setup_code")
    prefix = setup.strip() + "\n" if setup.strip() else ""
    tests = [{"assert": prefix + a.strip()} for a in asserts]
    prompt = f"{text.strip()}\nYour code should pass this test:\n{asserts[0].strip()}"
    return _code_row(prompt, tests, code.replace("\r\n", "\n") if code else None)


def stdio_tests(raw: Any, where: str = "tests") -> list[dict]:
    """``[{input, output}]`` from a list of cases or an ``{inputs, outputs}`` pair of lists."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"malformed tests ({where}: not JSON: {e.msg})") from None
    if isinstance(raw, dict) and set(raw) >= {"inputs", "outputs"}:
        if not isinstance(raw["inputs"], list) or len(raw["inputs"]) != len(raw["outputs"] or []):
            raise ValueError(f"malformed tests ({where}: inputs and outputs differ in length)")
        raw = [{"input": i, "output": o} for i, o in zip(raw["inputs"], raw["outputs"])]
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"malformed tests ({where}: expected a non-empty list)")
    for i, case in enumerate(raw):
        ok = isinstance(case, dict) and (
            (set(case) == {"input", "output"} and all(isinstance(v, str) for v in case.values()))
            or (set(case) == {"assert"} and isinstance(case["assert"], str))
        )
        if not ok:
            raise ValueError(
                f'malformed tests ({where}[{i}]: expected {{"input", "output"}} or {{"assert"}} strings)'
            )
        if "assert" in case:
            _parses(case["assert"], f"{where}[{i}]")
    return raw


def adapt_stdio(record: dict, spec) -> dict | str:
    key = "prompt" if "prompt" in record else "question"
    prompt = text_field(record, key)
    solution = record.get("solution")
    if solution is None and isinstance(record.get("solutions"), list) and record["solutions"]:
        solution = record["solutions"][0]
    if solution is not None and not isinstance(solution, str):
        return f"wrong type (solution: {type(solution).__name__}, expected str)"
    return _code_row(prompt, stdio_tests(record.get("tests"), "tests"), solution)


def adapt_columns(record: dict, spec) -> dict | str:
    cols = spec.columns
    prompt = text_field(record, cols.prompt)
    difficulty = NO_DIFFICULTY
    if cols.difficulty and record.get(cols.difficulty) not in (None, ""):
        try:
            difficulty = int(record[cols.difficulty])
        except (TypeError, ValueError):
            return f"wrong type ({cols.difficulty}: expected an integer difficulty)"
    if cols.tests:
        ref = text_field(record, cols.solution, required=False) if cols.solution else None
        return _code_row(prompt, stdio_tests(record.get(cols.tests), cols.tests), ref, difficulty)
    answer = record.get(cols.answer)
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)  # a numeric CSV/parquet column is still a gold answer
        record = {**record, cols.answer: answer}
    answer = text_field(record, cols.answer)
    solution = text_field(record, cols.solution, required=False) if cols.solution else None
    row = _math_row(prompt, answer.strip(), solution, difficulty)
    return row


def source_id(record: dict, spec) -> str | None:
    """The source's own id for a record, if its format has one (else the row id hashes the prompt)."""
    key = {"mbpp": "task_id", "stdio": "id"}.get(spec.kind)
    if spec.kind == "columns":
        key = spec.columns.id
    value = record.get(key) if key else None
    return None if value is None else str(value)
