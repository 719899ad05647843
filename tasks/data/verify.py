"""Verifiability: drop rows whose gold cannot be checked, through the same reward code GRPO scores with.

- Math rows of real sources: the gold answer must parse with math-verify and verify against itself.
  The check is the ``accuracy`` reward scoring the completion ``<answer>{gold}</answer>``: a gold
  math-verify cannot parse raises ``GoldParseError`` there (an error, score 0), one it parses but
  cannot match to itself scores 0. A row scoring 0 is unverifiable: GRPO could never reward it.
  Synthetic rows are skipped: their golds are integers by construction.
- Code rows: the tests must be well formed (``tasks.rewards.code.parse_tests``, what the code
  reward reads); when the source ships a reference program, it must pass every test in the sandbox:
  the ``code_binary`` reward scoring the reference as a fenced completion.

Both run through ``tasks.rewards.executor.RewardExecutor``: spawned worker processes with a per-item
timeout, because math-verify uses ``signal.alarm`` (never a thread) and a reference program is code
that must not run in this process. The reference program is removed from every row afterwards.
"""

from __future__ import annotations

from collections import Counter

from tasks.config.curate import VerifyConfig

MATH_REASON = "unverifiable gold (math-verify cannot parse or match the answer)"
CODE_REASON = "reference fails its tests (in the sandbox)"


def _score(executor, rows: list[dict], completions: list[str], reward: str) -> list[float]:
    # Strip the row's own reward list: the check names the one reward it needs.
    plain = [{"id": r["id"], "answer": r["answer"], "tests": r.get("tests")} for r in rows]
    res = executor.score(completions, plain, [reward])
    return [s or 0.0 for s in res.per_reward[reward]]


def verify_rows(
    splits: dict[str, list[dict]], cfg: VerifyConfig, skip_sources: set[str], drops: list[dict]
) -> tuple[dict[str, list[dict]], dict[str, Counter]]:
    """Keep verifiable rows; return (splits, removed {reason: Counter(source)}); drops are recorded."""
    from tasks.rewards.code import parse_tests

    flat = [(s, r) for s in splits for r in splits[s]]
    bad: dict[str, str] = {}
    math = (
        [r for _, r in flat if r.get("tests") is None and r["source"] not in skip_sources] if cfg.math else []
    )
    code = [r for _, r in flat if r.get("tests") is not None] if cfg.code else []
    for r in code:
        try:
            parse_tests(r["tests"])
        except ValueError as e:
            bad[r["id"]] = f"malformed tests ({e})"
    run_code = [r for r in code if r["id"] not in bad and r.get("reference")]
    if math or run_code:
        from tasks.rewards.executor import RewardExecutor

        with RewardExecutor(cfg.workers, cfg.timeout_s) as ex:
            if math:
                scores = _score(ex, math, [f"<answer>{r['answer']}</answer>" for r in math], "accuracy")
                bad |= {r["id"]: MATH_REASON for r, s in zip(math, scores) if s < 1.0}
            if run_code:
                done = [f"```python\n{r['reference']}\n```" for r in run_code]
                bad |= {
                    r["id"]: CODE_REASON
                    for r, s in zip(run_code, _score(ex, run_code, done, "code_binary"))
                    if s < 1.0
                }
    removed: dict[str, Counter] = {}
    out: dict[str, list[dict]] = {s: [] for s in splits}
    for split, row in flat:
        row = {k: v for k, v in row.items() if k != "reference"}
        if row["id"] in bad:
            reason = bad[row["id"]]
            removed.setdefault(reason.split(" (")[0], Counter())[row["source"]] += 1
            drops.append({"source": row["source"], "where": f"id {row['id']}", "reason": reason})
        else:
            out[split].append(row)
    return out, removed
