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
        ("steps", "lr", "sampler", "online", "rewards", "group_size", "prompts_per_step", "beta", "seed"),
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
    "sampler": "prompt curriculum: uniform, dump (UCB over |advantage|), prioritized (by failure rate), "
    "static",
    "rewards": "reward functions and their weights (the reward is the weighted sum)",
    "online": "the online difficulty model: skip prompts predicted to give an all-equal group",
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
    return _form_model(section, config, names, values)


def _form_model(key: str, config: type[BaseModel], names: tuple[str, ...], values: Any) -> type[BaseModel]:
    """A model of ``names`` from ``config``: its types and descriptions, ``values`` as defaults."""
    defaults = config.model_validate(values)  # the file's values; code defaults where it has none
    fields: dict[str, Any] = {}
    for name in names:
        info, default = config.model_fields[name], getattr(defaults, name)
        desc = info.description or DESCRIPTIONS.get(name, name)
        if isinstance(default, BaseModel):  # a settings group (grpo.online): a sub-form, same rules
            sub = type(default)
            group = _form_model(f"{key}.{name}", sub, tuple(sub.model_fields), default.model_dump())
            fields[name] = (group, Field(default_factory=group, description=f"{desc} ({key}.{name})"))
            continue
        annotation = (
            dict[_reward_names(), float]  # type: ignore[misc]  # a Literal of the registry's names, made at run time
            if (key, name) == ("grpo", "rewards")
            else info.annotation
        )
        fields[name] = (annotation, Field(default, description=f"{desc} ({key}.{name})"))
    title = "".join(part.title() for part in key.split("."))
    return create_model(f"{title}Settings", __config__=ConfigDict(extra="forbid"), **fields)


def build_settings(path: Path = PROJECT_PARAMS) -> type[BaseModel]:
    """The :class:`RunSettings` model with defaults read from ``path``."""
    raw = _file_values(path)
    groups = {}
    for section in FORM:
        model = _section_form(section, raw.get(section) or {})
        groups[section] = (model, Field(default_factory=model, title=SECTION_TITLES[section]))
    return create_model("RunSettings", __config__=ConfigDict(extra="forbid"), **groups)  # type: ignore[call-overload]


RunSettings = build_settings()


def _value(v: Any) -> str:
    # A one-line YAML flow value: `tasks.config.apply_overrides` and DVC's `-S` both parse it.
    return yaml.safe_dump(v, default_flow_style=True, width=10**9).strip().removesuffix("...").strip()


def changed_overrides(settings: BaseModel | dict[str, Any] | None) -> list[str]:
    """``section.field=value`` for every form field that differs from the form's default.

    A settings group (a config model such as ``grpo.online``) gives one override per changed
    field inside it, so turning one switch keeps the file's other values; any other value -- a
    list, the rewards mapping -- is replaced whole, so removing an entry works.
    """
    if settings is None:
        return []
    form = settings if isinstance(settings, RunSettings) else RunSettings.model_validate(settings)
    default = RunSettings()
    out = []
    for section in type(form).model_fields:
        group = getattr(form, section)
        values, defaults = group.model_dump(mode="json"), getattr(default, section).model_dump(mode="json")
        for name, v in values.items():
            if isinstance(getattr(group, name), BaseModel):
                out += [f"{section}.{name}.{k}={_value(x)}" for k, x in v.items() if x != defaults[name][k]]
            elif v != defaults[name]:
                out.append(f"{section}.{name}={_value(v)}")
    return out
