"""Does the curriculum pay? Each sampler x several seeds of GRPO from the same SFT model.

    python benchmarks/curriculum.py [--arms uniform dump online dump+online prioritized static]
        [--seeds 0 1 2 3 4 5 6 7] [--steps 200] [--eval-every 25] [--eval-per-source 40] [--jobs 2]
        [-S key=value ...]

Protocol:

- Every run starts from ``models/sft`` and draws from ``data/curated/rl.parquet`` (the embedded
  mixture: add_2d/add_3d are nearly solved after SFT, sub_2d/add_4d/mul_1x2 are learnable,
  mul_2x2 is too hard at first). The GRPO settings are ``params.yaml``'s ``grpo`` section plus
  ``-S`` overrides; an arm adds its own (``ARMS``): the sampler, and ``online`` = the online
  per-prompt difficulty model under that sampler. Only the arm and ``grpo.seed`` differ between
  runs; a seed is shared by all arms (the pairs below are same-seed pairs). The runs are built by
  the GRPO stage's own ``build`` and stepped by its ``train_step``.
- 200 steps per run (48 runs, ~28 min on 2 cores): at 100 RL from the default cold start has
  barely moved, and no sampler's gain cleared its CI.
- The reward is accuracy alone (default ``-S grpo.rewards={accuracy: 1.0}``). SFT already teaches
  the format, and with std-normalised advantages a 0.1 format term gives a group of a too-hard
  source a full-size |advantage| whenever its format varies: DUMP would read "learnable" where
  only the format is. Every arm gets the same reward.
- Held-out accuracy: greedy decoding on the first ``--eval-per-source`` prompts of each source of
  ``eval.parquet``, the mean over sources, every ``--eval-every`` steps and at the end. The
  evaluation gets no sampler and cannot update it.
- Figures per arm: AUC = the area under the accuracy-vs-step curve divided by the steps (trapezoid;
  the run's mean accuracy, step 0 included), accuracy at each evaluated step, final accuracy; per
  seed and the median. ``auc_diff_vs_uniform``: the mean over seeds of AUC(arm, seed) -
  AUC(uniform, seed), with a 95% paired bootstrap CI (seeds resampled with their pairs, 10,000
  times); the same for the final accuracy.
- Two runs side by side (``--jobs 2``), one torch thread each: with the lean decoder the small
  ops scale badly over threads. ``OMP_WAIT_POLICY=PASSIVE`` stops idle threads spinning.

Writes ``benchmarks/results/curriculum.json`` and ``benchmarks/results/curriculum.png`` (accuracy
vs step per arm, each seed thin and the median bold, and one panel per source). Figures, not
assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported anywhere

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

OUT = Path("benchmarks/results")
# Each arm sets the online model either way: params.yaml's default must not leak into an arm.
ARMS = {
    "uniform": ["grpo.sampler=uniform", "grpo.online.enabled=false"],
    "dump": ["grpo.sampler=dump", "grpo.online.enabled=false"],
    "online": ["grpo.sampler=uniform", "grpo.online.enabled=true"],
    "dump+online": ["grpo.sampler=dump", "grpo.online.enabled=true"],
    "prioritized": ["grpo.sampler=prioritized", "grpo.online.enabled=false"],
    "static": ["grpo.sampler=static", "grpo.online.enabled=false"],
}


def heldout_rows(path: str, per_source: int) -> list[dict]:
    df = pd.read_parquet(path).sort_values("id", kind="stable")
    return df.groupby("source", sort=True).head(per_source)[["id", "source", "prompt", "answer"]].to_dict("records")


def one_run(job: dict) -> dict:
    """A GRPO run of one arm and seed, evaluated every ``eval_every`` steps and at the end."""
    import torch

    torch.set_num_threads(job["threads"])
    from tasks.config import load_params
    from tasks.evaluation.harness import heldout_accuracy
    from tasks.grpo.train import train_step
    from tasks.rewards.executor import RewardExecutor
    from tasks.stages.grpo import build, load_rows

    overrides = [*job["overrides"], *job["arm_overrides"], f"grpo.seed={job['seed']}", f"grpo.steps={job['steps']}"]
    params = load_params(job["params"], overrides)
    cfg = params.grpo
    rows = load_rows(job["rl"])
    t = build(params, rows, job["model"])
    curve, flat = [], []
    t0 = time.perf_counter()
    with RewardExecutor(1, cfg.reward_timeout_s) as executor:
        for step in range(cfg.steps + 1):
            if step % job["eval_every"] == 0 or step == cfg.steps:
                acc, per = heldout_accuracy(t.model, t.tokenizer, job["eval_rows"], executor, cfg.max_new_tokens,
                                            model_cfg=params.model)
                curve.append({"step": step, "accuracy": acc, **{f"acc/{s}": v for s, v in per.items()}})
            if step == cfg.steps:
                break
            metrics, _, (kept, seen) = train_step(step, t.model, None, t.tokenizer, rows, t.sampler, cfg, t.opt,
                                                   executor, t.gen, params.model)
            groups = sum(ro.n_groups for ro in seen)
            flat.append(1 - sum(len(ro.informative()) for ro in seen) / groups)
    return {"arm": job["arm"], "seed": job["seed"], "curve": curve, "flat_share": float(np.mean(flat)),
            "wall_s": time.perf_counter() - t0}


def auc(curve: list[dict]) -> float:
    """Area under accuracy-vs-step divided by the steps: the run's mean held-out accuracy."""
    steps = np.array([c["step"] for c in curve], dtype=float)
    acc = np.array([c["accuracy"] for c in curve])
    return float(np.sum((acc[1:] + acc[:-1]) / 2 * np.diff(steps)) / (steps[-1] - steps[0]))


