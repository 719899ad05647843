"""One GRPO step: draw prompts, roll out, score, update the curriculum, take mu clipped steps.

The step, top to bottom (the maths is in ``loss.py``, rollouts in ``rollout.py``, how the update is
cut into passes in ``batching.py``; the stage around it is ``tasks/stages/grpo.py``):

1. the curriculum sampler (``grpo.sampler``) picks ``prompts_per_step`` rows of the ``rl`` split;
2. the policy samples ``group_size`` completions per prompt; the reward executor scores them in
   worker processes (math-verify and code never run in this process); group advantages;
   with ``dynamic_sampling``, all-equal groups are dropped and more prompts drawn (rollout.py);
3. the sampler is updated with every group's statistics (evaluation never updates it);
4. ``num_iterations`` (mu) optimiser updates on the kept rollouts (``update``). The first pass's
   log-probs are the rollout policy's, kept as pi_old for the later ones (no extra forward); the
   work items' weighted losses add up to the step's loss, so one clipped gradient step per update
   sees the whole batch's gradient.

The learning rate is a pure function of the step (``tasks.schedule.lr_at``).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from tasks import distributed
from tasks.config.grpo import GRPOConfig
from tasks.config.model import ModelConfig
from tasks.generation import completion_logprobs
from tasks.grpo.batching import MAX_BUCKETS, MIN_BUCKET_ROWS, Plan, plan
from tasks.grpo.loss import policy_loss
from tasks.grpo.rollout import Rollout, collect, merged_stats
from tasks.grpo.sampler import PromptSampler
from tasks.grpo.sharding import ShardedSampler
from tasks.metrics import per_source_means
from tasks.schedule import lr_at


def update(
    model,
    ref_model,
    kept: list[Rollout],
    cfg: GRPOConfig,
    opt,
    *,
    max_buckets: int = MAX_BUCKETS,
    min_bucket_rows: int = MIN_BUCKET_ROWS,
    trim_padding: bool = True,
    skip_flat: bool = True,
    filler: Rollout | None = None,
) -> dict[str, float]:
    """``num_iterations`` clipped policy-gradient steps on the kept rollouts; returns metrics.

    The keyword arguments only change how the work is cut (``batching.plan``), not the result.
    With rows skipped, per-token metrics (entropy, ratio, clip fractions) are over the rows trained on.
    ``filler``: over N ranks, a rollout to build zero-weight passes from (``batching.padding``).
    """
    work = plan(
        kept,
        cfg,
        engine=isinstance(opt, distributed.EngineOptimizer),
        max_buckets=max_buckets,
        min_bucket_rows=min_bucket_rows,
        trim_padding=trim_padding,
        skip_flat=skip_flat,
        filler=filler,
    )
    ref = reference_logprobs(ref_model, work) if cfg.beta > 0 else [None] * len(work.items)
    old: list[torch.Tensor] = []
    stats = _Stats()
    model.train()
    for it in range(cfg.num_iterations):
        opt.zero_grad(set_to_none=True)
        if not work.items:  # every row skipped: the step must still see a zero gradient (Adam's moments move)
            for p in model.parameters():
                if p.requires_grad:
                    p.grad = torch.zeros_like(p)
        for j, w in enumerate(work.items):
            if it == 0:
                logp, entropy = completion_logprobs(model, w.samples, with_entropy=True)
                old.append(logp.detach())  # pi_old: the policy that sampled these rollouts
                if not w.pad:
                    stats.add_entropy(entropy, w.mask)
            else:
                logp = completion_logprobs(model, w.samples)
            loss, loss_stats = policy_loss(
                logp,
                old[j],
                w.advantages.to(logp.device),
                w.mask,
                loss_type=cfg.loss_type,
                epsilon=cfg.epsilon,
                epsilon_high=cfg.epsilon_high,
                importance_sampling_level=cfg.importance_sampling_level,
                beta=cfg.beta,
                ref_logp=ref[j],
                max_completion_length=cfg.max_new_tokens,
                num_items_in_batch=work.num_items,
            )
            (loss * w.weight).backward()  # the weights make the items add up to the step's loss
            if not w.pad:
                stats.add(loss.item() * w.weight, loss_stats, float(w.mask.sum()))
        grad_norm = distributed.clip_and_step(model, opt, cfg.max_grad_norm)  # DeepSpeed clips in its step
    return stats.metrics(cfg.num_iterations, grad_norm, work)


def reference_logprobs(ref_model, work: Plan) -> list[torch.Tensor]:
    """The frozen reference's log-probs of every work item (the KL term's anchor)."""
    with torch.no_grad():
        return [completion_logprobs(ref_model, w.samples) for w in work.items]


class _Stats:
    """Sums behind ``update``'s metrics: loss per update, token-weighted loss stats, entropy."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weight = self.tokens = self.loss = self.entropy = 0.0

    def add_entropy(self, entropy: torch.Tensor, mask: torch.Tensor) -> None:
        self.entropy += float((entropy * mask.to(entropy.dtype)).sum())
        self.tokens += float(mask.sum())

    def add(self, weighted_loss: float, loss_stats: dict[str, float], tokens: float) -> None:
        self.loss += weighted_loss
        self.weight += tokens
        for key, v in loss_stats.items():
            self.sums[key] = self.sums.get(key, 0.0) + v * tokens

    def metrics(self, iterations: int, grad_norm: float, work: Plan) -> dict[str, float]:
        out = {k: v / max(self.weight, 1.0) for k, v in self.sums.items()}
        out.update(
            loss=self.loss / iterations, entropy=self.entropy / max(self.tokens, 1.0), grad_norm=grad_norm
        )
        if work.lengths.numel():  # a rank that held no kept group has no lengths to report
            out.update(
                response_length=work.lengths.mean().item(), truncated=work.truncated.float().mean().item()
            )
        return out


