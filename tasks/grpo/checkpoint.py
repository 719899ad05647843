"""GRPO checkpoints: atomic, complete, keyed to the run's inputs, the newest K kept.

A checkpoint is ``checkpoints/grpo/<run key>/step-N/`` holding ``state.pt`` (model, optimiser,
prompt-sampler state, the step, and the torch/generator/python RNG states of every rank: each rank
samples its own completions from its own generator, so a resumed rank r gets rank r's states back) and ``history.json`` (the metric
history so far). It is written to ``.tmp-step-N`` and renamed, so a crash leaves either a whole
checkpoint or none. The run key hashes the GRPO config and the input files, so a changed config,
dataset or start model never resumes a stale run. The learning rate is a pure function of the
step (``tasks.schedule.lr_at``), so no scheduler state is needed.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import torch

from tasks.config.grpo import GRPOConfig
from tasks.tracking import md5

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
def rng_state(gen: torch.Generator) -> dict:
    """This process's random state: what it needs to draw the same numbers after a resume."""
    return {"torch": torch.get_rng_state(), "generator": gen.get_state(), "python": random.getstate()}


def save_checkpoint(ckpt_dir: Path, step: int, model, opt, sampler, rngs: list[dict], history: list[dict]) -> Path:
    """Write step ``step`` atomically; ``rngs[r]`` is rank r's ``rng_state`` (gathered by the caller)."""
    final = ckpt_dir / f"step-{step:06d}"
    tmp = ckpt_dir / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "sampler": sampler.state_dict(),
        "rng": rngs,
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


def load_checkpoint(path: Path, model, opt, sampler, gen: torch.Generator, rank: int = 0) -> tuple[int, list[dict]]:
    """Restore everything ``save_checkpoint`` wrote; this rank gets its own RNG states back."""
    state = torch.load(path / "state.pt", weights_only=False)
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
    return state["step"], json.loads((path / "history.json").read_text())
