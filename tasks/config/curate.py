"""``curate``: where the rows come from and the bounds the data gate enforces."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from tasks.config.base import Strict
from tasks.paths import OutDir

# Families of the synthetic suite, easiest first (see tasks/data/synthetic.py).
SyntheticFamily = Literal["add_1d", "add_2d", "sub_2d", "add_3d", "mul_1x2", "mul_2x2", "add_4d"]
SYNTHETIC_FAMILIES: tuple[str, ...] = get_args(SyntheticFamily)


def _default_families() -> list[SyntheticFamily]:
    return ["add_2d", "sub_2d", "add_3d", "mul_1x2", "add_4d", "mul_2x2"]


class SyntheticSource(Strict):
    """Seeded arithmetic problems with a column-wise worked solution."""

    kind: Literal["synthetic"] = "synthetic"
    families: list[SyntheticFamily] = Field(default_factory=_default_families, min_length=1)
    sft_per_family: int = Field(60, ge=0, description="worked traces per family (the scarce cold start)")
    rl_per_family: int = Field(2000, ge=0, description="answer-only prompts per family for RL")
    eval_per_family: int = Field(100, ge=1, description="held-out prompts per family")


class Gsm8kSource(Strict):
    """GSM8K-format rows ({question, answer with '#### n'}) from a local file or a hub id."""

    kind: Literal["gsm8k"] = "gsm8k"
    path: str = Field(description="local .jsonl/.parquet file, or a hub dataset id such as openai/gsm8k")
    revision: str | None = Field(None, description="hub revision (commit or tag) when path is a hub id")
    split: str = "train"
    limit: int | None = Field(None, ge=1, description="read at most this many rows")
    sft_fraction: float = Field(0.1, ge=0, le=1)
    eval_fraction: float = Field(0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _fractions(self) -> Gsm8kSource:
        if self.sft_fraction + self.eval_fraction > 1:
            raise ValueError("sft_fraction + eval_fraction must be <= 1")
        return self


Source = Annotated[SyntheticSource | Gsm8kSource, Field(discriminator="kind")]


class GateBounds(Strict):
    """Bounds the data gate (Great Expectations) enforces on every split."""

    min_prompt_chars: int = Field(3, ge=1)
    max_prompt_chars: int = Field(2048, ge=1)
    max_answer_chars: int = Field(64, ge=1)


def _default_sources() -> list[Source]:
    return [SyntheticSource()]


class CurateConfig(Strict):
    seed: int = 0
    sources: list[Source] = Field(default_factory=_default_sources, min_length=1)
    limits: GateBounds = GateBounds()
    out_dir: OutDir = "data/curated"