def curriculum_metrics(sampler: PromptSampler) -> dict[str, float]:
    """The sampler's next-draw probabilities and per-arm statistics, flattened for the tracker."""
    out = {f"curriculum/p/{s}": p for s, p in sampler.probabilities().items()}
    for s, st in sampler.arm_stats().items():
        out.update(
            {f"curriculum/{k}/{s}": float(v) for k, v in st.items() if k != "prob"}
        )  # prob: logged as p/
    if sampler.online is not None:  # skip rate, predicted vs observed flat groups, pass-rate histogram
        out.update({f"curriculum/online/{k}": v for k, v in sampler.online.metrics().items()})
    return out


def completions_table(seen: list[Rollout]) -> dict[str, list]:
    """Prompts, completions, each reward's score, the total and the advantage (every round seen)."""
    table: dict[str, list] = {
        "prompt": [],
        "source": [],
        "completion": [],
        "reward": [],
        "advantage": [],
        "kept": [],
    }
    names = list(seen[0].per_reward)
    for name in names:
        table[f"reward/{name}"] = []
    for ro in seen:
        for i, text in enumerate(ro.samples.texts):
            row = ro.rows[i // ro.group_size]
            table["prompt"].append(row["prompt"])
            table["source"].append(row["source"])
            table["completion"].append(text)
            table["reward"].append(float(ro.rewards[i]))
            table["advantage"].append(float(ro.advantages[i]))
            table["kept"].append(i // ro.group_size in ro.kept_groups)
            for name in names:
                table[f"reward/{name}"].append(ro.per_reward[name][i])
    return table


def train_step(
    step: int,
    model,
    ref_model,
    tokenizer,
    rows: list[dict],
    sampler: PromptSampler,
    cfg: GRPOConfig,
    opt,
    executor,
    gen,
    model_cfg: ModelConfig | None = None,
    seeds: torch.Generator | None = None,
):
    """One GRPO step (points 1-4 of the module docstring). Returns (metrics, the curriculum
    probabilities this step drew with, (kept, seen) rollouts). ``model_cfg``: rendering and stops.
    ``seeds``: ``grpo.prompt_seeds``'s shared stream (rollout.py). Over N ranks every rank updates
    when any rank kept a group."""
    t_step = time.perf_counter()
    lr = lr_at(step, cfg)
    for group in opt.param_groups:
        group["lr"] = lr
    curriculum = curriculum_metrics(sampler)
    kept, seen, metrics = collect(
        model, tokenizer, lambda k: [rows[i] for i in sampler.sample(k)], cfg, executor, gen, model_cfg, seeds
    )
    many = distributed.world_size() > 1
    # No informative group anywhere: nothing to learn. Over N ranks, one that kept none still updates.
    if (distributed.all_reduce_max(len(kept)) > 0) if many else kept:
        metrics.update(update(model, ref_model, kept, cfg, opt, filler=seen[0] if many else None))
    stats = merged_stats(seen)
    if isinstance(sampler, ShardedSampler):  # round by round over the ranks, as one process would see it
        sampler.update_rounds([ro.prompt_stats() for ro in seen])
    else:
        sampler.update(stats)  # the trainer is the only caller of update; evaluation never is
    by_source = per_source_means(np.array(stats["accuracy"]), np.array([r["source"] for r in stats["rows"]]))
    metrics.update({f"accuracy/{s}": v for s, v in by_source.items()})
    metrics.update(curriculum, lr=lr, **{"time/step_s": time.perf_counter() - t_step})
    return metrics, curriculum, (kept, seen)
