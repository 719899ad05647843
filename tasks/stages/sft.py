"""Cold-start supervised fine-tuning on worked solutions (`python -m tasks.stages.sft`).

Choices, following R1's cold start: a *small* set of worked traces teaches the output format and
the first steps of the algorithm; reinforcement learning on answer-only prompts does the rest.

- Each example is ``render_prompt(prompt) + solution + EOS`` (the rendering ``model.prompt``
  chooses, the same as GRPO's and evaluation's); the loss is next-token cross-entropy on the
  completion tokens only (prompt tokens are labelled -100), averaged over completion tokens in the
  batch.
- A trace longer than ``max_length`` is cut there and loses its answer and EOS; such traces are
  counted per source (``truncated`` in ``metrics/sft.json`` and MLflow) and, with
  ``drop_truncated``, dropped instead. A non-finite loss (e.g. a batch whose every completion was
  cut away) stops the stage with exit 1 naming the step, before any model is written.
- Batches are drawn by a seeded permutation per epoch, right-padded; AdamW; the learning rate is
  ``tasks.schedule.lr_at`` (the same schedule fields as GRPO; SFT's default: linear warmup, then
  cosine decay to 10% of the peak); gradient-norm clipping.
- The stage is defined by a step count, not a time budget, so a rerun reproduces it.
- ``sft.scale.num_processes > 1`` relaunches under torchrun/deepspeed (tasks/distributed.py).
  Every rank draws the same global batch and trains on its contiguous slice; the loss is the
  rank's token sum divided by the *global* completion-token count (times the world size, which
  the gradient average divides out), so N processes reproduce one process's global-batch step.
- ``sft.lora.enabled`` trains LoRA adapters only and saves the merged model (tasks/lora.py).
- A checkpoint every ``sft.save_every`` steps, under DDP and DeepSpeed too (tasks/checkpoint.py,
  a collective: weights, every rank's optimiser shard, the rest of the epoch's batch order,
  generator states), and a rerun with the same config and inputs resumes from the newest complete
  one, drawing the same batches it would have drawn, on any number of processes (DeepSpeed: the
  same number).

Outputs: ``models/sft`` (HF folder), ``metrics/sft.json`` and ``plots/sft_loss.csv`` (DVC), and an
MLflow stage run with per-step loss, learning rate and tokens/s.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from tasks import checkpoint, distributed
from tasks.config import Params, stage_cli
from tasks.config.model import PromptConfig
from tasks.config.sft import SFTConfig
from tasks.lora import add_adapters, trainable
from tasks.models import count_parameters, load_model, load_tokenizer, render_prompt
from tasks.progress import progress
from tasks.schedule import lr_at
from tasks.tracking import rank_zero_run

CKPT_ROOT = Path("checkpoints/sft")


class NonFiniteLoss(RuntimeError):
    """The loss of a step is NaN or infinite: training cannot continue meaningfully."""


def encode_example(
    tokenizer, prompt: str, completion: str, max_length: int, prompt_cfg: PromptConfig | None = None
) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 on the prompt) for one prompt/completion pair, truncated."""
    p = tokenizer(render_prompt(tokenizer, prompt, prompt_cfg), add_special_tokens=False).input_ids
    c = tokenizer(completion, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ids = (p + c)[:max_length]
    labels = ([-100] * len(p) + c)[:max_length]
    return ids, labels


def encode_all(tokenizer, df: pd.DataFrame, cfg: SFTConfig, prompt_cfg: PromptConfig | None = None):
    """``(examples, truncated)``: the encoded traces (without the cut ones when ``drop_truncated``)
    and the number of traces per source that did not fit in ``max_length``."""
    sources = df["source"] if "source" in df.columns else pd.Series(["all"] * len(df))
    examples, truncated = [], {str(s): 0 for s in sorted(sources.unique())}
    for p, sol, src in zip(df["prompt"], df["solution"], sources):
        full = encode_example(tokenizer, p, sol, 10**9, prompt_cfg)
        if len(full[0]) > cfg.max_length:
            truncated[str(src)] += 1
            if cfg.drop_truncated:
                continue
        examples.append((full[0][: cfg.max_length], full[1][: cfg.max_length]))
    return examples, truncated


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, : len(x)], labels[i, : len(y)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def sft_loss(model, batch: dict[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the completion tokens: their mean (or their sum)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=-100,
        reduction=reduction,
    )


def sharded_loss(model, batch: dict[str, torch.Tensor], world: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """This rank's part of the global token-mean loss, scaled so the gradient average is exact:
    ``world * sum_local / n_global``. Returns it, the global mean (for logging) and the global count
    of attended tokens."""
    counts = torch.stack([(batch["labels"][:, 1:] != -100).sum(), batch["attention_mask"].sum()]).float()
    n_global, tokens = distributed.all_reduce_sum(counts).tolist()
    loss = sft_loss(model, batch, reduction="sum") * world / n_global
    return loss, distributed.all_reduce_sum(loss.detach()) / world, int(tokens)


def train(
    model,
    tokenizer,
    examples: list[tuple[list[int], list[int]]],
    cfg: SFTConfig,
    log=None,
    opt=None,
    ckpt_dir: Path | None = None,
) -> list[dict]:
    """Run ``cfg.steps`` optimiser steps; returns the logged history.

    ``model``/``opt`` may be a data-parallel replica and its optimiser (tasks/distributed.py); by
    default AdamW over the trainable parameters (all of them, or the LoRA adapters). With
    ``ckpt_dir``, a checkpoint every ``cfg.save_every`` steps and a resume from the newest one.
    """
    g = torch.Generator().manual_seed(cfg.seed)
    opt = opt or torch.optim.AdamW(trainable(model), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rank, world = distributed.rank(), distributed.world_size()
    model.train()
    device = next(model.parameters()).device
    start, order, history = resume(ckpt_dir, model, opt, g, cfg) if ckpt_dir is not None else (0, [], [])
    t0, tokens = time.perf_counter(), 0
    bar = progress(range(start, cfg.steps), "sft", initial=start, total=cfg.steps, disable=rank > 0)
    for step in bar:
        if len(order) < cfg.batch_size:  # a fresh permutation each epoch
            order += torch.randperm(len(examples), generator=g).tolist()
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        if world > 1:  # the same global batch on every rank (same generator); this rank's slice
            idx = distributed.shard(idx, rank, world)
        batch = {
            k: v.to(device) for k, v in collate([examples[i] for i in idx], tokenizer.pad_token_id).items()
        }
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        if world == 1:
            loss = shown = sft_loss(model, batch)
            n_tokens = int(batch["attention_mask"].sum())
        else:
            loss, shown, n_tokens = sharded_loss(model, batch, world)
        if not math.isfinite(value := shown.item()):  # every rank sees the same global loss
            n_labels = int((batch["labels"][:, 1:] != -100).sum())
            raise NonFiniteLoss(
                f"step {step}: loss is {value} ({n_labels} completion tokens in this rank's batch; 0 means "
                f"every trace was cut at sft.max_length={cfg.max_length}: raise it or set sft.drop_truncated)"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = distributed.clip_and_step(model, opt, cfg.max_grad_norm)
        tokens += n_tokens
        bar.set_postfix(loss=f"{shown.item():.3f}", refresh=False)  # redraws only at the interval
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {
                "step": step,
                "loss": shown.item(),
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_s": tokens / (time.perf_counter() - t0),
            }
            history.append(row)
            if log:
                log(row, step)
        if ckpt_dir is not None and (step + 1) % cfg.save_every == 0:  # the last step too: a crash
            save(ckpt_dir, step + 1, model, opt, order, g, history, cfg)  # before the save resumes to it
    return history


def save(
    ckpt_dir: Path,
    step: int,
    model,
    opt,
    order: list[int],
    g: torch.Generator,
    history: list[dict],
    cfg: SFTConfig,
) -> None:
    """A collective checkpoint (every rank calls it): the rest of the epoch's order, the generators,
    and the model and optimiser (DeepSpeed: every rank's shard through the engine)."""
    engine = distributed.engine_of(opt)
    state = {"order": order, "generator": g.get_state(), "torch": torch.get_rng_state()}
    if engine is None:
        state.update(model=distributed.unwrap(model).state_dict(), optimizer=opt.state_dict())
    checkpoint.save(
        ckpt_dir,
        step,
        state,
        history,
        rank_state={"torch": torch.get_rng_state()},
        engine=engine,
        config=cfg.model_dump(),
    )


def resume(
    ckpt_dir: Path, model, opt, g: torch.Generator, cfg: SFTConfig
) -> tuple[int, list[int], list[dict]]:
    """``(start step, remaining batch order, history)`` from the newest complete checkpoint; a fresh
    start without one. Every rank draws the same batch order, so any world size continues exactly
    (up to float order); a checkpoint this run cannot continue raises ``checkpoint.ResumeError``."""
    if (ckpt := checkpoint.latest(ckpt_dir)) is None:
        return 0, [], []
    engine = distributed.engine_of(opt)
    checkpoint.check_resume(ckpt, cfg.model_dump(), engine=engine is not None, world_exact=True)
    state, mine, history = checkpoint.load(ckpt)
    if engine is not None:
        checkpoint.load_engine(ckpt, opt)
    else:
        distributed.unwrap(model).load_state_dict(state["model"])  # every rank loads the same file
        opt.load_state_dict(state["optimizer"])
    g.set_state(state["generator"])
    torch.set_rng_state((mine or state)["torch"])  # a rank the checkpoint did not have: rank 0's
    print(f"sft: resuming from {ckpt} (step {state['step']})", file=sys.stderr, flush=True)
    return state["step"], state["order"], history


def build(params: Params, model_dir: str, df: pd.DataFrame):
    """``(model, peft_model or None, replica, optimiser, tokenizer, examples, truncated per source)``
    on this rank."""
    cfg = params.sft
    rank, world, device = distributed.init(cfg.scale)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir).to(device)
    peft_model = add_adapters(model, cfg.lora) if cfg.lora.enabled else None
    policy = peft_model.get_base_model() if peft_model is not None else model  # adapters live inside it
    opt = torch.optim.AdamW(trainable(policy), lr=cfg.lr, weight_decay=cfg.weight_decay)
    replica, opt = distributed.wrap(policy, opt, cfg.scale, cfg.max_grad_norm)
    examples, truncated = encode_all(tokenizer, df, cfg, params.model.prompt)
    if world > 1:
        print(f"sft: rank {rank} of world size {world} on {device}", flush=True)
    return model, peft_model, replica, opt, tokenizer, examples, truncated


def write_outputs(summary: dict, history: list[dict]) -> None:
    """``metrics/sft.json`` and ``plots/sft_loss.csv`` (rank 0)."""
    Path("metrics").mkdir(exist_ok=True)
    Path("plots").mkdir(exist_ok=True)
    Path("metrics/sft.json").write_text(json.dumps(summary, indent=2) + "\n")
    pd.DataFrame(history)[["step", "loss", "lr"]].to_csv("plots/sft_loss.csv", index=False)


def summarise(history: list[dict], cfg: SFTConfig, n_examples: int, wall: float, truncated: dict) -> dict:
    """What ``metrics/sft.json`` holds."""
    return {
        "final_loss": history[-1]["loss"],
        "steps": cfg.steps,
        "examples": n_examples,
        "wall_s": round(wall, 1),
        "truncated": truncated,
        "dropped_truncated": sum(truncated.values()) if cfg.drop_truncated else 0,
    }


def main(argv: list[str] | None = None) -> int:
    args, params = stage_cli(__doc__, argv, {"data": "data/curated/sft.parquet", "model": "models/base"})
    cfg = params.sft
    if (code := distributed.maybe_relaunch("tasks.stages.sft", argv, cfg.scale)) is not None:
        return code
    df = pd.read_parquet(args.data)
    if df.empty or df["solution"].isna().any():
        n = df["solution"].isna().sum()
        print(f"{args.data}: SFT needs rows with a worked solution; found {n} without", file=sys.stderr)
        return 1
    model, peft_model, replica, opt, tokenizer, examples, truncated = build(params, args.model, df)
    if not examples:
        print(
            f"sft: all {len(df)} traces exceed sft.max_length={cfg.max_length} and sft.drop_truncated "
            "is set: nothing to train on",
            file=sys.stderr,
        )
        return 1
    with rank_zero_run(params.tracking, "sft", cfg.model_dump()) as run:
        run.log_input_files([args.data])
        run.log_metrics(
            {
                "n_examples": len(examples),
                "n_parameters": count_parameters(model),
                "n_trainable_parameters": sum(p.numel() for p in trainable(replica)),
                **{f"truncated/{src}": n for src, n in truncated.items()},
            }
        )
        t0 = time.perf_counter()
        ckpt_dir = CKPT_ROOT / checkpoint.run_key(cfg.model_dump(), [Path(args.data), Path(args.model)])
        try:
            history = train(
                replica, tokenizer, examples, cfg, log=run.log_metrics, opt=opt, ckpt_dir=ckpt_dir
            )
        except NonFiniteLoss as e:  # the run ends FAILED (SystemExit passes through the run context)
            print(f"sft: {e}; stopping, no model written", file=sys.stderr)
            raise SystemExit(1) from None
        except checkpoint.ResumeError as e:
            print(f"sft: {e}", file=sys.stderr)
            return 2
        wall = time.perf_counter() - t0
        distributed.save_pretrained(replica, tokenizer, cfg.out_dir, peft_model)
        summary = summarise(history, cfg, len(examples), wall, truncated)
        run.log_metrics({"wall_s": wall})
    rank = distributed.rank()
    distributed.shutdown()
    if rank > 0:
        return 0
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # the finished model is the DVC output now
    write_outputs(summary, history)
    print(
        f"sft: {cfg.steps} steps on {len(examples)} traces in {wall:.1f}s, "
        f"final loss {summary['final_loss']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
