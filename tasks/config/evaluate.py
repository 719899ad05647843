"""``evaluate``: the eval sets, the harness settings and the registry gate (tasks/stages/evaluate.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.config.base import Strict
from tasks.config.curate import ColumnMap


class EvalSet(Strict):
    """A benchmark file or hub dataset evaluated beside the held-out split (tasks/evaluation/benchmarks)."""

    kind: Literal["gsm8k", "math", "numina", "mbpp", "aime", "columns"]
    path: str = Field(description="local .jsonl/.parquet/.csv, a dataset directory, or a hub dataset id")
    name: str | None = Field(None, min_length=1, description="the rows' source label (default: the kind)")
    revision: str | None = Field(
        None, description="hub revision; required for a hub id (pinned, resolved to a sha)"
    )
    subset: str | None = None
    split: str = "test"
    limit: int | None = Field(None, ge=1, description="read at most this many records")
    columns: ColumnMap | None = Field(
        None, description="field map for kind 'columns' (aime: problem/answer/id)"
    )

    @model_validator(mode="after")
    def _columns(self) -> EvalSet:
        if self.kind == "columns" and self.columns is None:
            raise ValueError("columns: kind 'columns' needs a column map")
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind


class GateConfig(Strict):
    """Promotion to ``champion``: the challenger's greedy accuracy minus the incumbent's, on the same
    items under the same spec, must have its paired 95% CI lower bound above ``margin``."""

    margin: float = Field(0.0, ge=0, description="required improvement (accuracy points, 0.01 = 1 point)")
    compare_champion: bool = Field(True, description="evaluate the current champion in the same run")


class EvaluateConfig(Strict):
    seed: int = 0
    models: list[str] = Field(default_factory=lambda: ["base", "sft", "grpo"], min_length=1)
    n_samples: int = Field(8, ge=1, description="samples per prompt for mean@n, pass@k, maj@k")
    ks: list[int] = Field(default_factory=lambda: [1, 4, 8], min_length=1)
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(256, ge=1)
    engine: Literal["auto", "hf", "lean"] = Field("auto", description="decode path (tasks/generation.py)")
    bootstrap_samples: int = Field(2000, ge=100)
    reward_workers: int = Field(2, ge=1, description="verification worker processes")
    reward_timeout_s: float = Field(5.0, gt=0, description="per-completion verification timeout")
    heldout: bool = Field(True, description="evaluate on the curated held-out split")
    benchmarks: list[EvalSet] = Field(default_factory=list)
    samples_dir: str = Field(
        "reports/samples", description="per-sample outputs, one jsonl per model (under reports/)"
    )
    register_model: bool = Field(True, description="log and register the GRPO model in MLflow")
    gate: GateConfig = GateConfig()

    @model_validator(mode="after")
    def _ks(self) -> EvaluateConfig:
        if max(self.ks) > self.n_samples:
            raise ValueError(f"ks: every k must be <= n_samples ({self.n_samples}), got {self.ks}")
        parts = self.samples_dir.replace("\\", "/").split("/")
        if parts[0] != "reports" or len(parts) < 2 or not parts[1] or ".." in parts:
            # the stage empties this folder before writing: it must be an output folder under reports/
            raise ValueError(f"samples_dir: must be a folder under reports/, got {self.samples_dir!r}")
        if not self.heldout and not self.benchmarks:
            raise ValueError("heldout is false and no benchmarks are given: nothing to evaluate")
        return self
