"""Cold-start supervised fine-tuning on worked solutions (`python -m tasks.sft`).

Choices, following R1's cold start: a *small* set of worked traces teaches the output format and
the first steps of the algorithm; reinforcement learning on answer-only prompts does the rest.

- Each example is ``render_prompt(prompt) + solution + EOS``; the loss is next-token cross-entropy
  on the completion tokens only (prompt tokens are labelled -100), averaged over completion tokens
  in the batch.
- Batches are drawn by a seeded permutation per epoch, right-padded; AdamW with linear warmup then
  cosine decay to 10% of the peak rate; gradient-norm clipping.
- The stage is defined by a step count, not a time budget, so a rerun reproduces it.

Outputs: ``models/sft`` (HF folder), ``metrics/sft.json`` and ``plots/sft_loss.csv`` (DVC), and an
MLflow stage run with per-step loss, learning rate and tokens/s.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from tasks.config import SFTConfig, stage_cli
from tasks.models import count_parameters, load_model, load_tokenizer, render_prompt
from tasks.tracking import stage_run


def encode_example(tokenizer, prompt: str, completion: str, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 on the prompt) for one prompt/completion pair, truncated."""
    p = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False).input_ids
    c = tokenizer(completion, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ids = (p + c)[:max_length]
    labels = ([-100] * len(p) + c)[:max_length]
    return ids, labels


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, : len(x)], labels[i, : len(y)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def lr_at(step: int, cfg_lr: float, warmup: int, total: int) -> float:
    """Linear warmup to the peak, then cosine decay to 10% of it."""
    if step < warmup:
        return cfg_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return cfg_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def sft_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch["labels"][:, 1:].reshape(-1), ignore_index=-100
    )


def train(model, tokenizer, examples: list[tuple[list[int], list[int]]], cfg: SFTConfig, log=None) -> list[dict]:
    """Run ``cfg.steps`` optimiser steps; returns the logged history."""
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    device = next(model.parameters()).device
    order: list[int] = []
    history, t0, tokens = [], time.perf_counter(), 0
    bar = tqdm(range(cfg.steps), desc="sft", unit="step", file=sys.stderr, mininterval=1.0)
    for step in bar:
        if len(order) < cfg.batch_size:  # a fresh permutation each epoch
            order += torch.randperm(len(examples), generator=g).tolist()
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in idx], tokenizer.pad_token_id).items()}
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = sft_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        tokens += int(batch["attention_mask"].sum())
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {
                "step": step,
                "loss": loss.item(),
                "lr": lr,
                "grad_norm": float(grad_norm),
                "tokens_per_s": tokens / (time.perf_counter() - t0),
            }
            history.append(row)
            if log:
                log(row, step)
    return history


def main(argv: list[str] | None = None) -> int:
    args, params = stage_cli(__doc__, argv, {"data": "data/curated/sft.parquet", "model": "models/base"})
    cfg = params.sft
    df = pd.read_parquet(args.data)
    if df.empty or df["solution"].isna().any():
        print(f"{args.data}: SFT needs rows with a worked solution; found {df['solution'].isna().sum()} without", file=sys.stderr)
        return 1
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model).to("cuda" if torch.cuda.is_available() else "cpu")
    examples = [encode_example(tokenizer, p, s, cfg.max_length) for p, s in zip(df["prompt"], df["solution"])]

    with stage_run(params.tracking, "sft", cfg.model_dump()) as run:
        run.log_input_files([args.data])
        run.log_metrics({"n_examples": len(examples), "n_parameters": count_parameters(model)})
        t0 = time.perf_counter()
        history = train(model, tokenizer, examples, cfg, log=run.log_metrics)
        wall = time.perf_counter() - t0
        model.save_pretrained(cfg.out_dir)
        tokenizer.save_pretrained(cfg.out_dir)
        summary = {"final_loss": history[-1]["loss"], "steps": cfg.steps, "examples": len(examples), "wall_s": round(wall, 1)}
        run.log_metrics({"wall_s": wall})
    Path("metrics").mkdir(exist_ok=True)
    Path("plots").mkdir(exist_ok=True)
    Path("metrics/sft.json").write_text(json.dumps(summary, indent=2) + "\n")
    pd.DataFrame(history)[["step", "loss", "lr"]].to_csv("plots/sft_loss.csv", index=False)
    print(f"sft: {cfg.steps} steps on {len(examples)} traces in {wall:.1f}s, final loss {summary['final_loss']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
