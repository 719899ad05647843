"""Every model family through the whole DAG: curate -> base -> SFT -> GRPO -> evaluate.

The families (tests/integration/model_families.py) are hub-shaped folders built here: Qwen2
(ChatML, eos ``<|im_end|>``), Llama-3 (end-of-turn ``<|eot_id|>`` distinct from eos, two stop ids),
Gemma (no system role; HF forward, not the lean decoder) and a base model without a chat template.
Curate runs once on a synthetic family plus a slice of ``../shared/data/gsm8k``; then per family
the stage entry points run in this process (one import of torch/transformers/MLflow for all; the
subprocess and DVC wiring is tested in test_stages.py and test_model_inputs.py), and the test checks:

- rendering: the system prompt reaches the model in the form the template allows;
- SFT's label mask covers exactly the completion tokens (solution + eos), and the prompt part is
  exactly the rendered prompt;
- generation stops where ``model.generate`` stops under the same settings (greedy, the model's
  generation config), at the family's end-of-turn token, and text, tokens and mask agree;
- the model SFT trained on short worked traces emits the format: evaluation (the stage, with its
  rendering and stop conditions) scores the format reward 1.0 on every synthetic prompt;
- the truncation count per source in ``metrics/sft.json`` equals an independent count.

Each family's stage wall times are printed (``-s``).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from model_families import END_OF_TURN, FAMILIES, GSM8K, build_family, corpus

from tasks.config import SYSTEM_PROMPT, PromptConfig
from tasks.generation import sample, stop_conditions
from tasks.lean_decode import unsupported_reason
from tasks.models import load_model, load_tokenizer, prompt_format, render_prompt

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

SOURCES = [
    {
        "kind": "synthetic",
        "families": ["add_2d"],
        "sft_per_family": 64,
        "rl_per_family": 16,
        "eval_per_family": 8,
    },
    {"kind": "gsm8k", "path": str(GSM8K), "limit": 160, "sft_fraction": 0.1, "eval_fraction": 0.05},
]
STAGE = {
    "sft": {
        "steps": 120,
        "batch_size": 12,
        "lr": 1.0e-2,
        "warmup_steps": 5,
        "max_length": 160,
        "log_every": 40,
    },
    "grpo": {
        "steps": 1,
        "prompts_per_step": 2,
        "group_size": 2,
        "max_new_tokens": 24,
        "reward_workers": 1,
        "warmup_steps": 1,
        "log_every": 1,
        "save_every": 10,
    },
    "evaluate": {
        "n_samples": 2,
        "ks": [1, 2],
        "max_new_tokens": 48,
        "bootstrap_samples": 200,
        "batch_size": 64,
        "reward_workers": 1,
        "register_model": False,
    },
}


def run_stage(module, *overrides: str) -> float:
    t0 = time.perf_counter()
    assert module.main([a for o in overrides for a in ("-S", o)]) == 0
    return time.perf_counter() - t0


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    """data/curated from the synthetic + GSM8K sources, curated once for every family."""
    import tasks.stages.curate

    root = tmp_path_factory.mktemp("curated")
    (root / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "curate": {"sources": SOURCES},
                "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}"},
            }
        )
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert tasks.stages.curate.main([]) == 0
    return root / "data" / "curated"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus()


def family_project(root: Path, family: str, curated: Path, texts: list[str]) -> Path:
    model_dir = build_family(family, root / f"{family}-hub", texts)
    shutil.copytree(curated, root / "data" / "curated")
    params = {
        "model": {"name_or_path": str(model_dir), "watch": str(model_dir)},
        **STAGE,
        "tracking": {"uri": f"sqlite:///{root.parent / f'{family}-mlflow.db'}"},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def check_rendering(family: str, tok) -> str:
    fmt = prompt_format(tok, PromptConfig())
    text = render_prompt(tok, "What is 12+34?")
    if family == "base":
        assert fmt == "plain" and text == "What is 12+34?"
    elif family == "gemma":  # no system role: the system prompt is folded into the user turn
        assert fmt == "chat_fold_system"
        assert (
            text
            == f"<bos><start_of_turn>user\n{SYSTEM_PROMPT}\n\nWhat is 12+34?<end_of_turn>\n<start_of_turn>model\n"
        )
    else:
        assert (
            fmt == "chat"
            and SYSTEM_PROMPT in text
            and text.index(SYSTEM_PROMPT) < text.index("What is 12+34?")
        )
    return text


def check_label_mask(tok, row: dict, max_length: int) -> None:
    from tasks.stages.sft import encode_example

    ids, labels = encode_example(tok, row["prompt"], row["solution"], 10**6)
    prompt_ids = tok(render_prompt(tok, row["prompt"]), add_special_tokens=False).input_ids
    completion = tok(row["solution"], add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert ids == prompt_ids + completion
    assert [t for t, y in zip(ids, labels) if y != -100] == completion == labels[len(prompt_ids) :]
    assert tok.decode([y for y in labels if y != -100], skip_special_tokens=True) == row["solution"]


def steer_to_stop(model, tok, prompt: str, eot: int) -> int:
    """Make greedy decoding of ``prompt`` end with ``eot``: untie the output layer and swap its rows
    for ``eot`` and the latest token greedy emits for the first time within 8 steps (the steps
    before it are unchanged). Returns that step."""
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    ref = model.generate(**enc, max_new_tokens=8, do_sample=False)[0, enc.input_ids.shape[1] :].tolist()
    assert eot not in ref, ref
    at = max(k for k in range(len(ref)) if ref[k] not in ref[:k])
    with torch.no_grad():
        w = torch.nn.Parameter(model.lm_head.weight.detach().clone())
        w[[ref[at], eot]] = w[[eot, ref[at]]]
        model.lm_head.weight = w
    return at


def check_stops_like_generate(family: str, model, tok, prompts: list[str]) -> None:
    """Greedy ``sample`` == greedy ``model.generate`` (its generation config's stop ids), row by row;
    the first prompt is steered to end at the family's end-of-turn token."""
    eot = tok.convert_tokens_to_ids(END_OF_TURN[family])
    stops = stop_conditions(model, tok).ids
    assert eot in stops and set(stops) == set(
        model.generation_config.eos_token_id
        if isinstance(model.generation_config.eos_token_id, list)
        else [model.generation_config.eos_token_id]
    ) | {tok.eos_token_id}
    at = steer_to_stop(model, tok, prompts[0], eot)
    ours = sample(model, tok, prompts, max_new_tokens=12, greedy=True)
    for i, p in enumerate(prompts):
        enc = tok(p, return_tensors="pt", add_special_tokens=False)
        ref = model.generate(**enc, max_new_tokens=12, do_sample=False)[0, enc.input_ids.shape[1] :].tolist()
        n = int(ours.completion_mask[i].sum())
        assert ours.completion_ids[i, :n].tolist() == ref[:n]
        if ref[-1] in stops and len(ref) < 12:  # generate stopped early: so did we, at the same token
            assert n == len(ref) and not ours.truncated[i] and ref[-1] in stops
            assert (ours.completion_ids[i, n:] == tok.pad_token_id).all()
        else:
            assert n == 12 and ours.truncated[i]
        assert ours.texts[i] == tok.decode(ref[:n], skip_special_tokens=True)
    assert ours.completion_ids[0, at] == eot and int(ours.completion_mask[0].sum()) == at + 1, family
    print(f"{family}: stopped at {END_OF_TURN[family]} after {at} tokens, as generate does")


def expected_truncation(tok, df: pd.DataFrame, max_length: int) -> dict[str, int]:
    out = {}
    for src, g in df.groupby("source"):
        lengths = [
            len(tok(render_prompt(tok, p) + s, add_special_tokens=False).input_ids) + 1
            for p, s in zip(g["prompt"], g["solution"])
        ]
        out[src] = sum(n > max_length for n in lengths)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_family_runs_the_whole_dag(family, curated, texts, tmp_path, monkeypatch):
    import tasks.stages.base
    import tasks.stages.evaluate
    import tasks.stages.grpo
    import tasks.stages.sft

    p = family_project(tmp_path / "project", family, curated, texts)
    monkeypatch.chdir(p)
    times = {"base": run_stage(tasks.stages.base)}
    tok, base = load_tokenizer("models/base"), load_model("models/base")
    rendered = check_rendering(family, tok)
    assert (unsupported_reason(base) is None) == (family != "gemma")  # lean decoder where it applies
    sft_rows = pd.read_parquet("data/curated/sft.parquet")
    check_label_mask(tok, sft_rows.iloc[0].to_dict(), STAGE["sft"]["max_length"])
    check_stops_like_generate(
        family, base, tok, [rendered, render_prompt(tok, "7+8="), render_prompt(tok, "1")]
    )

    times["sft"] = run_stage(tasks.stages.sft)
    sft_metrics = json.loads(Path("metrics/sft.json").read_text())
    assert sft_metrics["truncated"] == expected_truncation(tok, sft_rows, STAGE["sft"]["max_length"])
    assert sft_metrics["truncated"]["gsm8k"] > 0 and sft_metrics["truncated"]["add_2d"] == 0
    times["grpo"] = run_stage(tasks.stages.grpo)
    times["evaluate"] = run_stage(tasks.stages.evaluate)
    ev = json.loads(Path("metrics/eval.json").read_text())
    assert ev["sft"]["per_source"]["add_2d"]["format_rate"] == 1.0, ev["sft"]["examples"]
    assert set(ev["sft"]["per_source"]) == {"add_2d", "gsm8k"}
    print(f"\n{family}: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()))
