"""GRPO checkpoints (the shared, collective mechanics are tasks/checkpoint.py): what a GRPO run restores.

Rank 0's part holds the prompt-sampler (curriculum) state, the ``prompt_seeds`` stream and, without
DeepSpeed, the model and optimiser (DeepSpeed: every rank's shard through the engine). Each rank's
own part holds its torch/generator/python RNG states: each rank samples its own completions from
its own generator, so a resumed rank r gets rank r's states back (a rank the checkpoint did not
have keeps its fresh seed, and ``check_resume`` says the continuation is not exact). The learning
rate is a pure function of the step (``tasks.schedule.lr_at``), so no scheduler state is needed.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from tasks import checkpoint, distributed
from tasks.config.grpo import GRPOConfig

CKPT_ROOT = Path("checkpoints/grpo")
KEEP = checkpoint.KEEP
latest_checkpoint = checkpoint.latest


def run_key(cfg: GRPOConfig, inputs: list[Path]) -> str:
    """Checkpoints belong to one (config, data, start model): a changed input never resumes a stale run."""
    return checkpoint.run_key(cfg.model_dump(), inputs)


def rng_state(gen: torch.Generator) -> dict:
    """This process's random state: what it needs to draw the same numbers after a resume."""
    return {"torch": torch.get_rng_state(), "generator": gen.get_state(), "python": random.getstate()}


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    model,
    opt,
    sampler,
    gen: torch.Generator,
    history: list[dict],
    cfg: GRPOConfig,
    seeds: torch.Generator | None = None,
) -> Path:
    """Write step ``step``: a collective, every rank calls it with its own ``gen``."""
    engine = distributed.engine_of(opt)
    state = {"sampler": sampler.state_dict(), "seeds": seeds.get_state() if seeds is not None else None}
    if engine is None:
        state.update(model=distributed.unwrap(model).state_dict(), optimizer=opt.state_dict())
    return checkpoint.save(
        ckpt_dir, step, state, history, rank_state=rng_state(gen), engine=engine, config=cfg.model_dump()
    )


def load_checkpoint(
    path: Path,
    model,
    opt,
    sampler,
    gen: torch.Generator,
    cfg: GRPOConfig,
    seeds: torch.Generator | None = None,
) -> tuple[int, list[dict]]:
    """Restore everything ``save_checkpoint`` wrote (raises ``checkpoint.ResumeError`` when this run
    cannot continue it); this rank gets its own RNG states back."""
    engine = distributed.engine_of(opt)
    checkpoint.check_resume(path, cfg.model_dump(), engine=engine is not None, world_exact=cfg.prompt_seeds)
    state, rng, history = checkpoint.load(path)
    if engine is not None:
        checkpoint.load_engine(path, opt)
    else:
        distributed.unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    sampler.load_state_dict(state["sampler"])
    if seeds is not None and state.get("seeds") is not None:
        seeds.set_state(state["seeds"])
    if rng is not None:
        torch.set_rng_state(rng["torch"])
        gen.set_state(rng["generator"])
        random.setstate(rng["python"])
    return state["step"], history
