"""The typed form of a pipeline run: the settings a person changes most, as the Prefect UI shows them.

:class:`RunSettings` has one group per ``params.yaml`` section (``model``, ``curate``, ``sft``,
``grpo``, ``evaluate``), each holding a few of that section's fields. Every field is built from the
config model that validates ``params.yaml`` (``tasks.config``): the same type (so the sampler is a
dropdown of its ``Literal``, reward names come from the reward registry), the same description,
and as default the value in the project's ``params.yaml`` when this module is imported (the code
default where the file lacks it). So the form opens showing what a run would use.

:func:`changed_overrides` turns a submitted form into ``key=value`` overrides: only fields whose
value differs from the form's default (what the person changed) become overrides, so an untouched
form -- a schedule, a Quick run -- runs exactly ``params.yaml``. The flow then validates
``params.yaml`` + these + the free-form overrides with ``tasks.config.load_params``, the same
check every stage makes, before any stage runs. (Defaults are read at import: after editing
``params.yaml``, re-serve or re-deploy so the form shows the new values.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model

from tasks.config import CurateConfig, EvaluateConfig, GRPOConfig, ModelConfig, SFTConfig

PROJECT_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"

# section -> (its config model, the fields the form shows)
FORM: dict[str, tuple[type[BaseModel], tuple[str, ...]]] = {
    "model": (ModelConfig, ("name_or_path", "seed")),
    "curate": (CurateConfig, ("sources", "seed")),
    "sft": (SFTConfig, ("steps", "lr", "batch_size", "seed")),
    "grpo": (
        GRPOConfig,
        ("steps", "lr", "sampler", "rewards", "group_size", "prompts_per_step", "beta", "seed"),
    ),
    "evaluate": (EvaluateConfig, ("n_samples", "seed")),
}
SECTION_TITLES = {
    "model": "Base model",
    "curate": "Data",
    "sft": "SFT cold start",
    "grpo": "GRPO",
    "evaluate": "Evaluation",
}


# For fields whose config model carries no description.
DESCRIPTIONS = {
    "seed": "random seed of this stage",
    "sources": "where the rows come from: the synthetic suite and/or GSM8K-format files",
    "sampler": "prompt curriculum: uniform, dump (UCB over |advantage|), prioritized (by failure rate), static",
    "rewards": "reward functions and their weights (the reward is the weighted sum)",
    "lr": "peak learning rate",
    "prompts_per_step": "prompts sampled per step (each gets group_size completions)",
}


def _reward_names() -> Any:
    from tasks.rewards import REWARDS

    return Literal[tuple(sorted(REWARDS))]


def _file_values(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError:
        raw = None
    return raw if isinstance(raw, dict) else {}


def _section_form(section: str, values: dict[str, Any]) -> type[BaseModel]:
    config, names = FORM[section]
    defaults = config.model_validate(values)  # the file's values; code defaults where it has none
    fields = {}
    for name in names:
        info = config.model_fields[name]
        annotation = (
            dict[_reward_names(), float] if (section, name) == ("grpo", "rewards") else info.annotation
        )
        desc = info.description or DESCRIPTIONS.get(name, name)
        fields[name] = (annotation, Field(getattr(defaults, name), description=f"{desc} ({section}.{name})"))
    return create_model(f"{section.title()}Settings", __config__=ConfigDict(extra="forbid"), **fields)


def build_settings(path: Path = PROJECT_PARAMS) -> type[BaseModel]:
    """The :class:`RunSettings` model with defaults read from ``path``."""
    raw = _file_values(path)
    groups = {}
    for section in FORM:
        model = _section_form(section, raw.get(section) or {})
        groups[section] = (model, Field(default_factory=model, title=SECTION_TITLES[section]))
    return create_model("RunSettings", __config__=ConfigDict(extra="forbid"), **groups)


RunSettings = build_settings()


def _value(v: Any) -> str:
    # A one-line YAML flow value: `tasks.config.apply_overrides` and DVC's `-S` both parse it.
    return yaml.safe_dump(v, default_flow_style=True, width=10**9).strip().removesuffix("...").strip()


def changed_overrides(settings: BaseModel | dict[str, Any] | None) -> list[str]:
    """``section.field=value`` for every form field that differs from the form's default."""
    if settings is None:
        return []
    form = settings if isinstance(settings, RunSettings) else RunSettings.model_validate(settings)
    default = RunSettings().model_dump(mode="json")
    out = []
    for section, fields in form.model_dump(mode="json").items():
        for name, v in fields.items():
            if v != default[section][name]:
                out.append(f"{section}.{name}={_value(v)}")
    return out
