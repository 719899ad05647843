"""Settings the two training stages (``sft``, ``grpo``) share: optimiser schedule, LoRA, scale-out.

One set of schedule fields for both stages, read by the one schedule function
(``tasks.schedule.lr_at``): linear warmup over ``warmup_steps``, then ``lr_schedule`` decays the
rate from ``lr`` towards ``min_lr_ratio * lr`` at the last step (``constant`` stays at ``lr``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.config.base import Strict


class LoraConfig(Strict):
    """Low-rank adapters (peft) instead of full fine-tuning; see tasks/lora.py."""

    enabled: bool = False
    r: int = Field(8, ge=1, description="adapter rank")
    alpha: int = Field(16, ge=1, description="scaling numerator: the update is (alpha / r) * B @ A")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1
    )


class ScaleConfig(Strict):
    """Processes and engine of one training stage; see tasks/launch.py."""

    num_processes: int = Field(1, ge=1, description="> 1 relaunches the stage under `launcher`")
    launcher: Literal["torchrun", "deepspeed"] = "torchrun"
    deepspeed_config: str | None = Field(None, description="e.g. infra/deepspeed/zero2.json; None = DDP")
    mixed_precision: Literal["no", "bf16"] = Field("no", description="bf16 sets DeepSpeed's bf16 section")

    @model_validator(mode="after")
    def _precision(self) -> ScaleConfig:
        if self.mixed_precision != "no" and self.deepspeed_config is None:
            raise ValueError("mixed_precision: bf16 needs deepspeed_config (the DDP path trains in fp32)")
        return self


class TrainingConfig(Strict):
    """Fields of every training stage; each stage's config subclasses this and sets its defaults."""

    seed: int = 0
    steps: int = Field(300, ge=1, description="optimiser steps")
    lr: float = Field(3e-3, gt=0, le=1, description="peak learning rate")
    warmup_steps: int = Field(20, ge=0, description="linear warmup from lr / warmup_steps to lr")
    lr_schedule: Literal["constant", "cosine", "linear"] = Field("cosine", description="decay after warmup")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="the decay ends at min_lr_ratio * lr")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient-norm clipping")
    log_every: int = Field(10, ge=1, description="steps between logged metrics")
    lora: LoraConfig = LoraConfig()
    scale: ScaleConfig = ScaleConfig()
