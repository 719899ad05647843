"""Batched sampling from a causal LM, shared by GRPO rollouts and evaluation.

Choices:
- Prompts are left-padded so every row's next token sits in the last column; position ids are
  derived from the attention mask so padding does not shift positions.
- A lean KV-cached decode loop instead of ``model.generate``: one forward per new token over the
  whole batch, sampling on the last logits, and rows that have emitted EOS keep receiving pad.
  It stops as soon as every row is done. On tiny models the per-token Python overhead of
  ``generate`` (logits processors, stopping criteria, cache bookkeeping) dominates the math.
- Returns token ids, not only text, so the trainer scores exactly the tokens that were sampled
  (re-tokenising decoded text can produce a different split).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import DynamicCache


@dataclass
class Samples:
    prompt_ids: torch.Tensor  # [B, P] left-padded prompts (each prompt repeated n times)
    prompt_mask: torch.Tensor  # [B, P]
    completion_ids: torch.Tensor  # [B, T] right-padded with pad id
    completion_mask: torch.Tensor  # [B, T] 1 up to and including EOS
    texts: list[str]  # decoded completions, special tokens stripped
    truncated: torch.Tensor  # [B] bool: hit max_new_tokens without EOS

    def select(self, idx: list[int]) -> Samples:
        """The rows ``idx`` (e.g. the groups kept by dynamic sampling, or one micro-batch)."""
        t = torch.tensor(idx, dtype=torch.long, device=self.prompt_ids.device)
        return Samples(
            self.prompt_ids[t], self.prompt_mask[t], self.completion_ids[t], self.completion_mask[t],
            [self.texts[i] for i in idx], self.truncated[t],
        )


def encode_prompts(tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


def _cache_kwarg(model) -> str:
    # transformers >= 5.x renames past_key_values to cache (the old name warns on every call).
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompts: list[str],
    n: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Samples:
    """Draw ``n`` completions per prompt (rows grouped: prompt i owns rows i*n .. i*n+n-1)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids, mask = encode_prompts(tokenizer, prompts)
    ids, mask = ids.repeat_interleave(n, 0).to(device), mask.repeat_interleave(n, 0).to(device)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    batch = ids.shape[0]

    cache = {_cache_kwarg(model): DynamicCache()}
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    attn = mask
    out = model(input_ids=ids, attention_mask=attn, position_ids=positions, use_cache=True, **cache)
    next_pos = positions[:, -1:] + 1
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens = []
    for _ in range(max_new_tokens):
        logits = out.logits[:, -1, :].float()
        if greedy:
            tok = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        tokens.append(tok)
        done = done | (tok == eos)
        if bool(done.all()):
            break
        attn = torch.cat([attn, torch.ones(batch, 1, dtype=attn.dtype, device=device)], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=attn, position_ids=next_pos, use_cache=True, **cache)
        next_pos = next_pos + 1

    comp = torch.stack(tokens, dim=1)
    # Mask: 1 for every token up to and including the first EOS.
    is_eos = comp == eos
    after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
    comp_mask = (~after_eos).long()
    comp = torch.where(after_eos, torch.full_like(comp, pad), comp)
    texts = tokenizer.batch_decode(comp, skip_special_tokens=True)
    truncated = ~is_eos.any(1)
    model.train(was_training)
    return Samples(ids, mask, comp, comp_mask, texts, truncated)


def completion_logprobs(model, samples: Samples, with_entropy: bool = False):
    """Per-token log-probabilities of the sampled completion tokens under ``model``: [B, T].

    With ``with_entropy`` also the per-token entropy of the model's distribution (no gradient: it
    is a metric), as ``(logp, entropy)``.
    """
    ids = torch.cat([samples.prompt_ids, samples.completion_ids], dim=1)
    mask = torch.cat([samples.prompt_mask, samples.completion_mask], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    t = samples.completion_ids.shape[1]
    logits = logits[:, -t - 1 : -1, :].float()  # logits at position i predict token i+1
    logprobs = torch.log_softmax(logits, dim=-1)
    logp = logprobs.gather(-1, samples.completion_ids[..., None]).squeeze(-1)
    if not with_entropy:
        return logp
    with torch.no_grad():
        # clamp: a -inf log-prob (a masked-out token) has p = 0 and must add 0, not NaN
        entropy = -(logprobs.exp() * logprobs.clamp(min=-1e4)).sum(-1)
    return logp, entropy
