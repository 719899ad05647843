"""``curate``: where the rows come from, how they are cleaned, and the bounds the data gate enforces.

Sources are a list; each entry's ``kind`` names its adapter (``tasks/data/adapters.py``). A file
source's ``path`` is a local ``.jsonl`` / ``.parquet`` / ``.csv`` file, a local dataset directory, or
a hub dataset id; a hub ``revision`` is resolved to a commit sha by the ``sources`` stage
(``tasks/data/fingerprint.py``) and loaded at that sha, so the data DVC saw is the data curated.
"""

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

    def labels(self) -> set[str]:
        return set(self.families)


class FileSource(Strict):
    """What every file/hub source shares: where the rows are, how many, and how they split."""

    name: str | None = Field(None, min_length=1, description="the rows' `source` label (default: the kind)")
    path: str = Field(description="local .jsonl/.parquet/.csv file, a dataset directory, or a hub dataset id")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit); resolved to a sha")
    subset: str | None = Field(None, description="hub dataset config name (e.g. 'main' for openai/gsm8k)")
    split: str = "train"
    limit: int | None = Field(None, ge=1, description="read at most this many records")
    weight: float = Field(1.0, gt=0, le=1, description="mixture weight: keep this hash-chosen share of rows")
    sft_fraction: float = Field(0.1, ge=0, le=1)
    eval_fraction: float = Field(0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _fractions(self):
        if self.sft_fraction + self.eval_fraction > 1:
            raise ValueError("sft_fraction + eval_fraction must be <= 1")
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind  # type: ignore[attr-defined]

    def labels(self) -> set[str]:
        return {self.label}


class Gsm8kSource(FileSource):
    """GSM8K-format rows ({question, answer ending in '#### n'})."""

    kind: Literal["gsm8k"] = "gsm8k"


class MathSource(FileSource):
    """MATH-format rows ({problem, solution with \\boxed{...}, level, type})."""

    kind: Literal["math"] = "math"


class NuminaSource(FileSource):
    """NuminaMath-style rows ({problem, solution, optional answer})."""

    kind: Literal["numina"] = "numina"


class MbppSource(FileSource):
    """MBPP-format code rows ({task_id, text, code, test_list, test_setup_code})."""

    kind: Literal["mbpp"] = "mbpp"
    # Code rows go to RL: they have no worked trace for the cold start, and the evaluate stage
    # scores answers (accuracy), not programs.
    sft_fraction: float = Field(0.0, ge=0, le=1)
    eval_fraction: float = Field(0.0, ge=0, le=1)


class StdioSource(FileSource):
    """Code tasks judged on stdin/stdout: {prompt, tests: [{input, output}], optional solution, id}."""

    kind: Literal["stdio"] = "stdio"
    sft_fraction: float = Field(0.0, ge=0, le=1)
    eval_fraction: float = Field(0.0, ge=0, le=1)


class ColumnMap(Strict):
    """Which field of a record holds each part of a row (None: the record has none)."""

    prompt: str
    answer: str | None = None
    solution: str | None = Field(None, description="a worked solution (math) or reference program (code)")
    id: str | None = None
    tests: str | None = Field(
        None, description="code tests: a list (or JSON string) of {input,output}/{assert}"
    )
    difficulty: str | None = None

    @model_validator(mode="after")
    def _gold(self):
        if self.answer is None and self.tests is None:
            raise ValueError("columns: map 'answer' (math rows) or 'tests' (code rows)")
        return self


class ColumnsSource(FileSource):
    """Any table: ``columns`` maps its field names onto the row schema."""

    kind: Literal["columns"] = "columns"
    columns: ColumnMap


Source = Annotated[
    SyntheticSource | Gsm8kSource | MathSource | NuminaSource | MbppSource | StdioSource | ColumnsSource,
    Field(discriminator="kind"),
]
SOURCE_KINDS = ("synthetic", "gsm8k", "math", "numina", "mbpp", "stdio", "columns")


class GateBounds(Strict):
    """Row bounds. Rows outside them are dropped and counted before the gate, which re-checks them."""

    min_prompt_chars: int = Field(3, ge=1)
    max_prompt_chars: int = Field(2048, ge=1)
    max_answer_chars: int = Field(64, ge=1)
    tokenizer: str | None = Field(
        None, description="tokenizer for token limits: 'tiny', a local path or hub id"
    )
    max_prompt_tokens: int | None = Field(None, ge=1, description="None: no token limit")
    max_solution_tokens: int | None = Field(None, ge=1, description="None: no token limit")

    @model_validator(mode="after")
    def _tokens(self):
        if (self.max_prompt_tokens or self.max_solution_tokens) and not self.tokenizer:
            raise ValueError("max_prompt_tokens / max_solution_tokens need limits.tokenizer")
        return self


class NearDupConfig(Strict):
    """MinHash LSH near-duplicate removal (tasks/data/neardup.py)."""

    enabled: bool = True
    threshold: float = Field(0.8, gt=0, lt=1, description="estimated Jaccard at or above which rows collide")
    shingle: int = Field(5, ge=1, description="words per shingle")
    num_perm: int = Field(128, ge=16, description="MinHash permutations")
    min_words: int = Field(8, ge=1, description="shorter prompts are left to exact dedup")


class Benchmark(Strict):
    """A benchmark file to keep out of training (its prompts never enter sft/rl)."""

    path: str
    field: str | None = Field(None, description="the prompt field (default: problem/question/prompt/text)")
    name: str | None = None


class DecontamConfig(Strict):
    ngram: int = Field(13, ge=3, description="word n-gram length")
    min_chars: int = Field(50, ge=1, description="shorter prompts are compared by exact match only")
    benchmarks: list[Benchmark] = Field(default_factory=list)


class VerifyConfig(Strict):
    """Drop rows whose gold cannot be checked (tasks/data/verify.py)."""

    math: bool = Field(True, description="gold answers of real math sources must parse with math-verify")
    code: bool = Field(
        True, description="code rows' reference solutions must pass their tests in the sandbox"
    )
    workers: int = Field(2, ge=1)
    timeout_s: float = Field(10.0, gt=0)


class DifficultyConfig(Strict):
    """Pass-rate estimation under a model (tasks/data/difficulty.py); off by default."""

    enabled: bool = False
    model: str | None = Field(None, description="local model dir or hub id to sample from (outside this DAG)")
    k: int = Field(4, ge=1, description="samples per prompt")
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(1.0, gt=0)
    batch_size: int = Field(16, ge=1, description="prompts per sampling call")
    splits: list[Literal["sft", "rl", "eval"]] = Field(default_factory=lambda: ["rl"])
    band: tuple[float, float] | None = Field(None, description="keep rows with lo < pass_rate < hi")
    workers: int = Field(2, ge=1)
    timeout_s: float = Field(10.0, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _band(self):
        if self.band is not None and not 0 <= self.band[0] < self.band[1] <= 1:
            raise ValueError("band must be [lo, hi] with 0 <= lo < hi <= 1")
        if self.enabled and not self.model:
            raise ValueError("difficulty.enabled needs difficulty.model (a model dir or hub id)")
        return self


def _default_sources() -> list[Source]:
    return [SyntheticSource()]


class CurateConfig(Strict):
    seed: int = 0
    sources: list[Source] = Field(default_factory=_default_sources, min_length=1)
    limits: GateBounds = GateBounds()
    near_dup: NearDupConfig = NearDupConfig()
    decontam: DecontamConfig = DecontamConfig()
    verify: VerifyConfig = VerifyConfig()
    difficulty: DifficultyConfig = DifficultyConfig()
    data_docs: bool = Field(True, description="render GX Data Docs (HTML) of the gate, logged to MLflow")
    fingerprint: str = Field("data/sources.json", description="written by the `sources` stage")
    out_dir: OutDir = "data/curated"

    @model_validator(mode="after")
    def _unique_labels(self):
        seen: set[str] = set()
        for i, spec in enumerate(self.sources):
            clash = seen & spec.labels()
            if clash and not isinstance(spec, SyntheticSource):
                raise ValueError(f"sources.{i}: source name {sorted(clash)[0]!r} is used twice; set `name`")
            seen |= spec.labels()
        return self
