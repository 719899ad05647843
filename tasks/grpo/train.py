"""GRPO with verifiable rewards (`python -m tasks.grpo`): the training loop.

One step, top to bottom (the maths is in ``loss.py``, rollouts in ``rollout.py``):

1. the curriculum sampler (``grpo.sampler``) picks ``prompts_per_step`` rows of the ``rl`` split;
2. the policy samples ``group_size`` completions per prompt; the reward executor scores them in
   worker processes (math-verify and code never run in this process); group advantages;
   with ``dynamic_sampling``, all-equal groups are dropped and more prompts drawn (rollout.py);
3. the sampler is updated with every group's statistics (evaluation never updates it);
4. ``num_iterations`` (mu) optimiser updates on the kept rollouts. The first update's forward pass
   gives the rollout policy's log-probs, stored as pi_old for the later ones (no extra forward);
   each update walks micro-batches of ``ceil(P / grad_accum)`` groups, scaling each micro-batch's
   loss so the accumulated gradient equals the whole batch's (for grpo/dr_grpo/dapo; bnpo is a
   per-micro-batch token mean by definition); one clipped gradient step per update. For speed a
   micro-batch of >= 32 rows runs as up to 4 length buckets (rows sorted by length), each trimmed
   to its own longest completion and prompt; the bucket losses are weighted so their sum is
   exactly the micro-batch's loss (``chunks``), so this changes the cost, not the gradient.
   Without a KL term (beta = 0, one process) rows with advantage 0 (all-equal groups) skip the
   forward and backward: they add exactly 0 to loss and gradient, and the denominators still
   count them; if every row is flat the optimiser still steps on a zero gradient;
5. metrics to MLflow, ``plots/grpo_train.csv`` and ``plots/curriculum.csv``; a checkpoint every
   ``save_every`` steps.

The learning rate is a pure function of the step (linear warmup, then constant, cosine or linear
decay), so a resume needs no scheduler state. Checkpoints live in ``checkpoints/grpo/<run>/step-N``
(written to a temporary folder, then renamed, so a crash never leaves a half checkpoint) with
model, optimiser, sampler and RNG states and the metric history; the stage resumes from the
newest one automatically and keeps the last two.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from tasks import distributed
from tasks.config import GRPOConfig, ModelConfig, stage_cli
from tasks.generation import Samples, completion_logprobs
from tasks.grpo.checkpoint import (
    CKPT_ROOT,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    run_key,
    save_checkpoint,
)
from tasks.grpo.curriculum_plot import plot_probabilities
from tasks.grpo.loss import policy_loss
from tasks.grpo.rollout import Rollout, collect, merged_stats
from tasks.grpo.sampler import build_sampler
from tasks.lora import Reference, add_adapters, trainable
from tasks.models import load_model, load_tokenizer
from tasks.rewards.executor import RewardExecutor

ROW_COLUMNS = ("id", "source", "prompt", "answer", "difficulty", "tests", "rewards")
# ----------------------------------------------------------------------------- one update
def lr_at(step: int, cfg: GRPOConfig) -> float:
    """Linear warmup over ``warmup_steps``, then constant / cosine / linear decay to 0 at ``steps``."""
    if step < cfg.warmup_steps or cfg.lr_schedule == "constant":
        return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (1 - progress)


def micro_batches(kept: list[Rollout], cfg: GRPOConfig) -> list[Rollout]:
    """Split the kept groups into pieces of at most ceil(P / grad_accum) groups (never across rounds)."""
    per = max(1, math.ceil(cfg.prompts_per_step / cfg.grad_accum))
    return [ro.groups(list(range(i, min(i + per, ro.n_groups)))) for ro in kept for i in range(0, ro.n_groups, per)]


MAX_BUCKETS = 4  # length buckets per micro-batch (each one forward + backward)
MIN_BUCKET_ROWS = 16  # below this a bucket's saved padding no longer pays for its extra passes


@dataclass
class Chunk:
    """One forward/backward of ``update``: rows of one micro-batch, padding columns trimmed."""

    samples: Samples
    mask: torch.Tensor  # [b, t] tokens that count in the loss
    advantages: torch.Tensor  # [b]
    scale: float  # multiplies the chunk's policy_loss so the chunks add up to the batch loss


def trim(samples: Samples, mask: torch.Tensor) -> tuple[Samples, torch.Tensor]:
    """Drop the columns that are padding in every row: left prompt padding, and completion slots
    after the last one that counts in ``mask``. Exact: positions come from the prompt mask, the
    loss reads only ``mask``'s slots, and a causal model's logits at a slot do not depend on later
    columns. At least one completion column is kept (an all-masked chunk still runs, adding 0)."""
    used = mask.any(0).nonzero()
    t = int(used[-1]) + 1 if len(used) else 1
    first = samples.prompt_mask.any(0).nonzero()
    p0 = int(first[0]) if len(first) else 0
    return Samples(
        samples.prompt_ids[:, p0:], samples.prompt_mask[:, p0:], samples.completion_ids[:, :t],
        samples.completion_mask[:, :t], samples.texts, samples.truncated,
    ), mask[:, :t]


def buckets(mask: torch.Tensor, max_buckets: int, min_rows: int = MIN_BUCKET_ROWS) -> list[list[int]]:
    """Rows sorted by their last counted slot, cut into up to ``max_buckets`` equal runs of at
    least ``min_rows`` rows: each run pads only to its own longest row."""
    n = mask.shape[0]
    k = max(1, min(max_buckets, n // max(1, min_rows)))
    slots = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    last = (mask.ne(0) * slots).amax(1) if mask.shape[1] else torch.zeros(n, dtype=torch.long)
    order = torch.argsort(last, stable=True).tolist()
    cuts = [round(i * n / k) for i in range(k + 1)]
    return [sorted(order[a:b]) for a, b in zip(cuts, cuts[1:]) if b > a]


def chunks(pieces: list[Rollout], masks: list[torch.Tensor], cfg: GRPOConfig, n_rows: int,
           max_buckets: int = MAX_BUCKETS, min_rows: int = MIN_BUCKET_ROWS, do_trim: bool = True,
           skip_flat: bool = False) -> list[tuple[int, Chunk]]:
    """(micro-batch index, chunk) for every forward/backward of one update.

    A micro-batch's loss is split over its length buckets exactly: grpo and dr_grpo are means over
    rows (a bucket weighs rows_b / rows), dapo divides by the global token count (weight 1), bnpo is
    the micro-batch's token mean (a bucket weighs its tokens / the micro-batch's tokens). On top,
    each micro-batch weighs rows / n_rows (grpo, dr_grpo), 1 (dapo) or 1 / micro-batches (bnpo).

    ``skip_flat`` leaves out rows whose advantage is 0 (every row of an all-equal group). Without a
    KL term such a row adds exactly 0 to the loss and its gradient, whatever the ratio or clip, so
    only the denominators above must still count it, and they do: they are taken before the cut.
    """
    out = []
    for k, (piece, mask) in enumerate(zip(pieces, masks)):
        rows = len(piece.samples.texts)
        outer = {"grpo": rows / n_rows, "dr_grpo": rows / n_rows, "dapo": 1.0, "bnpo": 1 / len(pieces)}[cfg.loss_type]
        piece_tokens = float(mask.sum())
        live = (piece.advantages != 0).nonzero().squeeze(-1).tolist() if skip_flat else list(range(rows))
        if not live:
            continue
        live_mask = mask if len(live) == rows else mask[torch.tensor(live, device=mask.device)]
        for bucket in buckets(live_mask, max_buckets, min_rows):
            idx = [live[i] for i in bucket]
            sub = piece.samples if len(idx) == rows else piece.samples.select(idx)
            sub_mask = mask if len(idx) == rows else mask[torch.tensor(idx, device=mask.device)]
            adv = piece.advantages if len(idx) == rows else piece.advantages[torch.tensor(idx)]
            if cfg.loss_type == "bnpo":
                inner = float(sub_mask.sum()) / piece_tokens if piece_tokens > 0 else 0.0
            else:
                inner = len(idx) / rows if cfg.loss_type != "dapo" else 1.0
            if do_trim:
                sub, sub_mask = trim(sub, sub_mask)
            out.append((k, Chunk(sub, sub_mask, adv, outer * inner)))
    return out


def update(model, ref_model, kept: list[Rollout], cfg: GRPOConfig, opt, *, max_buckets: int = MAX_BUCKETS,
           min_bucket_rows: int = MIN_BUCKET_ROWS, trim_padding: bool = True, skip_flat: bool = True) -> dict[str, float]:
    """``num_iterations`` clipped policy-gradient steps on the kept rollouts; returns metrics.

    ``max_buckets``, ``min_bucket_rows``, ``trim_padding`` and ``skip_flat`` only change how the
    work is cut (see ``chunks`` and ``trim``), not the result: ``max_buckets=1, trim_padding=False,
    skip_flat=False`` is one padded pass per micro-batch over every row. With rows skipped, the
    per-token metrics (entropy, ratio, clip fractions) are over the rows that were trained on.
    """
    pieces = micro_batches(kept, cfg)
    masks = []
    for piece in pieces:
        mask = piece.samples.completion_mask
        if cfg.mask_truncated:  # DAPO: a cut-off completion has no verdict to learn from
            mask = mask * (~piece.samples.truncated)[:, None].to(mask.dtype)
        masks.append(mask)
    n_rows = sum(len(p.samples.texts) for p in pieces)
    n_tokens = float(sum(m.sum() for m in masks))
    # dapo's token mean is over the *global* batch; DDP then averages gradients over ranks, so each
    # rank divides by (global tokens / world) to make the average the global token mean.
    world = distributed.world_size()
    n_items = float(distributed.all_reduce_sum(torch.tensor(n_tokens))) / world if world > 1 else n_tokens
    if world > 1:  # DDP/DeepSpeed all-reduce at every backward: extra passes would cost traffic
        max_buckets = 1
    # Zero-advantage rows cost a forward and a backward for a zero gradient: skip them unless a KL
    # term gives them a gradient, or other ranks wait for this rank's backward (DDP all-reduce).
    skip_flat = skip_flat and cfg.beta == 0 and world == 1 and not isinstance(opt, distributed.EngineOptimizer)
    work = chunks(pieces, masks, cfg, n_rows, max_buckets, min_bucket_rows, trim_padding, skip_flat)
    ref = [None] * len(work)
    if cfg.beta > 0:
        with torch.no_grad():
            ref = [completion_logprobs(ref_model, c.samples) for _, c in work]
    old: list[torch.Tensor | None] = [None] * len(work)
    model.train()
    sums: dict[str, float] = {}
    weight_total = 0.0
    grad_norm = 0.0
    seen_tokens = 0.0
    for it in range(cfg.num_iterations):
        opt.zero_grad(set_to_none=True)
        if not work:  # every row skipped: the step must still see a zero gradient (Adam's moments move)
            for p in model.parameters():
                if p.requires_grad:
                    p.grad = torch.zeros_like(p)
        for j, (_, c) in enumerate(work):
            if it == 0:
                logp, entropy = completion_logprobs(model, c.samples, with_entropy=True)
                old[j] = logp.detach()  # pi_old: the policy that sampled these rollouts
                sums["entropy"] = sums.get("entropy", 0.0) + float((entropy * c.mask.to(entropy.dtype)).sum())
                seen_tokens += float(c.mask.sum())
            else:
                logp = completion_logprobs(model, c.samples)
            loss, stats = policy_loss(
                logp, old[j], c.advantages.to(logp.device), c.mask,
                loss_type=cfg.loss_type, epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high,
                importance_sampling_level=cfg.importance_sampling_level, beta=cfg.beta, ref_logp=ref[j],
                max_completion_length=cfg.max_new_tokens, num_items_in_batch=n_items,
            )
            # Scaled so the accumulated gradient is the whole batch's loss (see ``chunks``).
            (loss * c.scale).backward()
            w = float(c.mask.sum())
            weight_total += w
            sums["loss"] = sums.get("loss", 0.0) + loss.item() * c.scale
            for key, v in stats.items():
                sums[key] = sums.get(key, 0.0) + v * w
        grad_norm = distributed.clip_and_step(model, opt, cfg.max_grad_norm)  # DeepSpeed clips in its step
    out = {k: v / max(weight_total, 1.0) for k, v in sums.items() if k not in ("loss", "entropy")}
    out["loss"] = sums.get("loss", 0.0) / cfg.num_iterations
    out["entropy"] = sums.get("entropy", 0.0) / max(seen_tokens, 1.0)
    out["grad_norm"] = grad_norm
    lengths = torch.cat([p.samples.completion_mask.sum(1) for p in pieces]).float()
    out["response_length"] = lengths.mean().item()
    out["truncated"] = torch.cat([p.samples.truncated for p in pieces]).float().mean().item()
    return out


def per_source(stats: dict) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for row, a in zip(stats["rows"], stats["accuracy"]):
        sums.setdefault(row["source"], []).append(a)
    return {f"accuracy/{s}": sum(v) / len(v) for s, v in sums.items()}


def curriculum_metrics(sampler) -> dict[str, float]:
    """The sampler's next-draw probabilities and per-arm statistics, flattened for the tracker."""
    out = {f"curriculum/p/{s}": p for s, p in sampler.probabilities().items()}
    for s, st in sampler.arm_stats().items():
        out.update({f"curriculum/{k}/{s}": float(v) for k, v in st.items() if k != "prob"})  # prob: logged as p/
    return out


