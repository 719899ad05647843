"""GRPO with verifiable rewards (`python -m tasks.stages.grpo`): the stage around the step.

``main`` reads like the stage: build everything (``build``), resume from the newest checkpoint,
run the steps (``loop``), write the outputs (``write_outputs``). The step itself is
``tasks.grpo.train.train_step``.

Checkpoints live in ``checkpoints/grpo/<run>/step-N`` (a collective write of every rank's part,
DeepSpeed's optimiser shards included, to a temporary folder renamed once all are on disk, so a
crash never leaves a half checkpoint) with model, optimiser, sampler and RNG states and the metric
history; the stage resumes from the newest complete one automatically and keeps the last two.
Metrics go to MLflow every ``log_every`` steps (the curriculum every step), a completions table
every ``20 * log_every`` steps; ``plots/grpo_train.csv`` and ``plots/curriculum.{csv,png}`` and
``metrics/grpo.json`` are the DVC outputs beside ``models/grpo``.

With ``eval_every`` > 0, rank 0 evaluates greedy accuracy on a fixed subset of the held-out split
(``eval_subset``: the first ``eval_items`` ids, spread evenly over sources) every N steps and at the
last step, with the evaluate stage's harness (``heldout_accuracy``), logged as ``eval/accuracy``
curves and an ``eval_accuracy`` column of ``plots/grpo_train.csv``. The harness takes no sampler and
has its own (unused: greedy) generator, so it never touches the curriculum or the training RNG
streams; off by default.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from tasks import distributed
from tasks.checkpoint import ResumeError
from tasks.config import Params, stage_cli
from tasks.evaluation.harness import heldout_accuracy
from tasks.grpo.checkpoint import CKPT_ROOT, latest_checkpoint, load_checkpoint, run_key, save_checkpoint
from tasks.grpo.curriculum_plot import plot_probabilities
from tasks.grpo.sampler import PromptSampler, build_sampler
from tasks.grpo.sharding import ShardedSampler, digest, mean_metrics, weights_digest
from tasks.grpo.train import completions_table, train_step
from tasks.lora import Reference, add_adapters, trainable
from tasks.models import load_model, load_tokenizer
from tasks.progress import progress
from tasks.rewards.executor import RewardExecutor
from tasks.tracking import rank_zero_run

ROW_COLUMNS = ("id", "source", "prompt", "answer", "difficulty", "pass_rate", "tests", "rewards")


def eval_subset(path: str, items: int) -> list[dict]:
    """A fixed, small slice of the held-out split: per source the first ids, ``items`` in all."""
    df = load_rows_frame(path).sort_values("id", kind="stable")
    per = max(1, items // df["source"].nunique())
    return df.groupby("source", sort=True).head(per).to_dict("records")


def load_rows_frame(path: str) -> pd.DataFrame:
    df = pd.read_parquet(path)
    return df[[c for c in ROW_COLUMNS if c in df.columns]]


def load_rows(path: str) -> list[dict]:
    """The RL prompts with the columns rewards and samplers read (``tests``/``rewards`` when present)."""
    return load_rows_frame(path).to_dict("records")


def _pass_rate(row: dict) -> float | None:
    """Curation's estimated pass rate (the online model's prior), None where there is none."""
    value = row.get("pass_rate")
    return None if value is None or value != value else float(value)  # NaN: not estimated


@dataclass
class Trainer:
    """Everything one GRPO run holds: model, reference, optimiser, sampler, generator."""

    model: torch.nn.Module
    peft_model: object
    ref_model: object
    tokenizer: object
    opt: torch.optim.Optimizer
    sampler: PromptSampler
    gen: torch.Generator
    rank: int
    world: int
    seeds: torch.Generator | None = None  # grpo.prompt_seeds: the per-prompt seed stream every rank shares


def build(params: Params, rows: list[dict], model_dir: str) -> Trainer:
    cfg = params.grpo
    rank, world, device = distributed.init(cfg.scale)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + rank)  # each rank samples its own completions
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir).to(device)
    peft_model = add_adapters(model, cfg.lora) if cfg.lora.enabled else None
    if peft_model is not None:  # the reference is the base: the same weights with the adapters off
        model = peft_model.get_base_model()
        ref_model = Reference(peft_model) if cfg.beta > 0 else None
    else:
        ref_model = load_model(model_dir).to(device).eval().requires_grad_(False) if cfg.beta > 0 else None
    opt = torch.optim.AdamW(trainable(model), lr=cfg.lr, weight_decay=0.0)
    sampler = build_sampler(
        cfg.sampler,
        [r["source"] for r in rows],
        cfg.seed,
        cfg.curriculum,
        [int(r.get("difficulty", -1)) for r in rows],
        [r["id"] for r in rows],
        cfg.online,
        cfg.group_size,
        [_pass_rate(r) for r in rows],
    )
    seeds = torch.Generator().manual_seed(cfg.seed) if cfg.prompt_seeds else None
    return Trainer(model, peft_model, ref_model, tokenizer, opt, sampler, gen, rank, world, seeds)


def loop(
    t: Trainer,
    params: Params,
    rows: list[dict],
    start: int,
    history: list[dict],
    ckpt_dir: Path,
    run,
    executor: RewardExecutor,
    eval_rows: list[dict] | None = None,
) -> float:
    """Steps ``start..steps-1``: train, log, checkpoint. Appends to ``history``; returns the wall time."""
    cfg = params.grpo
    bar = progress(range(start, cfg.steps), "grpo", initial=start, total=cfg.steps, disable=t.rank > 0)
    t0 = time.perf_counter()
    for step in bar:
        metrics, curriculum, (_, seen) = train_step(
            step,
            t.model,
            t.ref_model,
            t.tokenizer,
            rows,
            t.sampler,
            cfg,
            t.opt,
            executor,
            t.gen,
            params.model,
            t.seeds,
        )
        metrics = mean_metrics(metrics)  # identity for one process
        history.append(
            {
                "step": step,
                **{k: metrics.get(k, float("nan")) for k in ("reward_mean", "accuracy", "loss", "kl")},
                "curriculum": {k: v for k, v in curriculum.items() if k.startswith("curriculum/p/")},
            }
        )
        bar.set_postfix(
            reward=f"{metrics['reward_mean']:.2f}", acc=f"{metrics['accuracy']:.2f}", refresh=False
        )
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            run.log_metrics(metrics, step)
        else:  # the curriculum is logged every step: its probabilities move step by step
            run.log_metrics({k: v for k, v in metrics.items() if k.startswith("curriculum/")}, step)
        if eval_rows and t.rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps - 1):
            acc, per = heldout_accuracy(
                distributed.unwrap(t.model),
                t.tokenizer,
                eval_rows,
                executor,
                cfg.max_new_tokens,
                model_cfg=params.model,
            )
            history[-1]["eval_accuracy"] = acc
            run.log_metrics({"eval/accuracy": acc, **{f"eval/accuracy/{s}": v for s, v in per.items()}}, step)
        if step % (cfg.log_every * 20) == 0:  # a sample of completions, for reading
            run.log_table(completions_table(seen), f"completions/step_{step:06d}.json")
        if (step + 1) % cfg.save_every == 0:  # a collective; the last step too (a crash before the save)
            save_checkpoint(ckpt_dir, step + 1, t.model, t.opt, t.sampler, t.gen, history, cfg, t.seeds)
    return time.perf_counter() - t0


def write_outputs(params: Params, history: list[dict], wall: float, run) -> dict:
    """``metrics/grpo.json``, ``plots/grpo_train.csv``, ``plots/curriculum.{csv,png}`` (rank 0)."""
    cfg = params.grpo
    tail = history[-max(1, len(history) // 10) :]
    summary = {
        "steps": cfg.steps,
        "final_reward_mean": sum(h["reward_mean"] for h in tail) / len(tail),
        "final_train_accuracy": sum(h["accuracy"] for h in tail) / len(tail),
        "wall_s": round(wall, 1),
    }
    Path("metrics").mkdir(exist_ok=True)
    Path("plots").mkdir(exist_ok=True)
    Path("metrics/grpo.json").write_text(json.dumps(summary, indent=2) + "\n")
    pd.DataFrame([{k: v for k, v in h.items() if k != "curriculum"} for h in history]).to_csv(
        "plots/grpo_train.csv", index=False
    )
    probs = pd.DataFrame(
        [
            {"step": h["step"], "source": k.removeprefix("curriculum/p/"), "probability": v}
            for h in history
            for k, v in h["curriculum"].items()
        ]
    )
    probs.to_csv("plots/curriculum.csv", index=False)
    plot_probabilities(probs, Path("plots/curriculum.png"), title=f"grpo.sampler = {cfg.sampler}")
    run.log_artifact("plots/curriculum.png")
    return summary


def main(argv: list[str] | None = None) -> int:
    args, params = stage_cli(
        __doc__,
        argv,
        {"data": "data/curated/rl.parquet", "model": "models/sft", "eval_data": "data/curated/eval.parquet"},
    )
    cfg = params.grpo
    if (code := distributed.maybe_relaunch("tasks.stages.grpo", argv, cfg.scale)) is not None:
        return code
    rows = load_rows(args.data)
    if not rows:
        print(f"{args.data}: no RL prompts", file=sys.stderr)
        return 1
    t = build(params, rows, args.model)
    t.model, t.opt = distributed.wrap(t.model, t.opt, cfg.scale, cfg.max_grad_norm)
    if t.world > 1:
        t.sampler = ShardedSampler(t.sampler, t.rank, t.world)
        print(f"grpo: rank {t.rank} of world size {t.world}", flush=True)
    ckpt_dir = CKPT_ROOT / run_key(cfg, [Path(args.data), Path(args.model)])
    history: list[dict] = []
    start = 0
    if ckpt := latest_checkpoint(ckpt_dir):  # after wrap: a DeepSpeed engine loads its own shards
        try:
            start, history = load_checkpoint(ckpt, t.model, t.opt, t.sampler, t.gen, cfg, t.seeds)
        except ResumeError as e:
            print(f"grpo: {e}", file=sys.stderr)
            return 2
        print(f"grpo: resuming from {ckpt} (step {start})")

    with (
        rank_zero_run(params.tracking, "grpo", cfg.model_dump()) as run,
        RewardExecutor(cfg.reward_workers, cfg.reward_timeout_s) as executor,
    ):
        run.log_input_files([args.data])
        run.set_tags({"resumed_from_step": start})
        eval_rows = eval_subset(args.eval_data, cfg.eval_items) if cfg.eval_every else None
        wall = loop(t, params, rows, start, history, ckpt_dir, run, executor, eval_rows)
        distributed.save_pretrained(t.model, t.tokenizer, cfg.out_dir, t.peft_model)
        run.log_metrics({"wall_s": wall})
        if t.world > 1:  # the curriculum state and the weights must agree on every rank
            print(
                f"grpo: rank {t.rank} sampler {digest(t.sampler.state_dict())} "
                f"weights {weights_digest(t.model)}",
                flush=True,
            )
        distributed.shutdown()
        if t.rank > 0:
            return 0
        summary = write_outputs(params, history, wall, run)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # the finished model is the DVC output now
    print(
        f"grpo: {cfg.steps} steps in {wall:.1f}s, "
        f"train accuracy (last 10%) {summary['final_train_accuracy']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
