"""How one GRPO update is cut into forward/backward passes, without changing its gradient.

The update trains on the kept rollout groups. This module plans the passes (``plan``):

1. **Micro-batches** (``micro_batches``): pieces of at most ``ceil(prompts_per_step / grad_accum)``
   groups, never across generation rounds.
2. **Loss masks**: each piece's completion mask, minus truncated completions under
   ``mask_truncated`` (DAPO: a cut-off completion has no verdict to learn from).
3. **Skip flat rows** (policy in ``plan``): without a KL term, on one process, rows with advantage
   0 (every row of an all-equal group) add exactly 0 to the loss and its gradient, whatever the
   ratio or clip, so they skip the forward and backward. The denominators below still count them.
   Under DDP/DeepSpeed every rank must run the same backward passes, so nothing is skipped there.
4. **Length buckets** (``buckets``): a micro-batch of >= 2 * ``MIN_BUCKET_ROWS`` rows runs as up to
   ``MAX_BUCKETS`` runs of rows sorted by length, each ``trim``-med to its own longest completion
   and prompt. One process only: under DDP every extra pass is one more all-reduce.
5. **Weights**: each work item's ``policy_loss`` is multiplied by ``weight`` so the items add up to
   the step's loss exactly. Per micro-batch: rows / all rows (grpo, dr_grpo: means over rows), 1
   (dapo: already divided by the step's global token count), 1 / micro-batches (bnpo: the mean of
   the micro-batches' token means). Per bucket inside it: rows_b / rows (grpo, dr_grpo), 1 (dapo),
   tokens_b / tokens (bnpo).

6. **Padding over ranks**: under DDP/DeepSpeed every backward is an all-reduce every rank must join,
   and ranks may hold different numbers of groups (``prompts_per_step`` not divisible by the world
   size, dynamic sampling). A rank with fewer passes runs zero-weight passes (``padding``) over one
   of its own groups: its gradient contribution is exactly 0. The denominators are global (rows,
   micro-batches, tokens summed over ranks), so grpo, dr_grpo and dapo are the one-process loss
   for any split; bnpo stays a mean of micro-batch token means, and each rank's micro-batches are
   cut from its own groups, so it equals one process only when the cut coincides.

The result is exact up to floating-point summation order: the equivalence tests check trimmed
buckets against one padded pass, skip against no skip, and grad_accum against one whole batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tasks import distributed
from tasks.config.grpo import GRPOConfig
from tasks.generation import Samples
from tasks.grpo.rollout import Rollout

# Length buckets per micro-batch (each one forward + backward). ``update`` on three rollouts of
# bench_grpo's informative prompts (56-64 live rows of 25-44 tokens, embedded model, 2 threads,
# median of 8): one pass 0.36 s, two buckets 0.33 s, four 0.46 s. Smaller passes run the matmuls
# less efficiently than the padding they save.
MAX_BUCKETS = 2
MIN_BUCKET_ROWS = 16  # below this a bucket's saved padding no longer pays for its extra passes


@dataclass
class WorkItem:
    """One forward/backward of the update: rows of one micro-batch, padding columns trimmed."""

    samples: Samples
    mask: torch.Tensor  # [b, t] tokens that count in the loss
    advantages: torch.Tensor  # [b]
    weight: float  # multiplies the item's policy_loss so the items add up to the step's loss
    pad: bool = False  # a zero-weight pass that only keeps this rank in step with the others


@dataclass
class Plan:
    items: list[WorkItem]
    num_items: float  # dapo's token count for this rank: global tokens / world (DDP averages ranks)
    lengths: torch.Tensor  # completion length of every kept row, for metrics
    truncated: torch.Tensor  # [rows] bool, every kept row


def micro_batches(kept: list[Rollout], cfg: GRPOConfig) -> list[Rollout]:
    """Split the kept groups into pieces of at most ceil(P / grad_accum) groups (never across rounds)."""
    per = max(1, math.ceil(cfg.prompts_per_step / cfg.grad_accum))
    return [
        ro.groups(list(range(i, min(i + per, ro.n_groups))))
        for ro in kept
        for i in range(0, ro.n_groups, per)
    ]


def trim(samples: Samples, mask: torch.Tensor) -> tuple[Samples, torch.Tensor]:
    """Drop the columns that are padding in every row: left prompt padding, and completion slots
    after the last one that counts in ``mask``. Exact: positions come from the prompt mask, the
    loss reads only ``mask``'s slots, and a causal model's logits at a slot do not depend on later
    columns. At least one completion column is kept (an all-masked item still runs, adding 0)."""
    used = mask.any(0).nonzero()
    t = int(used[-1]) + 1 if len(used) else 1
    first = samples.prompt_mask.any(0).nonzero()
    p0 = int(first[0]) if len(first) else 0
    trimmed = Samples(
        samples.prompt_ids[:, p0:],
        samples.prompt_mask[:, p0:],
        samples.completion_ids[:, :t],
        samples.completion_mask[:, :t],
        samples.texts,
        samples.truncated,
    )
    return trimmed, mask[:, :t]


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


def loss_mask(piece: Rollout, cfg: GRPOConfig) -> torch.Tensor:
    mask = piece.samples.completion_mask
    if cfg.mask_truncated:  # DAPO: a cut-off completion has no verdict to learn from
        mask = mask * (~piece.samples.truncated)[:, None].to(mask.dtype)
    return mask


def _rows(piece: Rollout, mask: torch.Tensor, idx: list[int]) -> tuple[Samples, torch.Tensor, torch.Tensor]:
    """Rows ``idx`` of one micro-batch: samples, loss mask, advantages (no copy when it is all rows)."""
    if len(idx) == len(piece.samples.texts):
        return piece.samples, mask, piece.advantages
    t = torch.tensor(idx)
    return piece.samples.select(idx), mask[t.to(mask.device)], piece.advantages[t]


def work_items(
    pieces: list[Rollout],
    masks: list[torch.Tensor],
    cfg: GRPOConfig,
    n_rows: float,
    max_buckets: int = MAX_BUCKETS,
    min_rows: int = MIN_BUCKET_ROWS,
    do_trim: bool = True,
    skip_flat: bool = False,
    n_pieces: float | None = None,
) -> list[WorkItem]:
    """Every forward/backward of one update, weighted as in point 5 of the module docstring.
    ``n_rows``/``n_pieces``: the step's rows and micro-batches (over N ranks: global / N)."""
    out = []
    n_pieces = len(pieces) if n_pieces is None else n_pieces
    for piece, mask in zip(pieces, masks):
        rows = len(piece.samples.texts)
        outer = {"grpo": rows / n_rows, "dr_grpo": rows / n_rows, "dapo": 1.0, "bnpo": 1 / n_pieces}[
            cfg.loss_type
        ]
        piece_tokens = float(mask.sum())
        live = (piece.advantages != 0).nonzero().squeeze(-1).tolist() if skip_flat else list(range(rows))
        if not live:
            continue
        live_mask = mask if len(live) == rows else mask[torch.tensor(live, device=mask.device)]
        for bucket in buckets(live_mask, max_buckets, min_rows):
            idx = [live[i] for i in bucket]
            sub, sub_mask, adv = _rows(piece, mask, idx)
            if cfg.loss_type == "bnpo":
                inner = float(sub_mask.sum()) / piece_tokens if piece_tokens > 0 else 0.0
            else:
                inner = len(idx) / rows if cfg.loss_type != "dapo" else 1.0
            if do_trim:
                sub, sub_mask = trim(sub, sub_mask)
            out.append(WorkItem(sub, sub_mask, adv, outer * inner))
    return out


