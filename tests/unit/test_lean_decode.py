"""The lean functional decoder (tasks.lean_decode) against the HF forward it replaces.

Models: the embedded tiny Qwen2 (build_tiny, a few SGD steps so its logits depend on the context)
and small random Llama / Qwen2-GQA / Mistral configs with sharp weights. Each is checked for equal
logits (prefill and decode steps), identical greedy tokens with rows leaving the batch at different
steps, identical seeded samples, and fallback to the HF path when the layout is not supported.
"""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

import tasks.generation as gen
from tasks.config import ModelConfig, TinyModel
from tasks.generation import encode_prompts, sample
from tasks.lean_decode import LeanDecoder, supported, unsupported_reason
from tasks.models import build_char_tokenizer, build_tiny, load_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: per-op overhead, one thread is faster

PROMPTS = ["12+34=", "1234+5678=", "999-1=", "7*8=", "100-99=", "5+5=", "31+4=", "2*21="]


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tok):
    """The embedded default model after a few optimizer steps on arithmetic text (ending in EOS)."""
    m = load_model(build_tiny(ModelConfig(tiny=TinyModel(), seed=0), tmp_path_factory.mktemp("tiny") / "m"))
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 200, (2, 32), generator=g).tolist()
    text = [f"{x}+{y}={x + y}<eos>" for x, y in zip(a, b)]
    batch = tok(text, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(15):
        opt.zero_grad()
        m(**batch, labels=labels).loss.backward()
        opt.step()
    return m.eval()


def random_model(config, seed=0):
    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" not in name:
                p.normal_(0, 0.3)
    return m


def small(cls, **kw):
    base = dict(vocab_size=108, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                intermediate_size=96, max_position_embeddings=128, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    return cls(**{**base, **kw})


CONFIGS = {
    "llama-untied-nobias": small(LlamaConfig, tie_word_embeddings=False),
    "llama-biases-headdim": small(LlamaConfig, attention_bias=True, mlp_bias=True, head_dim=24, tie_word_embeddings=True),
    "qwen2-gqa-tied": small(Qwen2Config, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2-gqa-untied": small(Qwen2Config, num_key_value_heads=2, tie_word_embeddings=False, rms_norm_eps=1e-5),
    "mistral-gqa": small(MistralConfig, num_key_value_heads=1, sliding_window=None),
}


@pytest.fixture(scope="module", params=["tiny", *CONFIGS])
def model(request, tiny, tok):
    m = tiny if request.param == "tiny" else random_model(CONFIGS[request.param])
    m = copy.deepcopy(m)
    with torch.no_grad():  # EOS logit scaled so that rows finish at different steps
        m.lm_head.weight[tok.eos_token_id] *= 0.8 if request.param == "tiny" else 1.5
    assert supported(m), unsupported_reason(m)
    return m


def hf_logits(model, ids, mask):
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()


def test_prefill_and_decode_logits_match_hf(model, tok):
    ids, mask = encode_prompts(tok, PROMPTS)
    dec = LeanDecoder(model, ids.shape[1] + 6)
    with torch.inference_mode():
        logits = dec.prefill(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0))
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -1:] + 1
    for t in range(5):
        want = hf_logits(model, ids, mask)
        err, scale = (logits - want).abs().max(), want.abs().max()
        assert err <= 1e-5 * max(1.0, scale), (t, err, scale)  # 1e-5 relative: random logits reach ~10
        nxt = want.argmax(-1)
        ids, mask = torch.cat([ids, nxt[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        with torch.inference_mode():
            logits = dec.step(nxt, pos, t)
        pos = pos + 1


def test_greedy_tokens_identical_to_hf(model, tok, monkeypatch):
    compactions = []
    compact = LeanDecoder._compact
    monkeypatch.setattr(LeanDecoder, "_compact", lambda self: compactions.append(1) or compact(self))
    hf = sample(model, tok, PROMPTS, n=2, max_new_tokens=20, greedy=True, engine="hf")
    lean = sample(model, tok, PROMPTS, n=2, max_new_tokens=20, greedy=True, engine="lean")
    assert compactions  # finished rows were dropped from the buffer
    assert torch.equal(lean.completion_ids, hf.completion_ids)
    assert torch.equal(lean.completion_mask, hf.completion_mask) and lean.texts == hf.texts
    assert torch.equal(lean.truncated, hf.truncated) and torch.equal(lean.prompt_ids, hf.prompt_ids)
    lengths = hf.completion_mask.sum(1)
    assert len(set(hf.texts)) > 2 and len(set(lengths.tolist())) > 2  # not vacuous: rows leave at several steps


def test_seeded_sampling_identical_to_hf(model, tok):
    runs = []
    for engine in ("hf", "lean"):
        g = torch.Generator().manual_seed(0)
        runs.append(sample(model, tok, PROMPTS, n=4, max_new_tokens=24, temperature=1.0, generator=g, engine=engine))
    assert torch.equal(runs[0].completion_ids, runs[1].completion_ids)
    assert 0 < runs[0].truncated.sum() < len(runs[0].truncated)


def test_reads_the_live_weights(tiny, tok):
    m = copy.deepcopy(tiny)
    before = sample(m, tok, PROMPTS, max_new_tokens=12, greedy=True, engine="lean").completion_ids
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # an optimizer step, in place
    after = sample(m, tok, PROMPTS, max_new_tokens=12, greedy=True, engine="lean").completion_ids
    assert not torch.equal(before, after)
    assert torch.equal(after, sample(m, tok, PROMPTS, max_new_tokens=12, greedy=True, engine="hf").completion_ids)


def test_auto_uses_lean_and_hf_forces_hf(tiny, tok, monkeypatch):
    calls = []
    step = LeanDecoder.step
    monkeypatch.setattr(LeanDecoder, "step", lambda self, *a: calls.append(1) or step(self, *a))
    m = copy.deepcopy(tiny)
    with torch.no_grad():
        m.lm_head.weight[tok.eos_token_id] *= 0.5  # no row ends within 7 tokens
    m.train()
    s = sample(m, tok, PROMPTS[:2], max_new_tokens=7, greedy=True)
    assert m.training  # mode restored
    m.eval()
    assert s.truncated.all() and len(calls) == 6  # no step after the last token
    sample(m, tok, PROMPTS[:1], max_new_tokens=7, greedy=True, engine="hf")
    assert len(calls) == 6
    with pytest.raises(ValueError, match="engine"):
        sample(m, tok, PROMPTS[:1], max_new_tokens=2, engine="fast")


def unsupported_models(tiny):
    from peft import LoraConfig, get_peft_model

    rope = small(LlamaConfig, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    peft = get_peft_model(copy.deepcopy(tiny), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    hooked = copy.deepcopy(tiny)
    hooked.model.layers[0].register_forward_hook(lambda *a: None)
    yield "rope scaling", random_model(rope)
    yield "peft", peft
    yield "LoRA", peft.get_base_model()  # the trainer samples with the model inside the wrapper
    yield "hooks", hooked
    yield "float32", copy.deepcopy(tiny).to(torch.bfloat16)
    yield "attention implementation", random_model(small(Qwen2Config, attn_implementation="flex_attention"))
    yield "sliding window", random_model(small(MistralConfig, sliding_window=4))
    yield "architecture", AutoModelForCausalLM.from_config(small(Qwen2Config)).model  # no lm_head: not a CausalLM

    class Wrapper(torch.nn.Module):  # DDP-like: the model is inside, no .config
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    yield "config", Wrapper(tiny)


def test_unsupported_models_fall_back_and_lean_names_the_reason(tiny, tok):
    for why, m in unsupported_models(tiny):
        reason = unsupported_reason(m, 30)
        assert reason is not None and why in reason, (why, reason)
        assert not supported(m)
        with pytest.raises(ValueError, match=why):
            gen._decoder(m, "lean", 30)
        assert isinstance(gen._decoder(m, "auto", 30), gen._HFDecoder)
    # a sliding window longer than the whole sequence is not in effect
    assert supported(random_model(small(MistralConfig, sliding_window=64)), 30)
    hf = sample(tiny, tok, PROMPTS[:2], max_new_tokens=6, greedy=True, engine="hf")
    wrapped = get_peft_lora(tiny)
    got = sample(wrapped.get_base_model(), tok, PROMPTS[:2], max_new_tokens=6, greedy=True)  # auto: HF path
    assert torch.equal(got.completion_ids, hf.completion_ids)  # fresh adapters (B = 0) change nothing
    with pytest.raises(ValueError, match="peft"):
        sample(wrapped, tok, PROMPTS[:1], max_new_tokens=2, engine="lean")


def get_peft_lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
