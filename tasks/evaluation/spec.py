"""The frozen eval spec: everything that decides an evaluation's numbers, recorded and hashed.

A result is only comparable with another when both were produced under the same spec, so every
result carries ``spec`` (a JSON-able dict) and ``spec_hash`` (sha256 of its canonical JSON, 16 hex
digits). The spec holds:

- ``data``: per eval set its label, path and digest (a local file's md5 / a directory's digest / a
  hub dataset's resolved commit sha) and the number of items;
- ``prompt``: ``tasks.models.rendering_id`` (format, system prompt, template, a probe rendering),
  a hash of a probe's rendering, the raw chat template's hash, the stop ids and stop strings;
- ``verifier``: the answer-extraction and verifier versions: a hash of the reward modules' source
  (``tasks/rewards/{math,format,code}.py``) and math-verify's version;
- ``sampling``: greedy + n samples, temperature, ks, seeds, max_new_tokens;
- ``engine``: the decode path actually used (``lean`` or ``hf``), dtype, torch and transformers
  versions.

Model weights are *not* in the spec: the spec is what two models must share to be compared.
``why_not_comparable`` names the fields that differ.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

import torch

PROBE = "What is 2+3?"  # a fixed problem: its rendering identifies the prompt template
REWARD_FILES = ("math.py", "format.py", "code.py")


def digest(obj) -> str:
    """sha256 of the canonical JSON of ``obj``, 16 hex digits."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _text_hash(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()[:16]


def prompt_entry(tokenizer, model, model_cfg) -> dict:
    """How prompts are rendered and stopped: ``tasks.models.rendering_id`` (format, system prompt,
    template, a probe rendering), a probe rendering's hash, the raw chat template's hash, and the
    stop ids and strings."""
    from tasks.generation import stop_conditions
    from tasks.models import render_prompt, rendering_id

    template = getattr(tokenizer, "chat_template", None)
    return {
        "rendering": rendering_id(tokenizer, model_cfg.prompt),
        "probe": _text_hash(render_prompt(tokenizer, PROBE, model_cfg.prompt)),
        "chat_template": _text_hash(template if isinstance(template, str) else json.dumps(template)),
        "stop_ids": list(stop_conditions(model, tokenizer).ids),
        "stop_strings": list(model_cfg.stop_strings),
    }


def verifier_entry() -> dict:
    root = Path(__file__).resolve().parents[1] / "rewards"
    h = hashlib.sha256()
    for name in REWARD_FILES:
        h.update(name.encode() + b"\0" + (root / name).read_bytes())
    try:
        mv = metadata.version("math-verify")
    except metadata.PackageNotFoundError:
        mv = None
    return {"rewards_source": h.hexdigest()[:16], "math_verify": mv}


def engine_entry(model, engine: str, capacity: int) -> dict:
    from tasks.lean_decode import unsupported_reason

    used = "hf" if engine == "hf" or unsupported_reason(model, capacity) is not None else "lean"
    return {
        "decoder": used,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "device": next(model.parameters()).device.type,
        "torch": torch.__version__,
        "transformers": metadata.version("transformers"),
    }


def build_spec(data: list[dict], tokenizer, model, cfg, model_cfg) -> dict:
    """The spec of evaluating ``model`` on ``data`` (eval-set entries) under ``cfg`` (EvaluateConfig)
    and ``model_cfg`` (ModelConfig: prompt rendering and stop strings)."""
    sampling = {
        "greedy": True,
        "n_samples": cfg.n_samples,
        "temperature": cfg.temperature,
        "ks": sorted(cfg.ks),
        "seed": cfg.seed,
        "sample_seed": cfg.seed + 1,
        "max_new_tokens": cfg.max_new_tokens,
    }
    return {
        "data": data,
        "prompt": prompt_entry(tokenizer, model, model_cfg),
        "verifier": verifier_entry(),
        "sampling": sampling,
        "engine": engine_entry(model, cfg.engine, cfg.max_new_tokens),
    }


def why_not_comparable(a: dict, b: dict) -> str | None:
    """None when two specs are equal, else the differing fields (``prompt.chat_template: x != y``)."""
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if va == vb:
            continue
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += [
                f"{key}.{k}: {va.get(k)!r} != {vb.get(k)!r}"
                for k in sorted(set(va) | set(vb))
                if va.get(k) != vb.get(k)
            ]
        else:
            diffs.append(
                f"{key}: {digest(va)} != {digest(vb)}" if isinstance(va, list) else f"{key}: {va!r} != {vb!r}"
            )
    return "; ".join(diffs) if diffs else None
