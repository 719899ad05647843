"""Batched sampling and completion log-probs on a tiny random Qwen2, plus the model/tokenizer loaders.

The model is built once per module with ``build_tiny`` (hidden 32, 1 layer) and loaded back through
``load_model`` / ``load_tokenizer`` exactly as the stages load it.
"""

from pathlib import Path

import pytest
import torch

from tasks.config import ModelConfig, TinyModel
from tasks.generation import completion_logprobs, sample
from tasks.models import (
    POINTER,
    TAGS,
    build_char_tokenizer,
    build_tiny,
    count_parameters,
    load_model,
    load_tokenizer,
    resolve,
    write_pointer,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: per-op overhead, one thread is faster

TINY = TinyModel(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64)
PROMPTS = ["12+34=", "1234+5678=", "999-1="]
TEXT = "  <think>12 + 34:\n 2+4=6, 1+3=4</think> <answer>46</answer>  a b\tc~!"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny(ModelConfig(tiny=TINY, seed=0), tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tok(tiny_dir):
    return load_tokenizer(tiny_dir)


@pytest.fixture(scope="module")
def model(tiny_dir):
    """The tiny model with its weights redrawn at std 0.5 (norm gains kept at 1).

    At the default init (std 0.02) the output is nearly the last token's embedding, so greedy
    decoding repeats one character whatever the prompt, and a batch that let padding leak into
    attention would still agree with the prompt alone. Sharp random weights make every token
    depend on its context, so the checks below can fail.
    """
    m = load_model(tiny_dir).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m


# ----------------------------------------------------------------------------- tokenizer + loaders
def test_char_tokenizer_round_trips_spaces_and_tags(tmp_path, tiny_dir, tok):
    # Saved beside a qwen2 config.json (the build_tiny folder), AutoTokenizer once grafted Qwen2's
    # byte-level pre-tokenizer onto the char vocabulary and dropped the spaces; load_tokenizer must not.
    bare = tmp_path / "tok"
    build_char_tokenizer().save_pretrained(bare)
    for loaded in (load_tokenizer(bare), tok):
        ids = loaded(TEXT, add_special_tokens=False).input_ids
        assert loaded.decode(ids) == TEXT
        # one token per character, each tag one token: len(TEXT) - 4 tags' extra characters
        assert len(ids) == len(TEXT) - sum(len(t) - 1 for t in TAGS)
        for tag in TAGS:
            assert loaded(tag, add_special_tokens=False).input_ids == [loaded.convert_tokens_to_ids(tag)]
        assert loaded.padding_side == "left"
        assert loaded.pad_token == "<pad>" and loaded.eos_token == "<eos>"


def test_tiny_model_loads_with_the_configured_shape(tiny_dir, model, tok):
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (32, 1, len(tok))
    assert cfg.eos_token_id == tok.eos_token_id and cfg.pad_token_id == tok.pad_token_id
    assert count_parameters(model) == count_parameters(load_model(tiny_dir)) > 0
    # seeded: a second build is bit-identical
    again = build_tiny(ModelConfig(tiny=TINY, seed=0), tiny_dir.parent / "again")
    a, b = load_model(again).state_dict(), load_model(tiny_dir).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_resolve_pointer_folder(tmp_path, tiny_dir):
    sha = "0123456789abcdef0123456789abcdef01234567"
    cfg = ModelConfig(name_or_path="Qwen/Qwen2.5-0.5B-Instruct", revision="main")
    ptr = write_pointer(cfg, tmp_path / "base", sha)
    assert (ptr / POINTER).is_file()
    # later stages load the commit base resolved, never the moving branch name
    assert resolve(ptr) == ("Qwen/Qwen2.5-0.5B-Instruct", sha)
    assert resolve(str(ptr)) == ("Qwen/Qwen2.5-0.5B-Instruct", sha)
    assert resolve(tiny_dir) == (str(tiny_dir), None)  # a real model folder passes through
    assert resolve("org/some-model") == ("org/some-model", None)


# ----------------------------------------------------------------------------- sampling
def test_greedy_alone_equals_greedy_in_a_left_padded_batch(model, tok):
    alone = sample(model, tok, PROMPTS[:1], max_new_tokens=12, greedy=True)
    batch = sample(model, tok, PROMPTS, max_new_tokens=12, greedy=True)
    assert batch.prompt_mask[0].tolist()[:4] == [0, 0, 0, 0]  # "12+34=" is padded by 4 on the left
    assert len(set(batch.texts)) == 3  # the prompt matters (not one repeated character)
    width = alone.completion_ids.shape[1]
    assert torch.equal(batch.completion_ids[0, :width], alone.completion_ids[0])
    assert batch.texts[0] == alone.texts[0]
    # and each longer prompt alone agrees with its own row too
    for i in (1, 2):
        solo = sample(model, tok, PROMPTS[i : i + 1], max_new_tokens=12, greedy=True)
        assert torch.equal(batch.completion_ids[i, : solo.completion_ids.shape[1]], solo.completion_ids[0])


def test_greedy_does_not_change_training_mode(model, tok):
    model.train()
    sample(model, tok, PROMPTS[:1], max_new_tokens=2, greedy=True)
    assert model.training
    model.eval()


@pytest.fixture(scope="module")
def sampled(model, tok):
    """24 sampled rows at temperature 2: on this random model some emit EOS early, most never."""
    g = torch.Generator().manual_seed(0)
    return sample(model, tok, PROMPTS, n=8, max_new_tokens=24, temperature=2.0, generator=g)


def test_rows_are_grouped_by_prompt(sampled, tok):
    assert sampled.completion_ids.shape[0] == 24
    ids, _ = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False).values()
    for i in range(3):
        assert (sampled.prompt_ids[8 * i : 8 * i + 8] == ids[i]).all()


def test_completion_mask_ends_at_the_first_eos(sampled, tok):
    eos, pad = tok.eos_token_id, tok.pad_token_id
    comp, mask = sampled.completion_ids, sampled.completion_mask
    t = comp.shape[1]
    n_with_eos = 0
    for row, m, trunc in zip(comp.tolist(), mask.tolist(), sampled.truncated.tolist()):
        if eos in row:
            j = row.index(eos)
            n_with_eos += 1
            assert m == [1] * (j + 1) + [0] * (t - j - 1)  # 1 up to and including EOS, 0 after
            assert row[j + 1 :] == [pad] * (t - j - 1)
            assert not trunc
        else:
            assert m == [1] * t
            assert trunc  # no EOS within max_new_tokens
    # the check above is not vacuous: both kinds of row occur, and EOS is not always the last slot
    assert 0 < n_with_eos < len(mask)
    assert (mask.sum(1) < t).any()
    assert sampled.truncated.sum().item() == len(mask) - n_with_eos


def test_texts_are_the_decoded_tokens_without_specials(sampled, tok):
    for row, m, text in zip(sampled.completion_ids, sampled.completion_mask, sampled.texts):
        assert text == tok.decode(row[m.bool()], skip_special_tokens=True)
        assert "<eos>" not in text and "<pad>" not in text


def test_sampling_is_reproducible_with_a_generator(model, tok, sampled):
    g = torch.Generator().manual_seed(0)
    again = sample(model, tok, PROMPTS, n=8, max_new_tokens=24, temperature=2.0, generator=g)
    assert torch.equal(again.completion_ids, sampled.completion_ids)


def test_completion_logprobs_match_an_unpadded_forward(model, sampled):
    logp = completion_logprobs(model, sampled)
    assert logp.shape == sampled.completion_ids.shape
    with torch.no_grad():
        for i in range(logp.shape[0]):
            prompt = sampled.prompt_ids[i][sampled.prompt_mask[i].bool()]
            comp = sampled.completion_ids[i][sampled.completion_mask[i].bool()]
            ids = torch.cat([prompt, comp])[None]
            logits = model(input_ids=ids).logits[0].float()
            # the logit at position p predicts token p + 1: completion token j sits at len(prompt) + j
            want = torch.log_softmax(logits[len(prompt) - 1 : -1], -1).gather(-1, comp[:, None]).squeeze(-1)
            got = logp[i, : len(comp)]
            assert torch.allclose(got, want, atol=1e-4), (i, (got - want).abs().max())


def test_completion_logprobs_carry_gradients(model, sampled):
    model.zero_grad()
    logp = completion_logprobs(model, sampled)
    (logp * sampled.completion_mask).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    model.zero_grad()


# ----------------------------------------------------------------------------- the decode loop's shortcuts
MORE = ["12+34=", "1234+5678=", "999-1=", "7*8=", "100-99=", "5+5=", "31+4=", "2*21="]


@pytest.fixture(scope="module")
def eos_model(model, tok):
    """``model`` with its EOS logit row tripled: greedy rows then end after 1, 6, 7, 15 tokens or
    never (16), so rows leave the decode batch at different steps."""
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        m.lm_head.weight[tok.eos_token_id] *= 3.0
    return m


def reference_greedy(model, tok, prompts, max_new_tokens):
    """Greedy decoding the plain way: the whole batch, no KV cache, one full forward per token."""
    from tasks.generation import encode_prompts

    ids, mask = encode_prompts(tok, prompts)
    done = torch.zeros(len(prompts), dtype=torch.bool)
    out = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            nxt = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, tok.pad_token_id), nxt)
            out.append(nxt)
            done = done | (nxt == tok.eos_token_id)
            if done.all():
                break
            ids = torch.cat([ids, nxt[:, None]], 1)
            mask = torch.cat([mask, (~done).long()[:, None] | 1], 1)
    return torch.stack(out, 1)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])  # sdpa takes a ready 4D decode mask, eager the 2D one
