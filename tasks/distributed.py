"""Scale-out for the SFT and GRPO stages: relaunch under a launcher, one process group, a replica.

Choices:

- A stage whose ``<stage>.scale.num_processes`` is above 1 re-runs itself under a launcher
  (:func:`maybe_relaunch`): ``torchrun --standalone`` (ships with torch, gloo on CPU) or the
  ``deepspeed`` launcher, with the same command line. ``python -m tasks.stages.sft`` and ``dvc repro``
  therefore need no change. A process that already runs under a launcher (``WORLD_SIZE`` and
  ``LOCAL_RANK`` set) never relaunches.
- Backend gloo on CPU, nccl on CUDA (rank r on ``cuda:LOCAL_RANK``). With one process and no
  DeepSpeed no process group is created and nothing changes: the default run is the
  single-process code path, RNG draws included.
- Data parallel: DDP, or a DeepSpeed engine (ZeRO-2/3) when ``scale.deepspeed_config`` is set.
  Either hides behind :class:`Replica`: its forward goes through the engine while gradients are
  on (so gradients are averaged over ranks) and is the plain module when they are off (sampling,
  reference log-probs), so ranks may generate sequences of different lengths without a
  collective mismatch. For DeepSpeed, :class:`EngineOptimizer` makes ``opt.step()`` the engine's
  step; the engine runs with ``managed_gradient_accumulation: false``, so plain
  ``loss.backward()`` calls accumulate and every ``step()`` is an optimiser step, the contract
  the training loops already follow. DeepSpeed clips gradients itself (``gradient_clipping``).
- The gradient rule: DDP/DeepSpeed average gradients over ranks, so each rank scales its loss by
  ``world / global count`` (SFT: completion tokens; GRPO: rows or tokens, tasks/grpo/batching.py),
  which is exact for any split, uneven ones included. Ranks with fewer work items run zero-weight
  passes so every rank joins every gradient all-reduce.
- ZeRO-3: the engine's parameters are partitioned, and gathering them is a collective every rank
  must join, which generation (ranks stop at different lengths) cannot promise. The replica's
  no-grad module is therefore a full copy, refreshed from the gathered shards after every
  optimiser step and after a resume (:class:`EngineOptimizer`); sampling, reference-free logging,
  digests and ``save_pretrained`` read it.
- GRPO's prompt sharding lives with GRPO (``tasks/grpo/sharding.py``) and the rank-0-only MLflow
  run with tracking (``tasks.tracking.rank_zero_run``): an edit there re-runs GRPO, not SFT.
- Only rank 0 writes files, opens the MLflow run and saves models (:func:`save_pretrained`).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import socket
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tasks.config.training import ScaleConfig


# ----------------------------------------------------------------------------- launch
def under_launcher() -> bool:
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(module: str, argv: list[str], scale: ScaleConfig) -> list[str]:
    """The command that runs ``python -m module argv`` in ``scale.num_processes`` processes."""
    n = str(scale.num_processes)
    if scale.launcher == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            n,
            "-m",
            module,
            *argv,
        ]
    return [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus",
        n,
        "--master_port",
        str(free_port()),
        "--no_local_rank",
        "--module",
        module,
        *argv,
    ]


def maybe_relaunch(module: str, argv: list[str] | None, scale: ScaleConfig) -> int | None:
    """Run the stage under the launcher and return its exit code; None when this process should train."""
    if scale.num_processes == 1 or under_launcher():
        return None
    cmd = launch_command(module, list(sys.argv[1:] if argv is None else argv), scale)
    print(
        f"{module}: {scale.num_processes} processes via {scale.launcher}: {' '.join(cmd)}",
        file=sys.stderr,
        flush=True,
    )
    return subprocess.run(cmd).returncode


# ----------------------------------------------------------------------------- process group
def init(scale: ScaleConfig) -> tuple[int, int, str]:
    """``(rank, world_size, device)``; joins the process group when there is more than one process."""
    cuda = torch.cuda.is_available()
    if not under_launcher() and scale.deepspeed_config is None:
        return 0, 1, "cuda" if cuda else "cpu"
    if not under_launcher():  # DeepSpeed needs a process group even for a single process
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())
        )
    local = int(os.environ["LOCAL_RANK"])
    device = "cpu"
    if cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum over ranks (a copy; the input is left alone)."""
    t = t.detach().clone()
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def all_reduce_max(x: int) -> int:
    """The largest ``x`` over ranks."""
    if not dist.is_initialized():
        return x
    t = torch.tensor([x])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (pickled; for small things such as metrics)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard(items: list, r: int, world: int) -> list:
    """Rank ``r``'s contiguous share of ``items`` (sizes differ by at most one)."""
    n = len(items)
    return items[r * n // world : (r + 1) * n // world]


# ----------------------------------------------------------------------------- the replica
class Replica:
    """A model replicated over ranks: gradient-enabled forward through ``engine`` (DDP or DeepSpeed),
    no-grad forward straight to ``module``; everything else is the module's."""

    def __init__(self, engine, module: torch.nn.Module):
        self.engine, self.module = engine, module

        # Callers that inspect the forward signature (tasks.generation picks its cache keyword
        # from it) see the module's.
        def forward(*args, **kwargs):
            return self(*args, **kwargs)

        self.forward = functools.update_wrapper(forward, module.forward)

    def __call__(self, *args, **kwargs):
        return (self.engine if torch.is_grad_enabled() else self.module)(*args, **kwargs)

    def train(self, mode: bool = True) -> Replica:
        self.engine.train(mode)
        return self

    def eval(self) -> Replica:
        return self.train(False)

    def __getattr__(self, name: str):  # parameters(), training, config, ...
        return getattr(self.module, name)


class EngineOptimizer:
    """The optimiser interface over a DeepSpeed engine: ``step()`` is ``engine.step()``.

    ``twin``: under ZeRO-3, the full copy the replica samples with; refreshed after each step."""

    def __init__(self, engine, twin: torch.nn.Module | None = None):
        self.engine, self.twin = engine, twin

    def refresh(self) -> None:
        """Copy the gathered ZeRO-3 parameters into the twin (a collective: every rank calls it)."""
        if self.twin is None:
            return
        import deepspeed

        params = list(self.engine.module.parameters())
        with deepspeed.zero.GatheredParameters(params), torch.no_grad():
            for src, dst in zip(params, self.twin.parameters()):
                dst.copy_(src.data)

    @property
    def param_groups(self) -> list[dict]:
        return self.engine.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.engine.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.engine.step()
        self.refresh()

    def grad_norm(self) -> float:
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def state_dict(self) -> dict:
        return self.engine.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.engine.optimizer.load_state_dict(state)


def deepspeed_config(path: str | Path, world: int, max_grad_norm: float, mixed_precision: str) -> dict:
    """The JSON file with its ``"auto"`` values filled in from the stage's settings.

    The training loops own batching and accumulation, so DeepSpeed sees one micro-batch per step
    per rank and ``managed_gradient_accumulation: false`` (each ``step()`` is a boundary). Other
    ``"auto"`` entries are dropped, leaving DeepSpeed's defaults.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"scale.deepspeed_config: {p} not found")
    cfg = json.loads(p.read_text())
    cfg.update(
        train_micro_batch_size_per_gpu=1,
        gradient_accumulation_steps=1,
        train_batch_size=world,
        gradient_clipping=max_grad_norm,
        managed_gradient_accumulation=False,
    )
    cfg["bf16"] = {**cfg.get("bf16", {}), "enabled": mixed_precision == "bf16"}
    cfg["zero_optimization"] = {k: v for k, v in cfg.get("zero_optimization", {}).items() if v != "auto"}
    return {k: v for k, v in cfg.items() if v != "auto"}


def zero_stage(config: dict) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def engine_of(opt):
    """The DeepSpeed engine behind ``opt``, or None (DDP / one process)."""
    return opt.engine if isinstance(opt, EngineOptimizer) else None


def wrap(model: torch.nn.Module, opt: torch.optim.Optimizer, scale: ScaleConfig, max_grad_norm: float):
    """``(model, opt)`` ready for data-parallel training; unchanged for one process without DeepSpeed."""
    world = world_size()
    if scale.deepspeed_config is not None:
        import deepspeed

        config = deepspeed_config(scale.deepspeed_config, world, max_grad_norm, scale.mixed_precision)
        twin = copy.deepcopy(model) if zero_stage(config) == 3 else None
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=config)
        return Replica(engine, twin or engine.module), EngineOptimizer(engine, twin)
    if world == 1:
        return model, opt
    device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
    # No buffer sync in forward: buffers (rotary frequencies) are constants, and a broadcast in every
    # forward would be one more collective per micro-batch.
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)
    return Replica(ddp, model), opt


def unwrap(model):
    return model.module if isinstance(model, Replica) else model


def clip_and_step(model, opt, max_grad_norm: float) -> float:
    """Clip the gradient norm and take the optimiser step; returns the norm before clipping."""
    if isinstance(opt, EngineOptimizer):  # DeepSpeed clips (gradient_clipping) inside step()
        opt.step()
        return opt.grad_norm()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    opt.step()
    return float(norm)


def save_pretrained(model, tokenizer, out_dir: str | Path, peft_model=None) -> None:
    """Rank 0 writes a plain HF folder (LoRA merged in; ZeRO-3 shards gathered first, on every rank)."""
    module = unwrap(model)
    gather = nullcontext()
    if any(hasattr(p, "ds_id") for p in module.parameters()):  # ZeRO-3 partitioned parameters
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=0)
    with gather:
        if is_main():
            from tasks.lora import merged

            (merged(peft_model) if peft_model is not None else module).save_pretrained(out_dir)
            tokenizer.save_pretrained(out_dir)
    barrier()
