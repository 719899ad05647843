"""``evaluate``: the held-out evaluation of every model and the registry gate (tasks/stages/evaluate.py)."""

from __future__ import annotations

from pydantic import Field, model_validator

from tasks.config.base import Strict


class EvaluateConfig(Strict):
    seed: int = 0
    models: list[str] = Field(default_factory=lambda: ["base", "sft", "grpo"], min_length=1)
    n_samples: int = Field(8, ge=1, description="samples per prompt for pass@k")
    ks: list[int] = Field(default_factory=lambda: [1, 4, 8], min_length=1)
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(256, ge=1)
    bootstrap_samples: int = Field(2000, ge=100)
    reward_workers: int = Field(2, ge=1, description="verification worker processes")
    reward_timeout_s: float = Field(5.0, gt=0, description="per-completion verification timeout")
    register_model: bool = Field(True, description="log and register the GRPO model in MLflow")

    @model_validator(mode="after")
    def _ks(self) -> EvaluateConfig:
        if max(self.ks) > self.n_samples:
            raise ValueError(f"ks: every k must be <= n_samples ({self.n_samples}), got {self.ks}")
        return self
