"""``model``: the base model, a hub id / local path or the embedded tiny Qwen2."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

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


SYSTEM_PROMPT = (
    "Think step by step inside <think></think>, then give only the final answer inside <answer></answer>."
)


class PromptConfig(Strict):
    """How a problem becomes the model's input text (tasks/models.py: render_prompt)."""

    format: Literal["auto", "chat", "chat_no_system", "chat_fold_system", "plain"] = Field(
        "auto",
        description="auto: chat (folding the system turn if the template has no system role) "
        "when the tokenizer has a chat template, else plain",
    )
    system_prompt: str = SYSTEM_PROMPT
    plain_template: str = Field(
        "{prompt}", description="plain format: may use {system} and must use {prompt}"
    )

    @field_validator("plain_template")
    @classmethod
    def _plain(cls, t: str) -> str:
        if "{prompt}" not in t:
            raise ValueError("must contain {prompt}")
        try:
            t.format(prompt="", system="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"only {{prompt}} and {{system}} may appear in braces ({e})") from None
        return t


class ModelConfig(Strict):
    name_or_path: str = Field(
        "tiny", description="'tiny' builds the embedded model; else a hub id or local path"
    )
    revision: str | None = None
    seed: int = 0
    tiny: TinyModel = TinyModel()
    out_dir: OutDir = "models/base"
    # dvc.yaml hashes this path as an input of `base`; a local model folder must be named here too
    watch: str = Field("tasks/models.py", description="path DVC watches for base: the local model folder")
    prompt: PromptConfig = PromptConfig()
    stop_strings: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="extra stops besides every eos id"
    )
