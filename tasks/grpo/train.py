"""GRPO with verifiable rewards (`python -m tasks.grpo`): the training loop.

One step, top to bottom (the maths is in ``loss.py``, sampling in ``tasks/generation.py``):

1. the sampler picks ``prompts_per_step`` rows of the ``rl`` split (answer only, no solution);
2. the policy samples ``group_size`` completions per prompt (temperature ``grpo.temperature``);
3. the reward executor scores them in worker processes (math-verify never runs in this process);
   rewards are the weighted sum of the registry's rewards named in ``grpo.rewards``;
4. group-normalised advantages; one clipped policy-gradient update (+ k3 KL when beta > 0; with
   beta = 0 no reference model is loaded at all);
5. metrics to MLflow and ``plots/grpo_train.csv``; a checkpoint every ``save_every`` steps.

Checkpoints live in ``checkpoints/grpo/step-N`` (written to a temporary folder, then renamed, so a
crash never leaves a half checkpoint) with model, optimiser, sampler and RNG states; the stage
resumes from the newest one automatically and keeps the last two.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from tasks.config import GRPOConfig, stage_cli
from tasks.generation import completion_logprobs, sample
from tasks.grpo.loss import group_advantages, policy_loss
from tasks.grpo.sampler import build_sampler
from tasks.models import load_model, load_tokenizer, render_prompt
from tasks.rewards import combine
from tasks.rewards.executor import RewardExecutor
from tasks.tracking import md5, stage_run

CKPT_ROOT = Path("checkpoints/grpo")
KEEP = 2


def run_key(cfg: GRPOConfig, inputs: list[Path]) -> str:
    """Checkpoints belong to one (config, data, start model): a changed input never resumes a stale run."""
    h = hashlib.sha256(json.dumps(cfg.model_dump(), sort_keys=True).encode())
    for p in inputs:
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                h.update(f.name.encode() + md5(f).encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(ckpt_dir: Path, step: int, model, opt, sampler, gen: torch.Generator, history: list[dict]) -> Path:
    final = ckpt_dir / f"step-{step:06d}"
    tmp = ckpt_dir / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "sampler": sampler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "generator": gen.get_state(), "python": random.getstate()},
    }
    torch.save(state, tmp / "state.pt")
    (tmp / "history.json").write_text(json.dumps(history))
    tmp.rename(final)  # atomic on one filesystem: a checkpoint is either whole or absent
    for old in sorted(ckpt_dir.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = sorted(p for p in ckpt_dir.glob("step-*") if (p / "state.pt").is_file())
    return found[-1] if found else None


def load_checkpoint(path: Path, model, opt, sampler, gen: torch.Generator) -> tuple[int, list[dict]]:
    state = torch.load(path / "state.pt", weights_only=False)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sampler.load_state_dict(state["sampler"])
    torch.set_rng_state(state["rng"]["torch"])
    gen.set_state(state["rng"]["generator"])
    random.setstate(state["rng"]["python"])
    return state["step"], json.loads((path / "history.json").read_text())


# ----------------------------------------------------------------------------- one step
def grpo_step(model, ref_model, tokenizer, rows: list[dict], cfg: GRPOConfig, opt, executor, gen) -> tuple[dict, dict]:
    """Sample, score, update. Returns (scalar metrics, per-prompt stats for the sampler/table)."""
    t0 = time.perf_counter()
    prompts = [render_prompt(tokenizer, r["prompt"]) for r in rows]
    samples = sample(model, tokenizer, prompts, cfg.group_size, cfg.max_new_tokens, cfg.temperature, generator=gen)
    t_gen = time.perf_counter() - t0

    repeated = [r for r in rows for _ in range(cfg.group_size)]
    scored = executor.score(samples.texts, repeated, list(cfg.rewards))
    rewards = torch.tensor(combine(scored.per_reward, cfg.rewards))
    adv = group_advantages(rewards, cfg.group_size, cfg.scale_rewards)

    model.train()
    logp = completion_logprobs(model, samples)
    adv = adv.to(logp.device)
    ref_logp = None
    if cfg.beta > 0:
        with torch.no_grad():
            ref_logp = completion_logprobs(ref_model, samples)
    loss, stats = policy_loss(logp, logp.detach(), adv, samples.completion_mask, cfg.epsilon, cfg.beta, ref_logp)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    opt.step()

    groups = rewards.view(-1, cfg.group_size)
    acc = torch.tensor([a if a is not None else 0.0 for a in scored.per_reward.get("accuracy", [0.0] * len(rewards))])
    metrics = {
        "loss": loss.item(),
        "reward_mean": rewards.mean().item(),
        "reward_std": rewards.std(unbiased=False).item(),
        "accuracy": acc.mean().item(),
        "zero_std_groups": (groups.std(1, unbiased=False) == 0).float().mean().item(),
        "response_length": samples.completion_mask.sum(1).float().mean().item(),
        "truncated": samples.truncated.float().mean().item(),
        "grad_norm": float(grad_norm),
        "time/generate_s": t_gen,
        "time/step_s": time.perf_counter() - t0,
        **stats,
        **scored.metrics(),
    }
    per_prompt = {
        "rows": rows,
        "accuracy": acc.view(-1, cfg.group_size).mean(1).tolist(),
        "mean_abs_adv": adv.view(-1, cfg.group_size).abs().mean(1).tolist(),
        "texts": samples.texts,
        "rewards": rewards.tolist(),
        "advantages": adv.tolist(),
    }
    return metrics, per_prompt


def per_source(per_prompt: dict) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for row, a in zip(per_prompt["rows"], per_prompt["accuracy"]):
        sums.setdefault(row["source"], []).append(a)
    return {f"accuracy/{s}": sum(v) / len(v) for s, v in sums.items()}


# ----------------------------------------------------------------------------- the stage
def main(argv: list[str] | None = None) -> int:
    args, params = stage_cli(__doc__, argv, {"data": "data/curated/rl.parquet", "model": "models/sft"})
    cfg = params.grpo
    df = pd.read_parquet(args.data)
    if df.empty:
        print(f"{args.data}: no RL prompts", file=sys.stderr)
        return 1
    rows = df[["id", "source", "prompt", "answer"]].to_dict("records")

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model).to(device)
    ref_model = load_model(args.model).to(device).eval().requires_grad_(False) if cfg.beta > 0 else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sampler = build_sampler(cfg.sampler, [r["source"] for r in rows], cfg.seed)

    ckpt_dir = CKPT_ROOT / run_key(cfg, [Path(args.data), Path(args.model)])
    start, history = 0, []
    if ckpt := latest_checkpoint(ckpt_dir):
        start, history = load_checkpoint(ckpt, model, opt, sampler, gen)
        print(f"grpo: resuming from {ckpt} (step {start})")

    with stage_run(params.tracking, "grpo", cfg.model_dump()) as run, RewardExecutor(
        cfg.reward_workers, cfg.reward_timeout_s
    ) as executor:
        run.log_input_files([args.data])
        run.set_tags({"resumed_from_step": start})
        bar = tqdm(range(start, cfg.steps), desc="grpo", unit="step", initial=start, total=cfg.steps, file=sys.stderr, mininterval=1.0)
        t0 = time.perf_counter()
        for step in bar:
            for group in opt.param_groups:  # linear warmup, then constant
                group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
            batch = [rows[i] for i in sampler.sample(cfg.prompts_per_step)]
            metrics, per_prompt = grpo_step(model, ref_model, tokenizer, batch, cfg, opt, executor, gen)
            sampler.update(per_prompt)
            metrics.update(per_source(per_prompt), lr=opt.param_groups[0]["lr"])
            history.append({"step": step, **{k: metrics[k] for k in ("reward_mean", "accuracy", "loss", "kl")}})
            bar.set_postfix(reward=f"{metrics['reward_mean']:.2f}", acc=f"{metrics['accuracy']:.2f}")
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                run.log_metrics(metrics, step)
            if step % (cfg.log_every * 20) == 0:  # a sample of completions, for reading
                run.log_table(
                    {
                        "prompt": [r["prompt"] for r in per_prompt["rows"] for _ in range(cfg.group_size)],
                        "completion": per_prompt["texts"],
                        "reward": per_prompt["rewards"],
                        "advantage": per_prompt["advantages"],
                    },
                    f"completions/step_{step:06d}.json",
                )
            if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                save_checkpoint(ckpt_dir, step + 1, model, opt, sampler, gen, history)
        wall = time.perf_counter() - t0
        model.save_pretrained(cfg.out_dir)
        tokenizer.save_pretrained(cfg.out_dir)
        tail = history[-max(1, len(history) // 10) :]
        summary = {
            "steps": cfg.steps,
            "final_reward_mean": sum(h["reward_mean"] for h in tail) / len(tail),
            "final_train_accuracy": sum(h["accuracy"] for h in tail) / len(tail),
            "wall_s": round(wall, 1),
        }
        run.log_metrics({"wall_s": wall})
    Path("metrics").mkdir(exist_ok=True)
    Path("plots").mkdir(exist_ok=True)
    Path("metrics/grpo.json").write_text(json.dumps(summary, indent=2) + "\n")
    pd.DataFrame(history).to_csv("plots/grpo_train.csv", index=False)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # the finished model is the DVC output now
    print(f"grpo: {cfg.steps} steps in {wall:.1f}s, train accuracy (last 10%) {summary['final_train_accuracy']:.3f}")
    return 0