def paired_diff_ci(a: list[float], b: list[float], n_boot: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Mean of a - b over paired seeds and its 95% bootstrap CI (pairs resampled together)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    return {"mean": float(d.mean()), "ci95_low": float(np.percentile(boots, 2.5)),
            "ci95_high": float(np.percentile(boots, 97.5))}


def summarise(results: list[dict], arms: list[str]) -> dict:
    by = {(r["arm"], r["seed"]): r for r in results}
    seeds = sorted({r["seed"] for r in results})
    out: dict = {}
    for arm in arms:
        runs = [by[(arm, s)] for s in seeds]
        aucs, finals = [auc(r["curve"]) for r in runs], [r["curve"][-1]["accuracy"] for r in runs]
        at_steps = pd.DataFrame([{c["step"]: c["accuracy"] for c in r["curve"]} for r in runs])
        out[arm] = {
            "seeds": seeds, "auc": aucs, "median_auc": float(np.median(aucs)),
            "final_accuracy": finals, "median_final_accuracy": float(np.median(finals)),
            "median_accuracy_at_step": {int(k): float(v) for k, v in at_steps.median().items()},
            "final_per_source": {k.removeprefix("acc/"): float(np.mean([r["curve"][-1][k] for r in runs]))
                                 for k in runs[0]["curve"][-1] if k.startswith("acc/")},
            "flat_group_share": float(np.mean([r["flat_share"] for r in runs])),
            "wall_s_per_run": float(np.mean([r["wall_s"] for r in runs])),
        }
        if arm != "uniform" and "uniform" in arms:
            base = [by[("uniform", s)] for s in seeds]
            out[arm]["auc_diff_vs_uniform"] = paired_diff_ci(aucs, [auc(r["curve"]) for r in base])
            out[arm]["final_diff_vs_uniform"] = paired_diff_ci(finals, [r["curve"][-1]["accuracy"] for r in base])
    return out


def plot(results: list[dict], arms: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = sorted(k.removeprefix("acc/") for k in results[0]["curve"][0] if k.startswith("acc/"))
    cols = 1 + len(sources)
    fig, axes = plt.subplots(1, cols, figsize=(3.2 * cols, 3.4), dpi=100, sharex=True)
    for ax, key, title in zip(axes, ["accuracy", *[f"acc/{s}" for s in sources]], ["mean over sources", *sources]):
        for i, arm in enumerate(arms):
            curves = [pd.DataFrame(r["curve"]).set_index("step")[key] for r in results if r["arm"] == arm]
            for c in curves:
                ax.plot(c.index, c.values, color=f"C{i}", alpha=0.15, lw=0.7)
            med = pd.concat(curves, axis=1).median(axis=1)
            ax.plot(med.index, med.values, color=f"C{i}", lw=2, label=arm)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("GRPO step", fontsize=8)
    axes[0].set_ylabel("held-out greedy accuracy")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", nargs="+", default=list(ARMS))
    ap.add_argument("--arm", action="append", default=[], metavar="NAME=KEY=VALUE;KEY=VALUE",
                    help="an extra arm: its name, then its overrides separated by ';' (e.g. for a sweep)")
    ap.add_argument("--seeds", nargs="+", type=int, default=list(range(8)))
    ap.add_argument("--steps", type=int, default=200)  # at 100 no gain cleared its CI (README)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--eval-per-source", type=int, default=40)
    ap.add_argument("--jobs", type=int, default=2, help="parallel runs (each gets cores/jobs torch threads)")
    ap.add_argument("-S", "--set", action="append", default=None, metavar="KEY=VALUE",
                    help="params override for every run (default: grpo.rewards={accuracy: 1.0})")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", default="models/sft")
    ap.add_argument("--rl", default="data/curated/rl.parquet")
    ap.add_argument("--eval", default="data/curated/eval.parquet")
    ap.add_argument("--out", default=str(OUT / "curriculum.json"))
    args = ap.parse_args()
    for spec in args.arm:
        name, _, overrides = spec.partition("=")
        ARMS[name] = [o for o in overrides.split(";") if o]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        ap.error(f"unknown arm {unknown[0]!r}; known: {list(ARMS)} (or define it with --arm)")
    if args.set is None:
        args.set = ["grpo.rewards={accuracy: 1.0}"]
    for p in (args.model, args.rl, args.eval):
        if not Path(p).exists():
            print(f"{p} is missing: run `dvc repro sft` first (make experiment-curriculum does)", file=sys.stderr)
            return 1

    eval_rows = heldout_rows(args.eval, args.eval_per_source)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    jobs = [{"arm": a, "seed": s, "steps": args.steps, "eval_every": args.eval_every, "params": args.params,
             "model": args.model, "rl": args.rl, "eval_rows": eval_rows, "overrides": args.set, "threads": threads,
             "arm_overrides": ARMS[a]}
            for s in args.seeds for a in args.arms]
    t0 = time.perf_counter()
    results = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for r in pool.map(one_run, jobs):
            results.append(r)
            print(f"  {r['arm']:<12} seed {r['seed']}: AUC {auc(r['curve']):.3f} final "
                  f"{r['curve'][-1]['accuracy']:.3f} flat {r['flat_share']:.2f} ({r['wall_s']:.0f}s)", flush=True)
    summary = summarise(results, args.arms)
    out = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"}
        | {"start_accuracy": results[0]["curve"][0]["accuracy"]},
        "samplers": summary,
        "wall_s": round(time.perf_counter() - t0, 1),
        "curves": [{k: r[k] for k in ("arm", "seed", "curve", "flat_share")} for r in results],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    plot(results, args.arms, Path(args.out).with_suffix(".png"))

    print(f"\nSFT start {out['settings']['start_accuracy']:.3f}; {out['wall_s'] / 60:.1f} min")
    print(f"{'arm':<12} {'median AUC':>10} {'final':>7} {'flat':>5}  AUC - uniform [95% CI]")
    for arm, s in summary.items():
        d = s.get("auc_diff_vs_uniform")
        ci = f"{d['mean']:+.4f} [{d['ci95_low']:+.4f}, {d['ci95_high']:+.4f}]" if d else ""
        print(f"{arm:<12} {s['median_auc']:>10.3f} {s['median_final_accuracy']:>7.3f} "
              f"{s['flat_group_share']:>5.2f}  {ci}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
