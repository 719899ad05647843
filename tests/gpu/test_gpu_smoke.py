"""GPU smoke test: one SFT step and one GRPO update of the tiny model on CUDA in bf16.

Runs only where CUDA is present (`make test-gpu` on a GPU machine); CI has no GPU, so the `gpu`
marker skips it there (tests/conftest.py). It checks the device paths of the same functions the
stages use: sampling, completion log-probs, the SFT loss and the GRPO loss.
"""

from __future__ import annotations

import pytest
import torch

from tasks.config import ModelConfig
from tasks.generation import completion_logprobs, sample
from tasks.grpo.loss import group_advantages, policy_loss
from tasks.models import build_tiny, load_model, load_tokenizer
from tasks.sft import collate, encode_example, sft_loss

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
