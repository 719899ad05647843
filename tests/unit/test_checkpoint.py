"""Checkpoints: a resume restores what the run needs, and an incomplete checkpoint is never picked.

The collective side (every rank's part, DeepSpeed shards) runs in
tests/integration/test_scale_resume.py; these run in one process, where the job is a world of one.
"""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from tasks import checkpoint
from tasks.config.grpo import GRPOConfig
from tasks.grpo.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from tasks.grpo.sampler import UniformSampler

CFG = GRPOConfig(steps=10)


def _parts(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1), UniformSampler(["a", "b", "a"], seed)


def test_resume_restores_model_sampler_and_random_state(tmp_path):
    model, opt, sampler = _parts(0)
    gen, seeds = torch.Generator().manual_seed(10), torch.Generator().manual_seed(3)
    torch.rand(5, generator=gen), torch.rand(2, generator=seeds), sampler.sample(2)  # advance them
    random.seed(7)
    path = save_checkpoint(tmp_path, 4, model, opt, sampler, gen, [{"step": 3}], CFG, seeds)
    expected = (
        torch.rand(4, generator=gen),
        torch.rand(4, generator=seeds),
        sampler.sample(3),
        random.random(),
    )

    m2, o2, s2 = _parts(1)
    g2, seeds2 = torch.Generator().manual_seed(999), torch.Generator().manual_seed(998)
    step, history = load_checkpoint(path, m2, o2, s2, g2, CFG, seeds2)
    assert step == 4 and history == [{"step": 3}]
    assert torch.equal(m2.weight, model.weight)
    got = (torch.rand(4, generator=g2), torch.rand(4, generator=seeds2), s2.sample(3), random.random())
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1]) and got[2:] == expected[2:]
    assert checkpoint.load(path, rank=1)[1] is None  # a rank the one-process run did not have


def test_only_complete_checkpoints_are_found(tmp_path):
    model, opt, sampler = _parts(0)
    for step in (2, 5):
        save_checkpoint(tmp_path, step, model, opt, sampler, torch.Generator(), [], CFG)
    assert latest_checkpoint(tmp_path).name == "step-000005"
    # step 5 claims a second rank whose part never arrived: never picked
    m = json.loads((tmp_path / "step-000005/manifest.json").read_text())
    m["files"].append("rank-00001.pt")
    (tmp_path / "step-000005/manifest.json").write_text(json.dumps(m))
    (tmp_path / ".tmp-step-000007").mkdir()  # a write cut short
    shutil.copytree(tmp_path / "step-000002", tmp_path / "step-000008")
    (tmp_path / "step-000008/manifest.json").unlink()  # no manifest: not known to be whole
    assert latest_checkpoint(tmp_path).name == "step-000002"


def test_last_k_kept(tmp_path):
    model, opt, sampler = _parts(0)
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, model, opt, sampler, torch.Generator(), [], CFG)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000004", "step-000005"]


def test_resume_refuses_what_it_cannot_continue(tmp_path, capsys):
    model, opt, sampler = _parts(0)
    path = save_checkpoint(tmp_path, 6, model, opt, sampler, torch.Generator(), [], CFG)
    with pytest.raises(checkpoint.ResumeError, match="past steps=5"):
        checkpoint.check_resume(path, GRPOConfig(steps=5).model_dump(), engine=False, world_exact=False)
    notes = checkpoint.check_resume(path, GRPOConfig(steps=20).model_dump(), engine=False, world_exact=False)
    assert len(notes) == 1 and "steps changed 10 -> 20" in notes[0] and "NOT" in capsys.readouterr().err
    with pytest.raises(checkpoint.ResumeError, match="with the same scale.deepspeed_config"):
        checkpoint.check_resume(path, CFG.model_dump(), engine=True, world_exact=False)
    m = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**m, "engine": True, "world_size": 2}))
    with pytest.raises(checkpoint.ResumeError, match="scale.num_processes=2"):
        checkpoint.check_resume(path, CFG.model_dump(), engine=True, world_exact=False)


def test_run_key_ignores_only_resumable_fields(tmp_path):
    key = checkpoint.run_key(CFG.model_dump(), [])
    assert checkpoint.run_key(GRPOConfig(steps=99, save_every=3).model_dump(), []) == key
    assert checkpoint.run_key({**CFG.model_dump(), "scale": {"num_processes": 2}}, []) == key
    assert checkpoint.run_key(GRPOConfig(steps=10, lr=1e-3).model_dump(), []) != key


def test_sft_checkpoint_at_the_last_step_resumes_to_completion(tmp_path):
    """A crash after the last step's checkpoint but before the model is saved: the rerun trains zero
    steps, repeats none, and ends on the same weights; the epoch boundary (4 traces, batch 2, a
    checkpoint every 2 steps) resumes with the next epoch's permutation."""
    from tasks.config import ModelConfig, SFTConfig
    from tasks.config.model import TinyModel
    from tasks.models import build_tiny, load_model, load_tokenizer
    from tasks.stages.sft import encode_example, train

    tiny = TinyModel(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
    )
    path = build_tiny(ModelConfig(tiny=tiny, seed=0), tmp_path / "base")
    tok = load_tokenizer(path)
    examples = [encode_example(tok, f"{i}+1=", f"<answer>{i + 1}</answer>", 32) for i in range(4)]
    cfg = SFTConfig(steps=4, batch_size=2, save_every=2, warmup_steps=1, log_every=1)

    def run(ckpt_dir):
        torch.manual_seed(0)
        model = load_model(path)
        return model, train(model, tok, examples, cfg, ckpt_dir=ckpt_dir)

    def same(a, b) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    ref, ref_hist = run(tmp_path / "ck")  # leaves its checkpoints (main removes them, train does not)
    assert sorted(p.name for p in (tmp_path / "ck").glob("step-*")) == ["step-000002", "step-000004"]
    again, hist = run(tmp_path / "ck")  # a crash after the last checkpoint: zero steps left to train
    assert hist == ref_hist and same(again, ref)
    shutil.rmtree(tmp_path / "ck/step-000004")  # a crash before it: resume at the epoch boundary
    resumed, hist = run(tmp_path / "ck")
    exact = [[h[k] for k in ("step", "loss", "lr", "grad_norm")] for h in hist]  # tokens_per_s is a timing
    assert exact == [[h[k] for k in ("step", "loss", "lr", "grad_norm")] for h in ref_hist]
    assert same(resumed, ref)
