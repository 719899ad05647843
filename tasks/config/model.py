"""``model``: the base model, a hub id / local path or the embedded tiny Qwen2."""

from __future__ import annotations

from pydantic import Field, model_validator

from tasks.config.base import Strict
from tasks.paths import OutDir


class TinyModel(Strict):
    """The embedded default: a Qwen2 causal LM built from a config (no download)."""

    hidden_size: int = Field(128, ge=8)
    num_hidden_layers: int = Field(4, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(512, ge=8)
    max_position_embeddings: int = Field(256, ge=16)

    @model_validator(mode="after")
    def _heads(self) -> TinyModel:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        return self


class ModelConfig(Strict):
    name_or_path: str = Field("tiny", description="'tiny' builds the embedded model; else a hub id or local path")
    revision: str | None = None
    seed: int = 0
    tiny: TinyModel = TinyModel()
    out_dir: OutDir = "models/base"
