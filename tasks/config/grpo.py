"""``grpo``: the RL stage (tasks/stages/grpo.py) and its prompt curriculum (tasks/grpo/sampler.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.config.base import Strict
from tasks.config.training import TrainingConfig
from tasks.paths import OutDir


class CurriculumConfig(Strict):
    """Settings of the prompt samplers (``grpo.sampler``); see tasks/grpo/sampler.py."""

    # dump: UCB over each source's mean |advantage| (DUMP)
    window: int = Field(300, ge=1, description="dump: rollouts per source in the sliding window")
    c: float = Field(1.0, ge=0, description="dump: exploration coefficient of the UCB bonus")
    tau: float = Field(0.1, gt=0, description="dump: softmax temperature over UCB scores")
    # prioritized: p proportional to 1 - running success rate (Kimi k1.5)
    level: Literal["source", "prompt"] = Field(
        "source", description="prioritized: rate per source or per prompt"
    )
    ema: float = Field(0.9, ge=0, lt=1, description="prioritized: decay of the running success rate")
    min_prob: float = Field(0.02, ge=0, lt=1, description="prioritized: floor on each arm's weight share")
    # static: easy -> hard
    order: list[str] | None = Field(
        None, description="static: sources easiest first (default: by difficulty)"
    )
    stage_steps: int = Field(50, ge=1, description="static: steps before the next source joins the pool")
    count: Literal["prompts", "rollouts"] = Field(
        "prompts", description="dump: UCB visits n_j and N counted in prompts (groups) or rollouts (DUMP)"
    )


class OnlineConfig(Strict):
    """The online per-prompt difficulty model (``grpo.online``); see tasks/grpo/online.py."""

    enabled: bool = Field(False, description="skip prompts predicted to give an all-equal group")
    explore: float = Field(
        0.05, gt=0, le=1, description="share of batch slots that take the first proposal, unfiltered"
    )
    proposals: int = Field(4, ge=1, description="rows proposed per batch slot; the most informative wins")
    prior_strength: float = Field(
        4.0, gt=0, description="pseudo-counts of a prompt's prior (its pass_rate, else its source's)"
    )
    decay: float = Field(0.9, gt=0, le=1, description="discount of older outcomes (per update / per revisit)")


class GRPOConfig(TrainingConfig):
    # Schedule defaults differ from SFT's: RL wants a rate ~50x lower, held constant after warmup.
    lr: float = Field(5e-5, gt=0, le=1, description="peak learning rate")
    warmup_steps: int = Field(10, ge=0, description="linear warmup from lr / warmup_steps to lr")
    lr_schedule: Literal["constant", "cosine", "linear"] = Field("constant", description="decay after warmup")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="the decay ends at min_lr_ratio * lr")
    log_every: int = Field(5, ge=1, description="steps between logged metrics (the curriculum: every step)")

    prompts_per_step: int = Field(8, ge=1)
    group_size: int = Field(8, ge=2, description="completions per prompt (G); >= 2 for a group baseline")
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(1.0, gt=0)
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimiser step (splits the prompts)")
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field("grpo", description="token aggregation")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="divide advantages by this std"
    )
    epsilon: float = Field(
        0.2, gt=0, lt=1, description="PPO clip range (lower side; upper too unless epsilon_high)"
    )
    epsilon_high: float | None = Field(
        None, gt=0, description="upper clip range (DAPO clip-higher); None = epsilon"
    )
    num_iterations: int = Field(1, ge=1, description="updates per rollout batch (mu); >1 reuses rollouts")
    importance_sampling_level: Literal["token", "sequence"] = Field("token", description="sequence = GSPO")
    beta: float = Field(0.0, ge=0, description="KL coefficient; 0 loads no reference model")
    mask_truncated: bool = Field(False, description="drop completions that hit max_new_tokens from the loss")
    dynamic_sampling: bool = Field(False, description="DAPO: drop all-equal groups, sample more prompts")
    max_sampling_rounds: int = Field(
        3, ge=1, description="dynamic sampling: generation rounds per step at most"
    )
    overlong_cache: int = Field(
        16, ge=0, description="length reward: soft-penalty zone before max_new_tokens"
    )
    sampler: Literal["uniform", "dump", "prioritized", "static"] = "uniform"
    curriculum: CurriculumConfig = CurriculumConfig()
    online: OnlineConfig = OnlineConfig()
    rewards: dict[str, float] = Field(default_factory=lambda: {"accuracy": 1.0, "format": 0.1})
    reward_workers: int = Field(2, ge=1)
    reward_timeout_s: float = Field(5.0, gt=0)
    save_every: int = Field(100, ge=1)
    eval_every: int = Field(
        0, ge=0, description="greedy accuracy on a fixed held-out subset every N steps (0 = off)"
    )
    eval_items: int = Field(64, ge=1, description="size of that fixed subset (spread evenly over sources)")
    prompt_seeds: bool = Field(
        False, description="a seed per prompt: completions independent of num_processes"
    )
    out_dir: OutDir = "models/grpo"

    @model_validator(mode="after")
    def _overlong(self) -> GRPOConfig:
        if "length" in self.rewards and self.overlong_cache > self.max_new_tokens:
            raise ValueError(
                f"overlong_cache ({self.overlong_cache}) must be <= max_new_tokens ({self.max_new_tokens}): "
                "the length reward's soft zone lies inside the generation budget"
            )
        return self

    @model_validator(mode="after")
    def _ranks_get_prompts(self) -> GRPOConfig:
        n = self.scale.num_processes
        if self.prompts_per_step < n:
            raise ValueError(
                f"prompts_per_step ({self.prompts_per_step}) < scale.num_processes ({n}): "
                "a process would get no prompt"
            )
        return self

    @model_validator(mode="after")
    def _online_per_source(self) -> GRPOConfig:
        if self.online.enabled and self.sampler == "prioritized" and self.curriculum.level == "prompt":
            raise ValueError(
                "online.enabled with sampler prioritized at curriculum.level 'prompt': both pick prompts; "
                "use level 'source' (the curriculum picks the source, the online model the prompt)"
            )
        return self

    @field_validator("rewards")
    @classmethod
    def _rewards(cls, rewards: dict[str, float]) -> dict[str, float]:
        from tasks.rewards import REWARDS  # the registry is the list of valid names

        unknown = sorted(set(rewards) - set(REWARDS))
        if unknown:
            raise ValueError(f"unknown reward {unknown[0]!r}; known: {sorted(REWARDS)}")
        if not rewards:
            raise ValueError("at least one reward is required")
        return rewards
