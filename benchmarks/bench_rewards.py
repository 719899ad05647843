"""Reward executor throughput and worst-case latency.

    python benchmarks/bench_rewards.py [--workers 2] [--timeout-s 5.0] [--n 1000]

Prints and writes ``benchmarks/results/rewards.json``:

- ``math_verifications_per_s``: accuracy checks per second through ``RewardExecutor`` on a GRPO-like
  batch of n completions (groups of 8 sharing a prompt), median of 3 runs after start-up. The mix
  is 80% integer answers (half right, some with thousands separators) and 20% fractions/LaTeX
  (``\\frac{3}{4}`` vs ``0.75``), which go through math-verify's slower LaTeX parser.
- ``pathological_batch_wall_s``: wall time of one batch of 64 where one answer is
  ``9^{9^{9^{9}}}`` (sympy would evaluate it forever); about ``timeout_s``.
- ``timeout_s``: the per-item timeout used (default: ``grpo.reward_timeout_s``'s default).
- ``sandbox_programs_per_s``: small programs judged per second by the ``code`` reward through the
  same executor: each completion is a fenced Python program that reads two numbers and prints
  their sum, its row has one stdin/stdout test, and every run goes through the sandbox (own
  bubblewrap container, uid drop, seccomp, cgroup, rlimits). Median of 3 batches of ``--n-programs``.

- ``oversize_completion_s``: what scoring one 50 MB completion (plus 7 normal ones) costs through
  the executor: it is over ``max_completion_chars``, so it scores 0 without being pickled or sent.
- ``mbpp_*``: every MBPP task of ``../shared/data/mbpp`` through the ``code`` reward: how many
  reference solutions score 1.0, how many wrong solutions (the tested functions replaced) score
  0.0, the references that did not pass, and the wall time (``--skip-mbpp`` leaves them out).

Also prints the integer-only and LaTeX-only rates. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from tasks.config import GRPOConfig
from tasks.rewards.executor import RewardExecutor
from tasks.rewards.mbpp import check, mbpp_rows


def batch(n: int, kind: str, seed: int = 0) -> tuple[list[str], list[dict]]:
    """n completions in groups of 8; kind is 'mixed', 'integer' or 'latex'."""
    rng = random.Random(seed)
    completions, rows = [], []
    for g in range(0, n, 8):
        latex = kind == "latex" or (kind == "mixed" and rng.random() < 0.2)
        if latex:
            p, q = rng.randint(1, 9), rng.randint(10, 99)
            gold = rf"\frac{{{p}}}{{{q}}}"
        else:
            gold = str(rng.randint(10, 99_999))
        for k in range(min(8, n - g)):
            right = k % 2 == 0
            if latex:
                answer = f"{p}/{q}" if right else rf"\frac{{{p + 1}}}{{{q}}}"
                if k % 4 == 0:
                    answer = repr(round(p / q, 12))  # a decimal: equal within math-verify's rounding
            else:
                value = int(gold) if right else int(gold) + rng.randint(1, 9)
                answer = f"{value:,}" if k % 3 == 0 else str(value)
            completions.append(
                f"<think>{rng.randint(0, 9)}+{rng.randint(0, 9)}=...</think><answer>{answer}</answer>"
            )
            rows.append({"answer": gold})
    return completions, rows


def rate(ex: RewardExecutor, n: int, kind: str, repeats: int = 3) -> float:
    completions, rows = batch(n, kind)
    rates = []
    for _ in range(repeats):
        res = ex.score(completions, rows, ["accuracy"])
        assert res.errors == 0 and res.timeouts == 0, res.error_messages
        assert res.per_reward["accuracy"] == [1.0 if k % 2 == 0 else 0.0 for k in range(n)]  # half right
        rates.append(n / res.wall_s)
    return statistics.median(rates)


def sandbox_rate(ex: RewardExecutor, n: int, repeats: int = 3) -> float:
    """Programs per second through the ``code`` reward (every one runs in the sandbox)."""
    fence = "`" * 3
    completions = [
        f"<think>sum</think><answer>{fence}python\na, b = map(int, input().split())\n"
        f"print(a + b{' + 1' if k % 4 == 3 else ''})\n{fence}</answer>"
        for k in range(n)
    ]
    rows = [{"tests": json.dumps([{"input": f"{k} 2", "output": str(k + 2)}])} for k in range(n)]
    rates = []
    for _ in range(repeats):
        res = ex.score(completions, rows, ["code"])
        assert res.errors == 0 and res.timeouts == 0, res.error_messages
        assert res.per_reward["code"] == [0.0 if k % 4 == 3 else 1.0 for k in range(n)]  # 1 in 4 wrong
        rates.append(n / res.wall_s)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout-s", type=float, default=GRPOConfig().reward_timeout_s)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--n-programs", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rewards.json"))
    parser.add_argument("--skip-mbpp", action="store_true")
    args = parser.parse_args()

    start = time.monotonic()
    with RewardExecutor(workers=args.workers, timeout_s=args.timeout_s) as ex:
        ex.score(["<answer>1</answer>"] * 8, [{"answer": "1"}] * 8, ["accuracy"])
        print(f"start-up ({args.workers} workers): {time.monotonic() - start:.2f} s")
        figures = {kind: rate(ex, args.n, kind) for kind in ("mixed", "integer", "latex")}
        for kind, r in figures.items():
            print(f"accuracy, {kind:>7} answers: {r:8.0f} verifications/s ({args.n} per batch)")

        programs = sandbox_rate(ex, args.n_programs)
        print(f"code reward, sandboxed programs: {programs:8.1f} programs/s ({args.n_programs} per batch)")

        completions, rows = batch(64, "integer", seed=1)
        completions[37] = "<think>big</think><answer>9^{9^{9^{9}}}</answer>"
        res = ex.score(completions, rows, ["accuracy"])
        print(
            f"batch of 64 with one pathological answer: {res.wall_s:.2f} s "
            f"(timeout_s={args.timeout_s}, timeouts={res.timeouts}, errors={res.errors})"
        )
        completions, rows = batch(8, "integer", seed=2)
        completions[3] = "<answer>1</answer>" + "x" * 50 * 2**20
        big = ex.score(completions, rows, ["accuracy", "format"])
        assert big.oversize == 1 and big.per_reward["accuracy"][3] == 0.0
        print(f"batch of 8 with one 50 MB completion: {big.wall_s:.3f} s (oversize={big.oversize})")
    result = {}
    if not args.skip_mbpp:
        tasks = mbpp_rows()
        refs, wrongs, mres, mwall = check(tasks, args.workers)
        print(
            f"MBPP: {len(tasks)} tasks; references scoring 1.0: {len(tasks) - len(refs)}; wrong solutions "
            f"scoring 0.0: {len(tasks) - len(wrongs)}; references that did not pass: {sorted(refs)}; "
            f"{mwall:.1f} s ({mres.timeouts} timeouts, {mres.errors} errors)"
        )
        result = {
            "mbpp_tasks": len(tasks), "mbpp_reference_pass": len(tasks) - len(refs),
            "mbpp_wrong_zero": len(tasks) - len(wrongs), "mbpp_reference_failing": sorted(refs),
            "mbpp_wall_s": round(mwall, 1),
        }  # fmt: skip

    result = {
        **result,
        "oversize_completion_s": round(big.wall_s, 4),
        "math_verifications_per_s": round(figures["mixed"], 1),
        "pathological_batch_wall_s": round(res.wall_s, 3),
        "timeout_s": args.timeout_s,
        "sandbox_programs_per_s": round(programs, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
