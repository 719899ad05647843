"""GRPO rollouts: sample groups, score them in the reward executor, compute advantages, and
(DAPO's dynamic sampling) keep only groups that carry a learning signal.

Choices:

- The trainer's process only generates tokens and does arithmetic on scores; every reward runs
  in the executor's worker processes. Each completion is sent with its row plus the facts only
  the trainer knows (``completion_tokens``, ``max_completion_tokens``, ``overlong_cache``), which
  the ``length`` reward reads.
- Advantages are computed per generation round (``scale_rewards="batch"`` uses that round's std).
- Dynamic sampling: a group whose rewards are all equal has advantage 0 for every completion and
  adds nothing to the gradient. With ``dynamic_sampling`` on, such groups are dropped and another
  round of ``prompts_per_step`` prompts is drawn, up to ``max_sampling_rounds`` rounds; the step
  then trains on the informative groups it has (possibly fewer than ``prompts_per_step``; zero
  groups -> no update that step). Dropped groups still feed the prompt sampler: "all right" or
  "all wrong" is exactly what a curriculum needs to hear.
- Over N ranks each rank generates its slice of every round; which informative groups are kept is
  decided on the *global* round (the first ones in global order, as one process would keep), so
  every rank runs the same rounds and the kept set is one process's (``global_take``).
- ``grpo.prompt_seeds``: each prompt's group is sampled from its own generator, seeded from one
  stream every rank draws alike, so the completions do not depend on the number of processes
  (N processes then train as one, up to floating-point order; a resume onto another world size
  stays exact). Off (default): one generator per rank, the draws of the default run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from tasks import distributed
from tasks.config.grpo import GRPOConfig
from tasks.config.model import ModelConfig
from tasks.generation import Samples, sample, stop_conditions
from tasks.grpo.loss import group_advantages
from tasks.models import render_prompt
from tasks.rewards import applicable_mean, combine, zero_if_none


@dataclass
class Rollout:
    """One round of ``P`` groups of ``G`` completions, laid out group by group."""

    rows: list[dict]  # P prompts
    samples: Samples  # P*G completions
    rewards: torch.Tensor  # [P*G] weighted sum of the configured rewards
    advantages: torch.Tensor  # [P*G]
    per_reward: dict[str, list[float | None]]  # each reward's raw score per completion
    group_size: int
    metrics: dict[str, float] = field(default_factory=dict)
    kept_groups: list[int] = field(default_factory=list)  # which of this round's groups were trained on

    @property
    def n_groups(self) -> int:
        return len(self.rows)

    def informative(self) -> list[int]:
        """Indices of groups whose rewards are not all equal."""
        r = self.rewards.view(-1, self.group_size)
        return [i for i in range(len(self.rows)) if float(r[i].max()) != float(r[i].min())]

    def groups(self, keep: list[int]) -> Rollout:
        """The sub-rollout of groups ``keep`` (advantages stay as computed on the whole round)."""
        g = self.group_size
        idx = [i * g + j for i in keep for j in range(g)]
        t = torch.tensor(idx, dtype=torch.long)
        return Rollout(
            [self.rows[i] for i in keep],
            self.samples.select(idx),
            self.rewards[t],
            self.advantages[t],
            {k: [v[i] for i in idx] for k, v in self.per_reward.items()},
            g,
            dict(self.metrics),
        )

    def prompt_stats(self) -> dict:
        """Per-prompt statistics for the curriculum sampler: exactly the keys samplers read
        (``rows``, group mean ``accuracy``, ``advantages``; see tasks/grpo/sampler.py)."""
        acc = torch.tensor(self.accuracy(), dtype=torch.float32).view(-1, self.group_size)
        return {"rows": self.rows, "accuracy": acc.mean(1).tolist(), "advantages": self.advantages.tolist()}

    def accuracy(self) -> list[float]:
        """Each completion's verified success: the accuracy reward, or on rows it does not apply to
        (code rows) the code reward; 0 where neither applies or is configured."""
        none: list[float | None] = [None] * len(self.rewards)
        acc = self.per_reward.get("accuracy", none)
        code = self.per_reward.get("code_binary", self.per_reward.get("code", none))
        return zero_if_none([a if a is not None else c for a, c in zip(acc, code)])


def generate_and_score(
    model, tokenizer, rows: list[dict], cfg: GRPOConfig, executor, gen, model_cfg: ModelConfig | None = None
) -> Rollout:
    """Sample ``group_size`` completions per row, score them, and compute group advantages.
    ``model_cfg`` gives the prompt rendering and stop strings (the same as SFT's and evaluation's)."""
    t0 = time.perf_counter()
    model_cfg = model_cfg or ModelConfig()
    prompts = [render_prompt(tokenizer, r["prompt"], model_cfg.prompt) for r in rows]
    stops = stop_conditions(model, tokenizer, model_cfg.stop_strings)
    samples = sample(
        model,
        tokenizer,
        prompts,
        cfg.group_size,
        cfg.max_new_tokens,
        cfg.temperature,
        generator=gen,
        stops=stops,
    )
    t_gen = time.perf_counter() - t0

    n_tokens = samples.completion_mask.sum(1).tolist()
    per_completion = [
        {
            **row,
            "completion_tokens": int(n),
            "max_completion_tokens": cfg.max_new_tokens,
            "overlong_cache": cfg.overlong_cache,
        }
        for row, n in zip([r for r in rows for _ in range(cfg.group_size)], n_tokens)
    ]
    scored = executor.score(samples.texts, per_completion, list(cfg.rewards))
    rewards = torch.tensor(combine(scored.per_reward, cfg.rewards), dtype=torch.float32)
    adv = group_advantages(rewards, cfg.group_size, cfg.scale_rewards)
    metrics = {
        "time/generate_s": t_gen,
        "time/reward_s": scored.wall_s,
        **scored.counts(),  # each reward's mean is taken over the whole step in ``collect``
    }
    return Rollout(rows, samples, rewards, adv, scored.per_reward, cfg.group_size, metrics)


def prompt_generators(seeds: torch.Generator, want: int, device) -> list[torch.Generator]:
    """One generator per prompt of a global round of ``want``; this rank's slice (as its prompts)."""
    drawn = torch.randint(2**62, (want,), generator=seeds).tolist()
    return [
        torch.Generator(device=device).manual_seed(s)
        for s in distributed.shard(drawn, distributed.rank(), distributed.world_size())
    ]