def test_greedy_equals_a_full_batch_cacheless_decode(eos_model, tok, attn):
    import copy

    model = copy.deepcopy(eos_model)
    model.set_attn_implementation(attn)
    assert model.config._attn_implementation == attn
    got = sample(model, tok, MORE, max_new_tokens=16, greedy=True)
    want = reference_greedy(eos_model, tok, MORE, 16)
    assert torch.equal(got.completion_ids, want)
    lengths = got.completion_mask.sum(1).tolist()
    assert lengths == [1, 15, 16, 16, 6, 7, 1, 6]  # rows leave the batch at steps 1, 6, 7, 15
    assert got.truncated.tolist() == [False, False, True, True, False, False, False, False]
    eos = tok.eos_token_id
    for row, n, trunc in zip(got.completion_ids.tolist(), lengths, got.truncated.tolist()):
        assert (row[n - 1] == eos) != trunc
        assert row[n:] == [tok.pad_token_id] * (16 - n)


def count_forwards(model, fn) -> int:
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        fn()
    finally:
        handle.remove()
    return len(calls)


def test_no_forward_after_the_last_token(eos_model, tok):
    # 16 tokens need the prompt forward + 15 decode forwards, not 16
    assert count_forwards(eos_model, lambda: sample(eos_model, tok, MORE, max_new_tokens=16, greedy=True)) == 16
    assert count_forwards(eos_model, lambda: sample(eos_model, tok, MORE[:1], max_new_tokens=1, greedy=True)) == 1
    # rows 0 and 6 both end with their first token: the loop stops after the prompt forward
    both = lambda: sample(eos_model, tok, [MORE[0], MORE[6]], max_new_tokens=16, greedy=True)  # noqa: E731
    assert count_forwards(eos_model, both) == 1
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample(eos_model, tok, MORE[:1], max_new_tokens=0)


