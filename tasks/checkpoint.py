"""Training checkpoints shared by SFT and GRPO: atomic, complete, keyed to the run's inputs.

A checkpoint is ``<root>/<run key>/step-N/`` holding ``state.pt`` (whatever the trainer needs to
continue exactly: weights, optimiser, data order, random states) and ``history.json`` (the metric
history so far). It is written to ``.tmp-step-N`` and renamed, so a crash leaves either a whole
checkpoint or none; the newest ``KEEP`` are kept. The run key hashes the stage config and the
input files, so a changed config, dataset or start model never resumes a stale run. Writing a
checkpoint reads no random numbers, so a run with checkpoints trains exactly as one without.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from tasks.tracking import md5

KEEP = 2


def run_key(config: dict[str, Any], inputs: list[Path]) -> str:
    """A short hash of the config and the inputs' names and contents."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for p in inputs:
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                h.update(f.name.encode() + md5(f).encode())
    return h.hexdigest()[:16]


def save(ckpt_dir: Path, step: int, state: dict[str, Any], history: list[dict]) -> Path:
    """Write step ``step`` atomically and drop all but the newest ``KEEP``; returns its folder."""
    final = ckpt_dir / f"step-{step:06d}"
    tmp = ckpt_dir / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"step": step, **state}, tmp / "state.pt")
    (tmp / "history.json").write_text(json.dumps(history))
    tmp.rename(final)  # atomic on one filesystem: a checkpoint is either whole or absent
    for old in sorted(ckpt_dir.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(ckpt_dir: Path) -> Path | None:
    found = sorted(p for p in ckpt_dir.glob("step-*") if (p / "state.pt").is_file())
    return found[-1] if found else None


def load(path: Path) -> tuple[dict[str, Any], list[dict]]:
    """``(state, history)`` as :func:`save` wrote them (``state["step"]`` is the step reached)."""
    return torch.load(path / "state.pt", weights_only=False), json.loads((path / "history.json").read_text())