def global_take(n_groups: int, good: list[int], need: int) -> tuple[list[int], int, int]:
    """The first ``need`` informative groups of the global round, in rank order: ``(this rank's
    share, groups taken over all ranks, groups dropped over all ranks)``."""
    mine: list[int] = []
    taken = dropped = 0
    for r, (n, g) in enumerate(distributed.gather_objects((n_groups, good))):
        take = g[: max(0, need - taken)]
        mine = take if r == distributed.rank() else mine
        taken, dropped = taken + len(take), dropped + n - len(g)
    return mine, taken, dropped


def collect(
    model,
    tokenizer,
    draw,
    cfg: GRPOConfig,
    executor,
    gen,
    model_cfg: ModelConfig | None = None,
    seeds: torch.Generator | None = None,
) -> tuple[list[Rollout], list[Rollout], dict]:
    """Rollouts for one step: ``(kept, seen, metrics)``.

    ``draw(k)`` returns ``k`` rows (from the prompt sampler). Without dynamic sampling one round is
    drawn and kept whole. With it, informative groups are kept until ``prompts_per_step`` are in
    hand or ``max_sampling_rounds`` rounds have run. ``seen`` holds every round, for the sampler.
    """
    want = cfg.prompts_per_step
    rounds = cfg.max_sampling_rounds if cfg.dynamic_sampling else 1
    kept: list[Rollout] = []
    seen: list[Rollout] = []
    n_kept = dropped = 0
    for _ in range(rounds):
        batch = draw(want)
        g = gen if seeds is None else prompt_generators(seeds, want, gen.device)
        ro = generate_and_score(model, tokenizer, batch, cfg, executor, g)
        seen.append(ro)
        if not cfg.dynamic_sampling:
            ro.kept_groups = list(range(ro.n_groups))
            kept.append(ro)
            n_kept = ro.n_groups
            break
        take, taken, lost = global_take(ro.n_groups, ro.informative(), want - n_kept)
        dropped += lost
        ro.kept_groups = take
        if take:
            kept.append(ro.groups(take))
        n_kept += taken
        if n_kept >= want:
            break
    metrics = {
        "sampling/rounds": len(seen),
        "sampling/dropped_groups": dropped,
        "sampling/kept_groups": n_kept,
        "zero_std_groups": sum(ro.n_groups - len(ro.informative()) for ro in seen)
        / sum(ro.n_groups for ro in seen),
    }
    for key in seen[0].metrics:  # times and counts add up over the rounds
        metrics[key] = sum(ro.metrics.get(key, 0.0) for ro in seen)
    for name in seen[0].per_reward:  # each reward's mean over every scored completion of the step
        metrics[f"reward/{name}"] = applicable_mean([v for ro in seen for v in ro.per_reward[name]])
    all_rewards = torch.cat([ro.rewards for ro in seen])
    acc = [a for ro in seen for a in ro.accuracy()]
    metrics.update(
        reward_mean=all_rewards.mean().item(),
        reward_std=all_rewards.std(unbiased=False).item(),
        accuracy=sum(acc) / len(acc),
    )
    return kept, seen, metrics


def merged_stats(rollouts: list[Rollout]) -> dict:
    """Concatenate the per-prompt statistics of several rounds (one sampler update per step)."""
    out: dict = {"rows": [], "accuracy": [], "advantages": []}
    for ro in rollouts:
        for k, v in ro.prompt_stats().items():
            out[k] += v
    return out
