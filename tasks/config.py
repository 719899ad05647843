"""Typed configuration: one pydantic model per stage, loaded from ``params.yaml``.

``params.yaml`` is the single source of configuration; DVC tracks each stage's section so a
changed value re-runs exactly the stages that read it. Every model forbids unknown keys, so a
typo is an error rather than a silently ignored setting, and every error names the dotted key
(``grpo.lr``) and what was wrong. ``load_params`` validates the whole file before any stage
writes anything.

Overrides use ``key.path=value`` with a YAML-parsed value, the same syntax as
``dvc exp run -S``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.paths import OutDir

PARAMS_FILE = Path("params.yaml")

# The reasoning format every stage shares: <think>...</think><answer>...</answer>.
THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"

# Families of the synthetic suite, easiest first (see tasks/data/synthetic.py).
SYNTHETIC_FAMILIES = ("add_1d", "add_2d", "sub_2d", "add_3d", "mul_1x2", "mul_2x2", "add_4d")


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- curate
class SyntheticSource(Strict):
    """Seeded arithmetic problems with a column-wise worked solution."""

    kind: Literal["synthetic"] = "synthetic"
    families: list[Literal[SYNTHETIC_FAMILIES]] = Field(default_factory=lambda: ["add_2d", "sub_2d", "add_3d", "mul_1x2", "add_4d", "mul_2x2"], min_length=1)
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


class Limits(Strict):
    """Bounds the data gate (Great Expectations) enforces on every split."""

    min_prompt_chars: int = Field(3, ge=1)
    max_prompt_chars: int = Field(2048, ge=1)
    max_answer_chars: int = Field(64, ge=1)


class CurateConfig(Strict):
    seed: int = 0
    sources: list[Source] = Field(default_factory=lambda: [SyntheticSource()], min_length=1)
    limits: Limits = Limits()
    out_dir: OutDir = "data/curated"


# ----------------------------------------------------------------------------- model
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


# ----------------------------------------------------------------------------- scale-out
class LoraConfig(Strict):
    """Low-rank adapters (peft) instead of full fine-tuning; see tasks/lora.py."""

    enabled: bool = False
    r: int = Field(8, ge=1, description="adapter rank")
    alpha: int = Field(16, ge=1, description="scaling numerator: the update is (alpha / r) * B @ A")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1)


class ScaleConfig(Strict):
    """Processes and engine of one training stage; see tasks/distributed.py."""

    num_processes: int = Field(1, ge=1, description="> 1 relaunches the stage under `launcher`")
    launcher: Literal["torchrun", "deepspeed"] = "torchrun"
    deepspeed_config: str | None = Field(None, description="e.g. infra/deepspeed/zero2.json; None = DDP")
    mixed_precision: Literal["no", "bf16"] = Field("no", description="bf16 sets DeepSpeed's bf16 section")

    @model_validator(mode="after")
    def _precision(self) -> ScaleConfig:
        if self.mixed_precision != "no" and self.deepspeed_config is None:
            raise ValueError("mixed_precision: bf16 needs deepspeed_config (the DDP path trains in fp32)")
        return self


# ----------------------------------------------------------------------------- sft
class SFTConfig(Strict):
    seed: int = 0
    steps: int = Field(300, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0, le=1)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(256, ge=8)
    log_every: int = Field(10, ge=1)
    save_every: int = Field(200, ge=1, description="steps between checkpoints (a rerun resumes from the last)")
    out_dir: OutDir = "models/sft"
    lora: LoraConfig = LoraConfig()
    scale: ScaleConfig = ScaleConfig()


# ----------------------------------------------------------------------------- grpo
class CurriculumConfig(Strict):
    """Settings of the prompt samplers (``grpo.sampler``); see tasks/grpo/sampler.py."""

    # dump: UCB over each source's mean |advantage| (DUMP)
    window: int = Field(300, ge=1, description="dump: rollouts per source in the sliding window")
    c: float = Field(1.0, ge=0, description="dump: exploration coefficient of the UCB bonus")
    tau: float = Field(0.1, gt=0, description="dump: softmax temperature over UCB scores")
    # prioritized: p proportional to 1 - running success rate (Kimi k1.5)
    level: Literal["source", "prompt"] = Field("source", description="prioritized: rate per source or per prompt")
    ema: float = Field(0.9, ge=0, lt=1, description="prioritized: decay of the running success rate")
    min_prob: float = Field(0.02, ge=0, lt=1, description="prioritized: floor on each arm's weight share")
    # static: easy -> hard
    order: list[str] | None = Field(None, description="static: sources easiest first (default: by difficulty)")
    stage_steps: int = Field(50, ge=1, description="static: steps before the next source joins the pool")


class GRPOConfig(Strict):
    seed: int = 0
    steps: int = Field(300, ge=1)
    prompts_per_step: int = Field(8, ge=1)
    group_size: int = Field(8, ge=2, description="completions per prompt (G); >= 2 for a group baseline")
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(1.0, gt=0)
    lr: float = Field(5e-5, gt=0, le=1)
    warmup_steps: int = Field(10, ge=0)
    lr_schedule: Literal["constant", "cosine", "linear"] = Field("constant", description="after warmup")
    max_grad_norm: float = Field(1.0, gt=0)
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimiser step (splits the prompts)")
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field("grpo", description="token aggregation")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="divide advantages by this std")
    epsilon: float = Field(0.2, gt=0, lt=1, description="PPO clip range (lower side; upper too unless epsilon_high)")
    epsilon_high: float | None = Field(None, gt=0, description="upper clip range (DAPO clip-higher); None = epsilon")
    num_iterations: int = Field(1, ge=1, description="updates per rollout batch (mu); >1 reuses rollouts")
    importance_sampling_level: Literal["token", "sequence"] = Field("token", description="sequence = GSPO")
    beta: float = Field(0.0, ge=0, description="KL coefficient; 0 loads no reference model")
    mask_truncated: bool = Field(False, description="drop completions that hit max_new_tokens from the loss")
    dynamic_sampling: bool = Field(False, description="DAPO: drop all-equal groups, sample more prompts")
    max_sampling_rounds: int = Field(3, ge=1, description="dynamic sampling: generation rounds per step at most")
    overlong_cache: int = Field(16, ge=0, description="length reward: soft-penalty zone before max_new_tokens")
    sampler: Literal["uniform", "dump", "prioritized", "static"] = "uniform"
    curriculum: CurriculumConfig = CurriculumConfig()
    rewards: dict[str, float] = Field(default_factory=lambda: {"accuracy": 1.0, "format": 0.1})
    reward_workers: int = Field(2, ge=1)
    reward_timeout_s: float = Field(5.0, gt=0)
    save_every: int = Field(100, ge=1)
    log_every: int = Field(5, ge=1)
    out_dir: OutDir = "models/grpo"
    lora: LoraConfig = LoraConfig()
    scale: ScaleConfig = ScaleConfig()

    @model_validator(mode="after")
    def _overlong(self) -> GRPOConfig:
        if "length" in self.rewards and self.overlong_cache > self.max_new_tokens:
            raise ValueError(
                f"overlong_cache ({self.overlong_cache}) must be <= max_new_tokens ({self.max_new_tokens}): "
                "the length reward's soft zone lies inside the generation budget"
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


# ----------------------------------------------------------------------------- evaluate
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


# ----------------------------------------------------------------------------- tracking
class TrackingConfig(Strict):
    uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking URI")
    experiment: str = "r1flow"
    registered_model: str = "r1flow-policy"


class Params(Strict):
    curate: CurateConfig = CurateConfig()
    model: ModelConfig = ModelConfig()
    sft: SFTConfig = SFTConfig()
    grpo: GRPOConfig = GRPOConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()


# ----------------------------------------------------------------------------- loading
def _format_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        # Drop discriminator tags (e.g. 'synthetic') pydantic inserts into union locations.
        loc = ".".join(str(p) for p in e["loc"] if p not in ("synthetic", "gsm8k"))
        # A whole section as "input" (from a cross-field check) is noise; quote only leaf values.
        got = "" if e["type"] == "missing" or isinstance(e.get("input"), dict) else f" (got {e.get('input')!r})"
        lines.append(f"{source}: {loc or '<root>'}: {e['msg']}{got}")
    return "\n".join(lines)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` entries (value parsed as YAML) in a nested dict copy."""
    out = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return out


