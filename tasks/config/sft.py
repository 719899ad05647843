"""``sft``: the cold-start fine-tuning stage (tasks/stages/sft.py)."""

from __future__ import annotations

from pydantic import Field, model_validator

from tasks.config.training import TrainingConfig
from tasks.paths import OutDir


class SFTConfig(TrainingConfig):
    batch_size: int = Field(32, ge=1, description="traces per optimiser step (the global batch)")
    weight_decay: float = Field(0.0, ge=0)
    max_length: int = Field(256, ge=8, description="tokens per trace (prompt + completion); longer is cut")
    drop_truncated: bool = Field(False, description="drop traces longer than max_length (else cut them)")
    save_every: int = Field(200, ge=1, description="steps between checkpoints (a rerun resumes from the last)")
    out_dir: OutDir = "models/sft"

    @model_validator(mode="after")
    def _ranks_get_rows(self) -> SFTConfig:
        if self.batch_size < self.scale.num_processes:
            raise ValueError(
                f"batch_size ({self.batch_size}) < scale.num_processes ({self.scale.num_processes}): "
                "a process would get no rows"
            )
        return self
