"""Typed configuration: one pydantic model per stage, loaded from ``params.yaml``.

``params.yaml`` is the single source of configuration; DVC tracks each stage's section so a
changed value re-runs exactly the stages that read it. Each stage's model lives in its own module
(``tasks/config/<stage>.py``, shared training fields in ``training.py``) so that DVC, which
tracks code by file, re-runs only the stages whose config code changed. Every model forbids
unknown keys, so a typo is an error rather than a silently ignored setting, and every error
names the dotted key (``grpo.lr``) and what was wrong. ``load_params`` validates the whole file
before any stage writes anything.

Overrides use ``key.path=value`` with a YAML-parsed value, the same syntax as
``dvc exp run -S``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from tasks.config.base import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, ConfigError, Strict
from tasks.config.curate import (
    SYNTHETIC_FAMILIES,
    CurateConfig,
    GateBounds,
    Gsm8kSource,
    Source,
    SyntheticSource,
)
from tasks.config.evaluate import EvaluateConfig
from tasks.config.grpo import CurriculumConfig, GRPOConfig
from tasks.config.model import SYSTEM_PROMPT, ModelConfig, PromptConfig, TinyModel
from tasks.config.sft import SFTConfig
from tasks.config.training import LoraConfig, ScaleConfig, TrainingConfig

__all__ = [
    "ANSWER_CLOSE", "ANSWER_OPEN", "PARAMS_FILE", "SYNTHETIC_FAMILIES", "THINK_CLOSE", "THINK_OPEN", "ConfigError",
    "CurateConfig", "CurriculumConfig", "EvaluateConfig", "GRPOConfig", "GateBounds", "Gsm8kSource", "LoraConfig",
    "ModelConfig", "Params", "PromptConfig", "SYSTEM_PROMPT", "SFTConfig", "ScaleConfig", "Source", "Strict",
    "SyntheticSource", "TinyModel", "TrackingConfig", "TrainingConfig", "apply_overrides", "load_params", "stage_cli",
]

PARAMS_FILE = Path("params.yaml")


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
