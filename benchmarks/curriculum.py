"""Does the curriculum pay? Each sampler x several seeds of GRPO from the same SFT model.

    python benchmarks/curriculum.py [--samplers uniform dump prioritized static] [--seeds 0 1 2 3 4]
        [--steps 125] [--eval-every 25] [--eval-per-source 60] [--target-gain 0.02] [--jobs 2]
        [-S key=value ...]

Protocol:

- Every run starts from ``models/sft`` and draws from ``data/curated/rl.parquet`` (the embedded
  mixture: add_2d/add_3d are nearly solved after SFT, sub_2d/add_4d are learnable, mul_1x2 and
  mul_2x2 are too hard at first). The GRPO settings are ``params.yaml``'s ``grpo`` section (8
  prompts x 8 completions, lr 5e-5); only ``grpo.sampler`` and ``grpo.seed`` change between runs
  and ``--steps`` shortens them.
- The reward is accuracy alone (default ``-S grpo.rewards={accuracy: 1.0}``). SFT already teaches
  the format (~99% of greedy answers are well-formed), and with std-normalised advantages a 0.1
  format term gives a group of a too-hard source a full-size |advantage| whenever its format
  varies: DUMP would read "learnable" where only the format is. Every sampler gets the same reward.
- Held-out accuracy: greedy decoding on the first ``--eval-per-source`` prompts of each source
  of ``eval.parquet``, the mean over sources (each distribution counts the same), every
  ``--eval-every`` steps. This evaluation gets no sampler and cannot update it.
- Target: the SFT model's accuracy on that set plus ``--target-gain``. Steps-to-target is the
  first evaluated step at or above it; a run that never gets there is censored at
  ``steps + eval_every`` (reported as such, and it makes the median conservative for that sampler).
- Per sampler: the steps of each seed, their median and a 95% bootstrap CI of the median (seeds
  resampled, 10,000 times), the final accuracies; ``dump_over_uniform`` is the ratio of medians.
- Two runs side by side (``--jobs 2``), one torch thread each: with the lean decoder the small
  ops scale badly over threads, and two one-thread runs finished a pair of runs in 1.9 min against
  3.2 min for one two-thread run at a time (identical accuracies). ``OMP_WAIT_POLICY=PASSIVE``
  stops torch's idle threads from spinning against the reward workers.

Writes ``benchmarks/results/curriculum.json``, ``benchmarks/results/curriculum.png`` (accuracy
vs step per sampler: each seed thin, the median bold) and prints a table. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported anywhere

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

OUT = Path("benchmarks/results")


def heldout_rows(path: str, per_source: int) -> list[dict]:
    df = pd.read_parquet(path)
    return df.groupby("source", sort=True).head(per_source)[["id", "source", "prompt", "answer"]].to_dict("records")


def one_run(job: dict) -> dict:
    """A GRPO run with one sampler and seed, evaluated every ``eval_every`` steps."""
    import torch

    torch.set_num_threads(job["threads"])
    from tasks.config import load_params
    from tasks.grpo.sampler import build_sampler
    from tasks.grpo.train import train_step
    from tasks.models import load_model, load_tokenizer
    from tasks.rewards.executor import RewardExecutor
    from tasks.stages.evaluate import heldout_accuracy
    from tasks.stages.grpo import ROW_COLUMNS

    params = load_params(job["params"], [f"grpo.sampler={job['sampler']}", f"grpo.seed={job['seed']}",
                                         f"grpo.steps={job['steps']}", *job["overrides"]])
    cfg = params.grpo
    df = pd.read_parquet(job["rl"])
    rows = df[[c for c in ROW_COLUMNS if c in df.columns]].to_dict("records")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    tokenizer, model = load_tokenizer(job["model"]), load_model(job["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sampler = build_sampler(cfg.sampler, [r["source"] for r in rows], cfg.seed, cfg.curriculum,
                            [int(r.get("difficulty", -1)) for r in rows], [r["id"] for r in rows])
    curve, probs = [], []
    t0 = time.perf_counter()
    with RewardExecutor(1, cfg.reward_timeout_s) as executor:
        for step in range(cfg.steps + 1):
            if step % job["eval_every"] == 0:
                acc, per = heldout_accuracy(model, tokenizer, job["eval_rows"], executor, cfg.max_new_tokens)
                curve.append({"step": step, "accuracy": acc, **{f"acc/{s}": v for s, v in per.items()}})
            if step == cfg.steps:
                break
            _, curriculum, _ = train_step(step, model, None, tokenizer, rows, sampler, cfg, opt, executor, gen)
            probs.append({"step": step, **{k.removeprefix("curriculum/p/"): v for k, v in curriculum.items()
                                           if k.startswith("curriculum/p/")}})
    return {**{k: job[k] for k in ("sampler", "seed")}, "curve": curve, "probabilities": probs,
            "wall_s": time.perf_counter() - t0}


def steps_to_target(curve: list[dict], target: float, censored: int) -> int:
    return next((c["step"] for c in curve if c["accuracy"] >= target - 1e-12), censored)


def median_ci(values: list[float], n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    v = np.asarray(values, dtype=float)
    boots = np.median(rng.choice(v, size=(n_boot, len(v)), replace=True), axis=1)
    return float(np.median(v)), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def plot(results: list[dict], samplers: list[str], target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for i, name in enumerate(samplers):
        colour = f"C{i}"
        curves = [pd.DataFrame(r["curve"]).set_index("step")["accuracy"] for r in results if r["sampler"] == name]
        for c in curves:
            ax.plot(c.index, c.values, color=colour, alpha=0.25, lw=0.8)
        med = pd.concat(curves, axis=1).median(axis=1)
        ax.plot(med.index, med.values, color=colour, lw=2.2, label=f"{name} (median of {len(curves)})")
    ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:.3f}")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("held-out accuracy (mean over sources)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samplers", nargs="+", default=["uniform", "dump", "prioritized", "static"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=125)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--eval-per-source", type=int, default=60)
    ap.add_argument("--target-gain", type=float, default=0.02)
    ap.add_argument("--jobs", type=int, default=2, help="parallel runs (each gets cores/jobs torch threads)")
    ap.add_argument("-S", "--set", action="append", default=None, metavar="KEY=VALUE",
                    help="params override for every run (default: grpo.rewards={accuracy: 1.0})")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", default="models/sft")
    ap.add_argument("--rl", default="data/curated/rl.parquet")
    ap.add_argument("--eval", default="data/curated/eval.parquet")
    ap.add_argument("--out", default=str(OUT / "curriculum.json"))
    args = ap.parse_args()
    if args.set is None:
        args.set = ["grpo.rewards={accuracy: 1.0}"]
    for p in (args.model, args.rl, args.eval):
        if not Path(p).exists():
            print(f"{p} is missing: run `dvc repro sft` first (make experiment-curriculum does)", file=sys.stderr)
            return 1

    eval_rows = heldout_rows(args.eval, args.eval_per_source)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    jobs = [{"sampler": s, "seed": seed, "steps": args.steps, "eval_every": args.eval_every, "params": args.params,
             "model": args.model, "rl": args.rl, "eval_rows": eval_rows, "overrides": args.set, "threads": threads}
            for seed in args.seeds for s in args.samplers]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = []
        for r in pool.map(one_run, jobs):
            results.append(r)
            print(f"  {r['sampler']:<12} seed {r['seed']}: final {r['curve'][-1]['accuracy']:.3f} "
                  f"({r['wall_s']:.0f}s)", flush=True)
    wall = time.perf_counter() - t0

    start_acc = results[0]["curve"][0]["accuracy"]  # step 0 = the SFT model, the same for every run
    target = start_acc + args.target_gain
    censored = args.steps + args.eval_every
    summary: dict = {}
    for name in args.samplers:
        runs = [r for r in results if r["sampler"] == name]
        steps = [steps_to_target(r["curve"], target, censored) for r in runs]
        med, lo, hi = median_ci(steps)
        finals = [r["curve"][-1]["accuracy"] for r in runs]
        fmed, flo, fhi = median_ci(finals)
        summary[name] = {
            "seeds": [r["seed"] for r in runs], "steps_to_target": steps, "reached": [s < censored for s in steps],
            "median_steps": med, "ci95_steps": [lo, hi],
            "final_accuracy": finals, "median_final_accuracy": fmed, "ci95_final_accuracy": [flo, fhi],
            "final_per_source": {k.removeprefix("acc/"): statistics.mean(r["curve"][-1][k] for r in runs)
                                 for k in runs[0]["curve"][-1] if k.startswith("acc/")},
            "mean_probabilities_last_20_steps": pd.DataFrame([p for r in runs for p in r["probabilities"][-20:]])
            .drop(columns="step").mean().round(3).to_dict(),
        }
    out = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"start_accuracy": start_acc,
                                                                          "target_accuracy": target,
                                                                          "censored_at": censored},
        "samplers": summary,
        "dump_over_uniform": (summary["dump"]["median_steps"] / summary["uniform"]["median_steps"])
        if {"dump", "uniform"} <= set(summary) else None,
        "wall_s": round(wall, 1),
        "curves": [{"sampler": r["sampler"], "seed": r["seed"], "curve": r["curve"]} for r in results],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    plot(results, args.samplers, target, Path(args.out).with_suffix(".png"))

    print(f"\nSFT start {start_acc:.3f}, target {target:.3f} (censored at {censored}); {wall / 60:.1f} min")
    print(f"{'sampler':<12} {'steps/seed':<28} {'median [95% CI]':<22} final acc median")
    for name, s in summary.items():
        print(f"{name:<12} {str(s['steps_to_target']):<28} {s['median_steps']:>5.0f} [{s['ci95_steps'][0]:.0f}, "
              f"{s['ci95_steps'][1]:.0f}]{'':<8} {s['median_final_accuracy']:.3f}")
    if out["dump_over_uniform"] is not None:
        print(f"dump_over_uniform = {out['dump_over_uniform']:.2f} (target <= 0.70)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
