"""Code rewards: run the completion's program against the row's tests in the local sandbox.

Choices:

- The row's ``tests`` (a JSON string or a list) holds test cases of two kinds, which may be mixed:
  ``{"input": ..., "output": ...}`` (the program reads stdin; it passes if it exits 0 and its
  stdout equals the expected output line by line after trailing whitespace is stripped from each
  line and trailing blank lines are dropped) and ``{"assert": "assert f(2) == 4"}`` (passes if the
  assert runs without raising after the program ran). A row without ``tests`` is not a code row:
  the rewards return None. Malformed ``tests`` raise ``ValueError`` naming the problem, which the
  executor counts as an error, so a broken dataset row is visible.
- The program is the last fenced block tagged python/py/python3 or untagged, taken from inside the
  last closed ``<answer>...</answer>`` if that holds one, else from the whole completion. Blocks
  tagged with another language (```text, ```bash) are never run; an unclosed fence (a truncated
  completion) does not count. No program, or one over ``MAX_CODE_CHARS``, scores 0.0.
- All assert tests of a row run in ONE sandbox process (the program once, then the calls of each
  assert); the asserts are judged in this process from the values the calls returned, so the
  expected values never enter the sandbox (``tasks.rewards.asserts``). Each stdin/stdout test gets
  its own process, since each needs its own stdin, and its output is compared here. What the
  sandbox guarantees, and what not, is in ``tasks.rewards.sandbox``.
- Time budget: a row gets at most ``ROW_BUDGET_S`` of sandbox wall time in all; each run's wall
  limit is the smaller of ``LIMITS.wall_s`` and what is left, and tests not started when the
  budget is spent fail. The reward executor's per-item ``timeout_s`` must exceed
  ``ROW_BUDGET_S`` plus set-up and tear-down (~0.1 s a run): ``timeout_s >= ROW_BUDGET_S + 1``
  (the default 5 s with the default 4 s budget). If the executor's timer fires anyway, the
  sandbox's ``finally`` kills the program's processes and removes its directory.
- ``code`` is the fraction of tests passed (partial credit, a denser signal); ``code_binary`` is
  1.0 only if every test passed, the usual pass@k criterion.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tasks.rewards.sandbox import RLimits, SandboxError, isolation, run_asserts, run_program

MAX_CODE_CHARS = 20_000
ROW_BUDGET_S = 4.0
LIMITS = RLimits()
MIN_RUN_S = 0.2  # below this a run cannot even start the interpreter: count the test as failed

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE)
_PYTHON_TAGS = {"", "python", "py", "python3"}


def extract_code(completion: str) -> str | None:
    """The program in a completion, by the rules in the module docstring; None if absent.

    >>> extract_code("<think>```python\\nx = 1\\n```</think><answer>```python\\nprint(2)\\n```</answer>")
    'print(2)\\n'
    >>> extract_code("draft:\\n```py\\nprint(1)\\n```\\nfinal:\\n```\\nprint(3)\\n```\\n```text\\n3\\n```")
    'print(3)\\n'
    >>> print(extract_code("```python\\nprint(1)"))  # never closed
    None
    """
    end = completion.rfind("</answer>")
    if end != -1:
        start = completion.rfind("<answer>", 0, end)
        if start != -1:
            code = _last_block(completion[start + len("<answer>") : end])
            if code is not None:
                return code
    return _last_block(completion)


def _last_block(text: str) -> str | None:
    blocks = [m.group(2) for m in _FENCE.finditer(text) if m.group(1).lower() in _PYTHON_TAGS]
    return blocks[-1] if blocks else None


def parse_tests(raw: object) -> list[dict[str, str]]:
    """Validate a row's ``tests``: a JSON string or a list of {"input","output"} / {"assert"} dicts.

    >>> parse_tests('[{"input": "1\\\\n", "output": "2"}, {"assert": "assert f(1) == 2"}]')
    [{'input': '1\\n', 'output': '2'}, {'assert': 'assert f(1) == 2'}]
    >>> parse_tests('[{"input": "1"}]')
    Traceback (most recent call last):
    ...
    ValueError: code tests[0]: expected {"input", "output"} or {"assert"} string fields, got keys ['input']
    """
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"code tests: not valid JSON ({e})") from None
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"code tests: expected a non-empty list of test cases, got {type(raw).__name__}")
    tests = []
    for i, case in enumerate(raw):
        keys = sorted(case) if isinstance(case, dict) else None
        ok = keys in (["input", "output"], ["assert"]) and all(isinstance(v, str) for v in case.values())
        if not ok:
            got = f"keys {keys}" if keys is not None else type(case).__name__
            raise ValueError(
                f'code tests[{i}]: expected {{"input", "output"}} or {{"assert"}} string fields, got {got}'
            )
        if "assert" in case:
            try:
                compile(case["assert"], f"tests[{i}]", "exec")
            except SyntaxError as e:
                raise ValueError(f"code tests[{i}]: assert is not valid Python ({e.msg})") from None
        tests.append(dict(case))
    return tests


def _normalise_output(text: str) -> str:
    """Trailing whitespace off every line, trailing blank lines dropped.

    >>> _normalise_output("1 2  \\n3\\r\\n\\n\\n")
    '1 2\\n3'
    """
    return "\n".join(line.rstrip() for line in text.splitlines()).rstrip("\n")


def run_tests(
    code: str, tests: list[dict[str, str]], budget_s: float | None = None, base: RLimits | None = None
) -> list[bool]:
    """Verdict per test case (in order), spending at most ``budget_s`` (default ``ROW_BUDGET_S``)
    of wall time in all, each run under ``base`` (default ``LIMITS``)."""
    base = base or LIMITS
    deadline = time.monotonic() + (ROW_BUDGET_S if budget_s is None else budget_s)
    verdicts = [False] * len(tests)

    def limits() -> RLimits | None:
        left = deadline - time.monotonic()
        return replace(base, wall_s=min(base.wall_s, left)) if left >= MIN_RUN_S else None

    asserts = [i for i, t in enumerate(tests) if "assert" in t]
    if asserts and (lim := limits()) is not None:
        res = run_asserts(code, [tests[i]["assert"] for i in asserts], lim)
        for i, ok in zip(asserts, res.passed):
            verdicts[i] = ok
    for i, test in enumerate(tests):
        if "assert" in test or (lim := limits()) is None:
            continue
        res = run_program(code, test["input"], lim)
        verdicts[i] = res.status == "ok" and _normalise_output(res.stdout) == _normalise_output(
            test["output"]
        )
    return verdicts


def _verdicts(completion: object, row: Mapping[str, Any]) -> list[bool] | None:
    raw = row.get("tests")
    if raw is None:
        return None
    tests = parse_tests(raw)  # a bad row raises even when the completion is junk
    if not isinstance(completion, str):
        return [False]
    code = extract_code(completion)
    if code is None or not code.strip() or len(code) > MAX_CODE_CHARS:
        return [False]
    return run_tests(code, tests)


def code_reward(completion: object, row: Mapping[str, Any]) -> float | None:
    """Fraction of the row's tests the completion's program passes; None without ``tests``.

    >>> print(code_reward("```python\\nprint(1)\\n```", {"answer": "3"}))
    None
    >>> code_reward(None, {"tests": [{"input": "", "output": "1"}]})
    0.0
    """
    verdicts = _verdicts(completion, row)
    return None if verdicts is None else sum(verdicts) / len(verdicts)


def code_binary(completion: object, row: Mapping[str, Any]) -> float | None:
    """1.0 if the program passes every test, else 0.0; None without ``tests``."""
    verdicts = _verdicts(completion, row)
    return None if verdicts is None else float(all(verdicts))


def warmup() -> None:
    """Probe the sandbox once at worker start (bubblewrap, interpreter, libraries, cgroup), outside
    any item's timer. A machine without a working sandbox still starts its workers: the error then
    comes with each code item, counted, while other rewards score normally."""
    try:
        isolation()
    except SandboxError:
        pass


code_reward.warmup = warmup  # type: ignore[attr-defined]  # RewardExecutor calls these at worker start
code_binary.warmup = warmup  # type: ignore[attr-defined]