def plan(
    kept: list[Rollout],
    cfg: GRPOConfig,
    *,
    engine: bool = False,
    max_buckets: int = MAX_BUCKETS,
    min_bucket_rows: int = MIN_BUCKET_ROWS,
    trim_padding: bool = True,
    skip_flat: bool = True,
    filler: Rollout | None = None,
) -> Plan:
    """The passes of one update over the kept groups. ``max_buckets``, ``min_bucket_rows``,
    ``trim_padding`` and ``skip_flat`` change the cost, not the result: ``max_buckets=1,
    trim_padding=False, skip_flat=False`` is one padded pass per micro-batch over every row.
    ``engine``: the optimiser is a DeepSpeed engine (its ranks synchronise every backward).
    ``filler``: over N ranks, a rollout of this rank's to build zero-weight passes from, so every
    rank runs as many backward passes as the busiest one (point 6 of the module docstring)."""
    pieces = micro_batches(kept, cfg)
    masks = [loss_mask(p, cfg) for p in pieces]
    n_rows: float = sum(len(p.samples.texts) for p in pieces)
    n_pieces: float = len(pieces)
    n_tokens = float(sum(m.sum() for m in masks))
    world = distributed.world_size()
    # dapo's token mean is over the *global* batch; DDP then averages gradients over ranks, so each
    # rank divides by (global tokens / world) to make the average the global token mean. Rows and
    # micro-batches likewise, so ranks holding different numbers of groups still add up exactly.
    n_items = n_tokens
    if world > 1:
        totals = distributed.all_reduce_sum(torch.tensor([n_tokens, n_rows, n_pieces], dtype=torch.float64))
        n_items, n_rows, n_pieces = (float(x) / world for x in totals)
        max_buckets = 1  # DDP/DeepSpeed all-reduce at every backward: extra passes would cost traffic
    # A KL term gives flat rows a gradient; other ranks would wait for this rank's backward.
    skip_flat = skip_flat and cfg.beta == 0 and world == 1 and not engine
    items = work_items(
        pieces,
        masks,
        cfg,
        n_rows,
        max_buckets,
        min_bucket_rows,
        trim_padding,
        skip_flat,
        n_pieces if world > 1 else None,
    )
    if world > 1:
        items += padding(filler or kept[0], cfg, distributed.all_reduce_max(len(items)) - len(items))
    lengths = (
        torch.cat([p.samples.completion_mask.sum(1) for p in pieces]).float() if pieces else torch.zeros(0)
    )
    truncated = (
        torch.cat([p.samples.truncated for p in pieces]) if pieces else torch.zeros(0, dtype=torch.bool)
    )
    return Plan(items, n_items, lengths, truncated)


def padding(ro: Rollout, cfg: GRPOConfig, k: int) -> list[WorkItem]:
    """``k`` zero-weight passes over one group of ``ro``: gradient exactly 0, but the all-reduce joined."""
    piece = ro.groups([0])
    samples, mask = trim(piece.samples, loss_mask(piece, cfg))
    return [WorkItem(samples, mask, piece.advantages, 0.0, pad=True) for _ in range(k)]