def test_sampling_after_rows_leave_draws_from_the_right_context(eos_model, tok):
    """Rows that ended at step 1 leave the batch; each survivor's second token must still be drawn
    from p(. | its own prompt, its own first token) at temperature T: checked for the commonest
    (prompt, first token) pair against the model's probabilities (4 sigma). On this 1-layer model the
    second token hardly depends on the prompt, so cache-row alignment is pinned by the greedy test
    above (a permuted cache fails it), not by this one."""
    prompts = [MORE[6], MORE[0]]  # p(EOS first) is high on both
    T = 2.5  # flat enough that the second token is a real draw
    g = torch.Generator().manual_seed(0)
    s = sample(eos_model, tok, prompts, n=1500, max_new_tokens=2, temperature=T, generator=g)
    first, second = s.completion_ids[:, 0], s.completion_ids[:, 1]
    eos = tok.eos_token_id
    assert 0.05 < (first == eos).float().mean() < 0.95  # many rows really left at step 1
    assert ((first == eos) == (s.completion_mask.sum(1) == 1)).all()
    assert (second[first == eos] == tok.pad_token_id).all()
    live = first != eos
    assert (s.completion_ids[live] < len(tok)).all()
    for p in range(2):
        rows = torch.arange(p * 1500, (p + 1) * 1500)
        x = torch.mode(first[rows][live[rows]]).values
        pick = rows[(first[rows] == x)]
        ids, _ = tok([prompts[p]], return_tensors="pt", add_special_tokens=False).values()
        with torch.no_grad():
            probs = torch.softmax(eos_model(input_ids=torch.cat([ids, x.view(1, 1)], 1)).logits[0, -1].float() / T, -1)
        freq = torch.bincount(second[pick], minlength=probs.numel()).float() / len(pick)
        top = probs.topk(3).indices
        sigma = (probs[top] * (1 - probs[top]) / len(pick)).sqrt()
        assert ((freq[top] - probs[top]).abs() < 4 * sigma + 1e-3).all(), (freq[top], probs[top], len(pick))