def load_params(path: str | Path = PARAMS_FILE, overrides: list[str] | None = None) -> Params:
    """Read and validate the whole params file; raise ConfigError naming the bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is None or raw == {}:
        # Code defaults are not the committed settings: training on them silently is a wrong run.
        raise ConfigError(f"{path}: empty; it must hold the stage sections (see the committed params.yaml)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of stage sections")
    raw = apply_overrides(raw, overrides or [])
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_error(e, str(path))) from None


def stage_cli(doc: str, argv: list[str] | None, inputs: dict[str, str] | None = None):
    """The command line every stage shares: ``--params``, ``-S key=value`` and input paths.

    Returns ``(args, params)``. A bad params file, override or output folder (tasks/paths.py)
    prints the error (naming the key) and exits with status 2 before the stage reads or writes anything.
    """
    import argparse

    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    ap.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. grpo.lr=1e-5")
    for flag, default in (inputs or {}).items():
        ap.add_argument(f"--{flag}", default=default, help=f"default: {default}")
    args = ap.parse_args(argv)
    from tasks.paths import UnsafePath, check_out_dirs

    try:
        params = load_params(args.params, args.set)
        check_out_dirs(params, Path.cwd())  # on disk too (symlinks, foreign files), before any write
        return args, params
    except (ConfigError, UnsafePath) as e:
        print(f"config error:\n{e}", file=sys.stderr)
        raise SystemExit(2) from None
