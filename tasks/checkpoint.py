"""Training checkpoints shared by SFT and GRPO: collective, atomic, complete, keyed to the run's inputs.

A checkpoint is ``<root>/<run key>/step-N/``. Every rank of the job calls :func:`save` (it is a
collective; one process is the world of one):

- ``engine/``: a DeepSpeed engine's own ``save_checkpoint`` -- model and *every rank's* ZeRO
  optimizer shard (ZeRO-3: every rank's parameter shard too). Without DeepSpeed, rank 0 puts the
  model and optimiser in ``state.pt``.
- ``rank-R.pt``: what differs between ranks (random states); each rank writes its own.
- ``state.pt`` (rank 0): the rest (step, data order, sampler/curriculum state); ``history.json``.
- ``manifest.json`` (rank 0, last, after a barrier): the world size, the engine, the config and the
  list of every file written. Only then is ``.tmp-step-N`` renamed to ``step-N``, so a crash
  leaves a whole checkpoint or none, and :func:`latest` never picks one missing a rank's part (it
  checks every file the manifest lists). The newest ``KEEP`` are kept.

The run key hashes the stage config *without* the fields a resume may change (``RESUMABLE``:
scale, steps, save/log cadence) and the input files, so a changed dataset, start model or
optimisation setting never resumes a stale run; :func:`check_resume` then says which of the
resumable fields changed and whether that breaks exactness, and refuses what cannot work (a
DeepSpeed checkpoint onto another world size, a checkpoint past the last step). Writing a
checkpoint reads no random numbers, so a run with checkpoints trains exactly as one without.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from tasks import distributed
from tasks.tracking import md5

KEEP = 2
MANIFEST = "manifest.json"
ENGINE_TAG = "engine"
# Config fields a resumed run may change; everything else is part of the run key.
RESUMABLE = ("scale", "steps", "save_every", "log_every")


class ResumeError(RuntimeError):
    """A checkpoint this run cannot continue from; the message says what to do."""


def run_key(config: dict[str, Any], inputs: list[Path]) -> str:
    """A short hash of the config (minus ``RESUMABLE``) and the inputs' names and contents."""
    kept = {k: v for k, v in config.items() if k not in RESUMABLE}
    h = hashlib.sha256(json.dumps(kept, sort_keys=True).encode())
    for p in inputs:
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                h.update(f.name.encode() + md5(f).encode())
    return h.hexdigest()[:16]


def save(
    ckpt_dir: Path,
    step: int,
    state: dict[str, Any],
    history: list[dict],
    *,
    rank_state: dict | None = None,
    engine=None,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write step ``step`` on every rank (a collective); returns its folder. ``state`` is rank 0's."""
    r, world = distributed.rank(), distributed.world_size()
    final, tmp = ckpt_dir / f"step-{step:06d}", ckpt_dir / f".tmp-step-{step:06d}"
    if r == 0:
        for stale in ckpt_dir.glob(".tmp-step-*"):  # writes cut short by a crash
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    distributed.barrier()
    if engine is not None:  # every rank writes its own optimiser (and ZeRO-3 parameter) shard
        engine.save_checkpoint(str(tmp), tag=ENGINE_TAG, save_latest=False)
    torch.save(rank_state or {}, tmp / f"rank-{r:05d}.pt")
    distributed.barrier()  # every rank's part is on disk
    if r == 0:
        torch.save({"step": step, **state}, tmp / "state.pt")
        (tmp / "history.json").write_text(json.dumps(history))
        files = sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file())
        manifest = {
            "step": step,
            "world_size": world,
            "engine": engine is not None,
            "config": config or {},
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        tmp.rename(final)  # atomic on one filesystem: a checkpoint is either whole or absent
        complete = [p for p in sorted(ckpt_dir.glob("step-*")) if is_complete(p)]
        for old in complete[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
    distributed.barrier()  # nobody runs ahead of the rename
    return final


def manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / MANIFEST).read_text())


def is_complete(path: Path) -> bool:
    """The manifest is there and every file it lists (every rank's part) is too."""
    try:
        files = manifest(path)["files"]
    except (OSError, ValueError, KeyError):
        return False
    return all((path / f).is_file() for f in files)


def latest(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint (incomplete ones are skipped, never picked)."""
    found = [p for p in sorted(ckpt_dir.glob("step-*"), reverse=True) if is_complete(p)]
    return found[0] if found else None


def load(path: Path, rank: int | None = None) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict]]:
    """``(state, rank ``rank``'s rank_state or None, history)`` as :func:`save` wrote them (default:
    this process's rank; None when the checkpoint had no such rank)."""
    state = torch.load(path / "state.pt", weights_only=False)
    mine = path / f"rank-{distributed.rank() if rank is None else rank:05d}.pt"
    rank_state = torch.load(mine, weights_only=False) if mine.is_file() else None
    return state, rank_state, json.loads((path / "history.json").read_text())


def load_engine(path: Path, opt: distributed.EngineOptimizer) -> None:
    """Every rank loads its own shard of a DeepSpeed engine checkpoint (model + optimiser)."""
    loaded, _ = opt.engine.load_checkpoint(str(path), tag=ENGINE_TAG, load_lr_scheduler_states=False)
    if loaded is None:
        raise ResumeError(f"{path / ENGINE_TAG}: DeepSpeed could not load it")
    opt.refresh()  # ZeRO-3: the sampling copy gets the loaded weights


def check_resume(path: Path, config: dict[str, Any], *, engine: bool, world_exact: bool) -> list[str]:
    """Refuse a checkpoint this run cannot continue; return warnings about changes that break exactness.

    ``world_exact``: the stage gives the same result on any number of processes (up to float
    order), so a changed world size is a note, not a break of exactness.
    """
    m = manifest(path)
    was, now = m["world_size"], distributed.world_size()
    old = m.get("config", {})
    if m["engine"] != engine:
        raise ResumeError(
            f"{path}: written {'with' if m['engine'] else 'without'} DeepSpeed; resume with the same "
            "scale.deepspeed_config, or remove the checkpoint folder to start over"
        )
    if engine and was != now:
        raise ResumeError(
            f"{path}: a DeepSpeed checkpoint of {was} process(es) cannot be loaded by {now}: its optimiser "
            f"is sharded {was} ways. Resume with scale.num_processes={was}, or convert it with DeepSpeed's "
            "ds_to_universal and start a fresh run from the converted weights"
        )
    if m["step"] > config["steps"]:
        raise ResumeError(
            f"{path}: checkpoint at step {m['step']} is past steps={config['steps']}; raise steps, or remove "
            f"{path.parent} to start over"
        )
    notes = []
    if old and old.get("steps") != config["steps"]:
        notes.append(
            f"steps changed {old.get('steps')} -> {config['steps']}: the learning-rate schedule "
            "depends on it, so this run is NOT the one an uninterrupted run would have been"
        )
    if was != now:
        notes.append(
            f"world size changed {was} -> {now}: "
            + (
                "same global batch, exact up to floating-point order"
                if world_exact
                else "each process draws its own completions, so the continuation is NOT exact"
            )
        )
    for note in notes:
        print(f"resume {path}: {note}", file=sys.stderr, flush=True)
    return notes
