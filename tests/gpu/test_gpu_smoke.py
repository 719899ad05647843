"""GPU smoke tests: the tiny model on CUDA in bf16.

Run only where CUDA is present (`make test-gpu` on a GPU machine); CI has no GPU, so the `gpu`
marker skips them there (tests/conftest.py).

- ``test_sft_and_grpo_step_on_cuda_bf16``: the device paths of the functions the stages use
  (sampling, completion log-probs, the SFT loss and the GRPO loss).
- ``test_stages_with_deepspeed_zero2_bf16``: one SFT step and one GRPO step through the real entry
  points (``python -m tasks.stages.sft`` / ``tasks.stages.grpo``) with ``scale.deepspeed_config`` =
  infra/deepspeed/zero2.json and bf16, in one process (tasks/distributed.py sets up the process
  group DeepSpeed needs), then the same with LoRA and a KL term.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tasks.config import ModelConfig, load_params
from tasks.generation import completion_logprobs, sample
from tasks.grpo.loss import group_advantages, policy_loss
from tasks.models import build_tiny, load_model, load_tokenizer
from tasks.stages.curate import build, write_parquet
from tasks.stages.sft import collate, encode_example, sft_loss

pytestmark = pytest.mark.gpu


def test_sft_and_grpo_step_on_cuda_bf16(tmp_path):
    build_tiny(ModelConfig(), tmp_path)
    tok = load_tokenizer(tmp_path)
    model = load_model(tmp_path, dtype=torch.bfloat16).to("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    batch = collate([encode_example(tok, "12+34=", "<think>2+4+0=6 1+3+0=4</think><answer>46</answer>", 64)], tok.pad_token_id)
    loss = sft_loss(model, {k: v.cuda() for k, v in batch.items()})
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)

    gen = torch.Generator(device="cuda").manual_seed(0)
    s = sample(model, tok, ["12+34=", "56-7="], n=4, max_new_tokens=16, generator=gen)
    assert s.completion_ids.is_cuda and len(s.texts) == 8
    logp = completion_logprobs(model, s)
    adv = group_advantages(torch.arange(8, dtype=torch.float32), 4).cuda()
    loss, _ = policy_loss(logp, logp.detach(), adv, s.completion_mask)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


ROOT = Path(__file__).resolve().parents[2]


def test_stages_with_deepspeed_zero2_bf16(tmp_path, sh, subprocess_env):
    from conftest import TINY

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**TINY, "tracking": {"uri": f"sqlite:///{tmp_path / 'm.db'}"}}))
    cfg = load_params(tmp_path / "params.yaml")
    splits, _ = build(cfg.curate)
    for name in ("sft", "rl"):
        write_parquet(splits[name], tmp_path / "data/curated" / f"{name}.parquet")
    build_tiny(cfg.model, tmp_path / "models/base")
    env = {**subprocess_env, "HF_HUB_OFFLINE": "1"}
    ds = [f"scale.deepspeed_config={ROOT / 'infra/deepspeed/zero2.json'}", "scale.mixed_precision=bf16"]

    sh(["python", "-m", "tasks.stages.sft", *[a for o in ds for a in ("-S", f"sft.{o}")], "-S", "sft.steps=1"], tmp_path, env=env)
    base, sft = load_file(tmp_path / "models/base/model.safetensors"), load_file(tmp_path / "models/sft/model.safetensors")
    assert any(not torch.equal(base[k].float(), sft[k].float()) for k in base)
    sh(["python", "-m", "tasks.stages.grpo", *[a for o in ds for a in ("-S", f"grpo.{o}")], "-S", "grpo.steps=1",
        "-S", "grpo.rewards={tag_count: 1.0}"], tmp_path, env=env)
    assert (tmp_path / "models/grpo/model.safetensors").is_file()
    sh(["python", "-m", "tasks.stages.grpo", *[a for o in ds for a in ("-S", f"grpo.{o}")], "-S", "grpo.steps=1",
        "-S", "grpo.lora.enabled=true", "-S", "grpo.beta=0.04", "-S", "grpo.out_dir=models/grpo_lora"], tmp_path, env=env)
    merged = load_file(tmp_path / "models/grpo_lora/model.safetensors")
    assert not any("lora" in k for k in merged)
