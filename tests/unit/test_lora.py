"""LoRA via peft (tasks/lora.py) on a 1-layer tiny model, and the pure parts of tasks/distributed.py.

- adapters start at B = 0 (outputs unchanged), and only adapter tensors reach the optimiser;
- after a training step the merged model saved with ``save_pretrained`` loads back as a plain
  Qwen2 model with exactly the adapted model's outputs;
- the reference (adapters disabled) gives the base model's log-probs, not the trained policy's;
- ``deepspeed_config`` fills the "auto" values; ``shard`` splits a batch; ``launch_command``.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from tasks.config import LoraConfig, ModelConfig, ScaleConfig, TinyModel
from tasks.distributed import deepspeed_config, launch_command, shard
from tasks.generation import Samples, completion_logprobs
from tasks.lora import Reference, add_adapters, merged, trainable
from tasks.models import build_tiny, load_model


@pytest.fixture
def base_dir(tmp_path):
    tiny = TinyModel(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64)
    return build_tiny(ModelConfig(tiny=tiny), tmp_path / "base")


def samples() -> Samples:
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(10, 90, (2, 5), generator=g)
    comp = torch.randint(10, 90, (2, 4), generator=g)
    ones = torch.ones_like
    return Samples(prompt, ones(prompt), comp, ones(comp), ["", ""], torch.zeros(2, dtype=torch.bool))


def train_one_step(model) -> None:
    opt = torch.optim.AdamW(trainable(model), lr=1e-2)
    (-completion_logprobs(model, samples()).sum()).backward()
    opt.step()


def test_adapters_start_neutral_and_only_they_train(base_dir):
    base = load_model(base_dir)
    want = completion_logprobs(base, samples())
    peft_model = add_adapters(load_model(base_dir), LoraConfig(r=4, alpha=8))
    policy = peft_model.get_base_model()
    torch.testing.assert_close(completion_logprobs(policy, samples()), want)  # B = 0 at start
    names = [n for n, p in policy.named_parameters() if p.requires_grad]
    # one layer x 4 target projections x (A, B)
    assert len(names) == 8 and all("lora_A" in n or "lora_B" in n for n in names)
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    train_one_step(policy)
    assert all(torch.equal(p, frozen[n]) for n, p in policy.named_parameters() if not p.requires_grad)
    assert (completion_logprobs(policy, samples()) - want).abs().max() > 1e-4


def test_merged_save_is_a_plain_model_with_the_same_outputs(base_dir, tmp_path):
    peft_model = add_adapters(load_model(base_dir), LoraConfig(r=4, alpha=8))
    policy = peft_model.get_base_model()
    train_one_step(policy)
    with torch.no_grad():
        want = completion_logprobs(policy, samples())
    merged(peft_model).save_pretrained(tmp_path / "out")
    keys = json.loads((tmp_path / "out/config.json").read_text())
    assert keys["model_type"] == "qwen2" and not (tmp_path / "out/adapter_config.json").exists()
    back = load_model(tmp_path / "out")
    assert not any("lora" in n for n, _ in back.named_parameters())
    torch.testing.assert_close(completion_logprobs(back, samples()), want, atol=1e-5, rtol=1e-5)


def test_reference_is_the_base_model(base_dir):
    want = completion_logprobs(load_model(base_dir), samples())
    peft_model = add_adapters(load_model(base_dir), LoraConfig(r=4, alpha=8))
    policy = peft_model.get_base_model()
    train_one_step(policy)
    ref = completion_logprobs(Reference(peft_model), samples())
    torch.testing.assert_close(ref, want)
    assert not ref.requires_grad
    assert (completion_logprobs(policy, samples()) - want).abs().max() > 1e-4  # adapters back on after


def test_unknown_target_module_is_named(base_dir):
    with pytest.raises(ValueError, match="lora.target_modules: no module named 'qkv'"):
        add_adapters(load_model(base_dir), LoraConfig(target_modules=["qkv"]))


def test_deepspeed_config_fills_auto(tmp_path):
    cfg = deepspeed_config("infra/deepspeed/zero2.json", world=4, max_grad_norm=0.5, mixed_precision="bf16")
    assert (cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"], cfg["train_batch_size"]) == (1, 1, 4)
    assert cfg["gradient_clipping"] == 0.5 and cfg["bf16"] == {"enabled": True}
    assert cfg["managed_gradient_accumulation"] is False and cfg["zero_optimization"]["stage"] == 2
    assert "auto" not in json.dumps(cfg)
    z3 = deepspeed_config("infra/deepspeed/zero3.json", world=1, max_grad_norm=1.0, mixed_precision="no")
    assert z3["bf16"] == {"enabled": False} and z3["zero_optimization"]["stage"] == 3
    with pytest.raises(FileNotFoundError, match="scale.deepspeed_config: nope.json"):
        deepspeed_config("nope.json", 1, 1.0, "no")


def test_shard_and_launch_command():
    assert [shard(list(range(8)), r, 2) for r in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [shard(list(range(5)), r, 3) for r in range(3)] == [[0], [1, 2], [3, 4]]
    cmd = launch_command("tasks.stages.sft", ["-S", "sft.steps=3"], ScaleConfig(num_processes=2))
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   "-m", "tasks.stages.sft", "-S", "sft.steps=3"]
    ds = launch_command("tasks.stages.grpo", [], ScaleConfig(num_processes=2, launcher="deepspeed"))
    assert ds[:5] == [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2"]
    assert ds[-3:] == ["--no_local_rank", "--module", "tasks.stages.grpo"]
    with pytest.raises(ValueError, match="bf16 needs deepspeed_config"):
        ScaleConfig(mixed_precision="bf16")