def completions_table(seen: list[Rollout]) -> dict[str, list]:
    """Prompts, completions, each reward's score, the total and the advantage (every round seen)."""
    table: dict[str, list] = {"prompt": [], "source": [], "completion": [], "reward": [], "advantage": [], "kept": []}
    names = list(seen[0].per_reward)
    for name in names:
        table[f"reward/{name}"] = []
    for ro in seen:
        for i, text in enumerate(ro.samples.texts):
            row = ro.rows[i // ro.group_size]
            table["prompt"].append(row["prompt"])
            table["source"].append(row["source"])
            table["completion"].append(text)
            table["reward"].append(float(ro.rewards[i]))
            table["advantage"].append(float(ro.advantages[i]))
            table["kept"].append(i // ro.group_size in ro.kept_groups)
            for name in names:
                table[f"reward/{name}"].append(ro.per_reward[name][i])
    return table


def train_step(
    step: int, model, ref_model, tokenizer, rows: list[dict], sampler, cfg: GRPOConfig, opt, executor, gen,
    model_cfg: ModelConfig | None = None,
):
    """One GRPO step (points 1-4 of the module docstring). Returns (metrics, the curriculum
    probabilities this step drew with, (kept, seen) rollouts)."""
    t_step = time.perf_counter()
    lr = lr_at(step, cfg)
    for group in opt.param_groups:
        group["lr"] = lr
    curriculum = curriculum_metrics(sampler)
    kept, seen, metrics = collect(
        model, tokenizer, lambda k: [rows[i] for i in sampler.sample(k)], cfg, executor, gen, model_cfg
    )
    if kept:  # dynamic sampling may find no informative group: then there is nothing to learn
        metrics.update(update(model, ref_model, kept, cfg, opt))
    stats = merged_stats(seen)
    sampler.update(stats)  # the trainer is the only caller of update; evaluation never is
    metrics.update(per_source(stats), **curriculum, lr=lr, **{"time/step_s": time.perf_counter() - t_step})
    return metrics, curriculum, (kept, seen)


# ----------------------------------------------------------------------------- the stage
def main(argv: list[str] | None = None) -> int:
    args, params = stage_cli(__doc__, argv, {"data": "data/curated/rl.parquet", "model": "models/sft"})
    cfg = params.grpo
    if cfg.scale.num_processes > 1 and (cfg.dynamic_sampling or cfg.prompts_per_step % cfg.scale.num_processes):
        # every rank must run the same number of backward passes (DDP/DeepSpeed synchronise each one)
        print("config error: grpo.scale.num_processes > 1 needs prompts_per_step divisible by it and "
              "dynamic_sampling off", file=sys.stderr)
        return 2
    if (code := distributed.maybe_relaunch("tasks.grpo", argv, cfg.scale)) is not None:
        return code
    df = pd.read_parquet(args.data)
    if df.empty:
        print(f"{args.data}: no RL prompts", file=sys.stderr)
        return 1
    rows = df[[c for c in ROW_COLUMNS if c in df.columns]].to_dict("records")

    rank, world, device = distributed.init(cfg.scale)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + rank)  # each rank samples its own completions
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model).to(device)
    peft_model = add_adapters(model, cfg.lora) if cfg.lora.enabled else None
    if peft_model is not None:  # the reference is the base: the same weights with the adapters off
        model = peft_model.get_base_model()
        ref_model = Reference(peft_model) if cfg.beta > 0 else None
    else:
        ref_model = load_model(args.model).to(device).eval().requires_grad_(False) if cfg.beta > 0 else None
    opt = torch.optim.AdamW(trainable(model), lr=cfg.lr, weight_decay=0.0)
    sampler = build_sampler(
        cfg.sampler, [r["source"] for r in rows], cfg.seed, cfg.curriculum, [int(r.get("difficulty", -1)) for r in rows],
        [r["id"] for r in rows],
    )

    ckpt_dir = CKPT_ROOT / run_key(cfg, [Path(args.data), Path(args.model)])
    start, history = 0, []
    if ckpt := latest_checkpoint(ckpt_dir):
        start, history = load_checkpoint(ckpt, model, opt, sampler, gen, rank)
        print(f"grpo: resuming from {ckpt} (step {start})")
    model, opt = distributed.wrap(model, opt, cfg.scale, cfg.max_grad_norm)  # after a resume: rank 0's state wins
    if world > 1:
        sampler = distributed.ShardedSampler(sampler, rank, world)
        print(f"grpo: rank {rank} of world size {world} on {device}", flush=True)

    with distributed.tracking(params.tracking, "grpo", cfg.model_dump()) as run, RewardExecutor(
        cfg.reward_workers, cfg.reward_timeout_s
    ) as executor:
        run.log_input_files([args.data])
        run.set_tags({"resumed_from_step": start})
        bar = tqdm(range(start, cfg.steps), desc="grpo", unit="step", initial=start, total=cfg.steps, file=sys.stderr,
                   mininterval=1.0, disable=rank > 0)
        t0 = time.perf_counter()
        for step in bar:
            metrics, curriculum, (kept, seen) = train_step(
                step, model, ref_model, tokenizer, rows, sampler, cfg, opt, executor, gen, params.model
            )
            metrics = distributed.mean_metrics(metrics)  # identity for one process
            history.append({"step": step, **{k: metrics.get(k, float("nan")) for k in ("reward_mean", "accuracy", "loss", "kl")},
                            "curriculum": {k: v for k, v in curriculum.items() if k.startswith("curriculum/p/")}})
            bar.set_postfix(reward=f"{metrics['reward_mean']:.2f}", acc=f"{metrics['accuracy']:.2f}")
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                run.log_metrics(metrics, step)
            else:  # the curriculum is logged every step: its probabilities move step by step
                run.log_metrics({k: v for k, v in metrics.items() if k.startswith("curriculum/")}, step)
            if step % (cfg.log_every * 20) == 0:  # a sample of completions, for reading
                run.log_table(completions_table(seen), f"completions/step_{step:06d}.json")
            if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                rngs = distributed.gather_objects(rng_state(gen))  # a collective: every rank takes part
                if distributed.is_main():
                    save_checkpoint(ckpt_dir, step + 1, distributed.unwrap(model), opt, sampler, rngs, history)
        wall = time.perf_counter() - t0
        distributed.save_pretrained(model, tokenizer, cfg.out_dir, peft_model)
        tail = history[-max(1, len(history) // 10) :]
        summary = {
            "steps": cfg.steps,
            "final_reward_mean": sum(h["reward_mean"] for h in tail) / len(tail),
            "final_train_accuracy": sum(h["accuracy"] for h in tail) / len(tail),
            "wall_s": round(wall, 1),
        }
        run.log_metrics({"wall_s": wall})
        if world > 1:  # the curriculum state and the weights must agree on every rank
            print(f"grpo: rank {rank} sampler {distributed.digest(sampler.state_dict())} "
                  f"weights {distributed.weights_digest(model)}", flush=True)
        distributed.shutdown()
        if rank > 0:
            return 0
        Path("metrics").mkdir(exist_ok=True)
        Path("plots").mkdir(exist_ok=True)
        Path("metrics/grpo.json").write_text(json.dumps(summary, indent=2) + "\n")
        pd.DataFrame([{k: v for k, v in h.items() if k != "curriculum"} for h in history]).to_csv(
            "plots/grpo_train.csv", index=False
        )
        probs = pd.DataFrame(
            [{"step": h["step"], "source": k.removeprefix("curriculum/p/"), "probability": v}
             for h in history for k, v in h["curriculum"].items()]
        )
        probs.to_csv("plots/curriculum.csv", index=False)
        plot_probabilities(probs, Path("plots/curriculum.png"), title=f"grpo.sampler = {cfg.sampler}")
        run.log_artifact("plots/curriculum.png")
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # the finished model is the DVC output now
    print(f"grpo: {cfg.steps} steps in {wall:.1f}s, train accuracy (last 10%) {summary['final_train_accuracy']:.3f}")
    return 0
