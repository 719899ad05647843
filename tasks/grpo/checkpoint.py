"""GRPO checkpoints (the shared mechanics are tasks/checkpoint.py): what a GRPO run must restore.

A GRPO checkpoint's ``state.pt`` holds the model, the optimiser, the prompt-sampler state, the
step, and the torch/generator/python RNG states of every rank: each rank samples its own
completions from its own generator, so a resumed rank r gets rank r's states back. The learning
rate is a pure function of the step (``tasks.schedule.lr_at``), so no scheduler state is needed.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from tasks import checkpoint
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


def save_checkpoint(ckpt_dir: Path, step: int, model, opt, sampler, rngs: list[dict], history: list[dict]) -> Path:
    """Write step ``step`` atomically; ``rngs[r]`` is rank r's ``rng_state`` (gathered by the caller)."""
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "sampler": sampler.state_dict(), "rng": rngs}
    return checkpoint.save(ckpt_dir, step, state, history)


def load_checkpoint(path: Path, model, opt, sampler, gen: torch.Generator, rank: int = 0) -> tuple[int, list[dict]]:
    """Restore everything ``save_checkpoint`` wrote; this rank gets its own RNG states back."""
    state, history = checkpoint.load(path)
    if len(state["rng"]) <= rank:
        raise ValueError(f"{path}: written by {len(state['rng'])} process(es), cannot resume rank {rank}; "
                         "resume with the same scale.num_processes")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sampler.load_state_dict(state["sampler"])
    rng = state["rng"][rank]
    torch.set_rng_state(rng["torch"])
    gen.set_state(rng["generator"])
    random.setstate(rng["python"])
    return state["step"], history
