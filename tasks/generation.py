"""Batched sampling from a causal LM, shared by GRPO rollouts and evaluation.

Choices:
- Prompts are left-padded so every row's next token sits in the last column; position ids are
  derived from the attention mask so padding does not shift positions.
- A lean KV-cached decode loop instead of ``model.generate``: one forward per new token, sampling
  on the last logits. On tiny models the per-token Python overhead of ``generate`` (logits
  processors, stopping criteria, cache bookkeeping) dominates the math.
- Stop conditions (:func:`stop_conditions`): every eos id of the tokenizer and of the model's
  ``generation_config`` (a list for Llama-3-Instruct / gemma-2-it, whose end-of-turn token is not
  the tokenizer's eos), plus optional stop strings (``model.stop_strings``), matched on the decoded
  tail of each row after every token. A row ends at the token that completes a stop; the mask
  covers the tokens up to and including it, and the text is the decode of exactly those tokens
  (special tokens stripped), cut after the stop string when a string stopped it (the text keeps the
  string, as ``generate`` does). Rollouts, evaluation and benchmarks all reach this one function.
- Rows that stop leave the decode batch (their cache rows are dropped; ``rows`` maps the active
  batch back to output rows), so a step costs only the unfinished rows. No forward runs after the
  last token (the one at ``max_new_tokens`` or the one that finishes the last row).
- The KV cache is pre-allocated per layer to prompt length + ``max_new_tokens`` and written in
  place (``_BufferLayer``): ``DynamicCache`` re-concatenates the whole cache every step.
- Sampling is still one draw per active row from softmax(logits / T); which generator draws land
  on which row depends on the batch, so a seeded run differs from the full-batch loop's stream,
  but greedy decoding returns exactly the tokens of a full-batch decode.
- The forward itself is ``tasks.lean_decode.LeanDecoder`` when the model is a supported
  Llama-family layout (Qwen2/Llama/Mistral, fp32, plain layers, default rope, no hooks): the same
  math as HF in a few torch ops per layer on the live weights (on the tiny model at 1 thread,
  ~1.4x faster per decode step at 64 rows, ~1.7x at 8 rows: the rest is matmul and cache reads).
  Anything else keeps the HF forward (``_HFDecoder``); ``engine`` forces either. Both sit behind
  one prefill/select/step interface, so the sampling loop is shared.
- Runs under ``torch.inference_mode`` (less per-op bookkeeping than ``no_grad``) and returns
  ordinary tensors.
- Returns token ids, not only text, so the trainer scores exactly the tokens that were sampled
  (re-tokenising decoded text can produce a different split).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from tasks.lean_decode import LeanDecoder, unsupported_reason


@dataclass
class Samples:
    prompt_ids: torch.Tensor  # [B, P] left-padded prompts (each prompt repeated n times)
    prompt_mask: torch.Tensor  # [B, P]
    completion_ids: torch.Tensor  # [B, T] right-padded with pad id
    completion_mask: torch.Tensor  # [B, T] 1 up to and including the stop token
    texts: list[str]  # decoded completions, special tokens stripped
    truncated: torch.Tensor  # [B] bool: hit max_new_tokens without a stop

    def select(self, idx: list[int]) -> Samples:
        """The rows ``idx`` (e.g. the groups kept by dynamic sampling, or one micro-batch)."""
        t = torch.tensor(idx, dtype=torch.long, device=self.prompt_ids.device)
        return Samples(
            self.prompt_ids[t],
            self.prompt_mask[t],
            self.completion_ids[t],
            self.completion_mask[t],
            [self.texts[i] for i in idx],
            self.truncated[t],
        )


@dataclass(frozen=True)
class Stops:
    """What ends a completion: any of ``ids`` sampled, or any of ``strings`` in the decoded tail."""

    ids: tuple[int, ...]
    strings: tuple[str, ...] = ()


def stop_conditions(model, tokenizer, stop_strings=()) -> Stops:
    """Every eos id of the tokenizer and the model's generation config (order kept, no repeats)."""
    gen = getattr(getattr(model, "module", model), "generation_config", None)  # DDP wraps as .module
    ids: list[int] = []
    for src in (tokenizer.eos_token_id, getattr(gen, "eos_token_id", None)):
        for i in src if isinstance(src, (list, tuple)) else [src]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError(
            "no stop token: the tokenizer has no eos_token and generation_config no eos_token_id"
        )
    return Stops(tuple(ids), tuple(stop_strings))


def _string_stops(tokenizer, comp, rows, t: int, strings: tuple[str, ...]) -> torch.Tensor:
    """[active rows] bool: the decoded tail (enough tokens for the longest string, even at one
    byte per token) contains a stop string. A row is checked after every token, so the first hit
    is the token that completed the string."""
    window = 4 * max(len(x) for x in strings) + 2
    tails = tokenizer.batch_decode(comp[rows, max(0, t + 1 - window) : t + 1].tolist())
    return torch.tensor([any(x in tail for x in strings) for tail in tails], device=comp.device)


def _cut(text: str, strings: tuple[str, ...]) -> str:
    """``text`` up to the end of its first stop string (unchanged if none is in it)."""
    ends = [i + len(x) for x in strings if (i := text.find(x)) >= 0]
    return text[: min(ends)] if ends else text


def encode_prompts(tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


def _cache_kwarg(model) -> str:
    # transformers >= 5.x renames past_key_values to cache (the old name warns on every call).
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class _BufferLayer(DynamicLayer):
    """A cache layer with room for ``capacity`` positions, filled in place (no per-step concat).

    ``keys``/``values`` are the used prefix ``[B, H, length, D]`` (views of the buffers), so code
    that reads a ``DynamicLayer`` reads the same thing here.
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:  # type: ignore[has-type]  # set by transformers' DynamicLayer
            b, h, _, d = key_states.shape
            self.device = key_states.device
            self._k = key_states.new_empty(b, h, self.capacity, d)
            self._v = value_states.new_empty(b, h, self.capacity, value_states.shape[-1])
            self.is_initialized = True
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise ValueError(f"KV buffer full: {end} positions > capacity {self.capacity}")
        self._k[:, :, self.length : end] = key_states
        self._v[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if not self.is_initialized:
            return
        # Copy only the used prefix into fresh buffers for the kept rows.
        k = self._k.new_empty(len(indices), *self._k.shape[1:])
        v = self._v.new_empty(len(indices), *self._v.shape[1:])
        k[:, :, : self.length] = self._k[indices, :, : self.length]
        v[:, :, : self.length] = self._v[indices, :, : self.length]
        self._k, self._v = k, v
        self.keys, self.values = k[:, :, : self.length], v[:, :, : self.length]


class _BufferCache(DynamicCache):
    """A ``DynamicCache`` whose layers are ``_BufferLayer``s of one capacity."""

    def __init__(self, capacity: int):
        Cache.__init__(self, layer_class_to_replicate=functools.partial(_BufferLayer, capacity))


class _HFDecoder:
    """The HF forward behind ``LeanDecoder``'s interface (prefill / select / step)."""

    def __init__(self, model, capacity: int):
        self.model, self.kv = model, _BufferCache(capacity)
        self.cache = {_cache_kwarg(model): self.kv}
        self.capacity = capacity

    def prefill(self, ids, mask, positions):
        self.width = ids.shape[1]
        # The attention mask of every step is a prefix of this one (decode columns are all 1). With
        # SDPA it goes in as the ready 4D boolean mask [B, 1, 1, kv] a one-token query needs, which
        # spares transformers rebuilding the causal mask from the 2D one at every step.
        self.attn = torch.cat([mask, mask.new_ones(mask.shape[0], self.capacity - self.width)], dim=1)
        # (a DDP/DeepSpeed wrapper has no config: it keeps the 2D mask)
        if getattr(getattr(self.model, "config", None), "_attn_implementation", None) == "sdpa":
            self.attn = self.attn.bool()[:, None, None, :]
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **self.cache
        )
        return out.logits[:, -1, :]

    def select(self, keep):
        self.attn = self.attn[keep]
        self.kv.batch_select_indices(keep)

    def step(self, tok, pos, t):
        out = self.model(
            input_ids=tok[:, None],
            attention_mask=self.attn[..., : self.width + t + 1],
            position_ids=pos,
            use_cache=True,
            **self.cache,
        )
        return out.logits[:, -1, :]


def _decoder(model, engine: str, capacity: int):
    if engine not in ("auto", "hf", "lean"):
        raise ValueError(f"engine must be 'auto', 'hf' or 'lean', got {engine!r}")
    why = "engine='hf'" if engine == "hf" else unsupported_reason(model, capacity)
    if why is None:
        return LeanDecoder(model, capacity)
    if engine == "lean":
        raise ValueError(f"engine='lean' cannot run this model: {why}")
    return _HFDecoder(model, capacity)


def sample(
    model,
    tokenizer,
    prompts: list[str],
    n: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | list[torch.Generator] | None = None,
    engine: str = "auto",
    stops: Stops | None = None,
) -> Samples:
    """Draw ``n`` completions per prompt (rows grouped: prompt i owns rows i*n .. i*n+n-1).

    ``engine``: "auto" (the lean decoder when the model is supported, else the HF forward), "hf"
    (always the HF forward) or "lean" (ValueError naming the reason when unsupported).
    ``stops``: default ``stop_conditions(model, tokenizer)`` (every eos id, no stop strings).
    """
    s = _sample(model, tokenizer, prompts, n, max_new_tokens, temperature, greedy, generator, engine, stops)
    # The trainer differentiates through these ids (the embedding saves them for backward), which
    # inference tensors refuse: copy them out of inference mode.
    return Samples(
        s.prompt_ids.clone(),
        s.prompt_mask.clone(),
        s.completion_ids.clone(),
        s.completion_mask.clone(),
        s.texts,
        s.truncated.clone(),
    )


def _draw(probs: torch.Tensor, generator, owner: torch.Tensor) -> torch.Tensor:
    """One token per active row; ``generator`` is one generator, or one per prompt (``owner[i]``
    is row i's prompt), so a prompt's draws do not depend on which other prompts share the batch."""
    if not isinstance(generator, list):
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    tok = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    for p in owner.unique().tolist():
        sel = (owner == p).nonzero().squeeze(-1)
        tok[sel] = torch.multinomial(probs[sel], 1, generator=generator[p]).squeeze(-1)
    return tok


@torch.inference_mode()
def _sample(
    model,
    tokenizer,
    prompts: list[str],
    n: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | list[torch.Generator] | None = None,
    engine: str = "auto",
    stops: Stops | None = None,
) -> Samples:
    """``sample``'s decode loop; its tensors are inference tensors."""
    stops = stops or stop_conditions(model, tokenizer)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    device = next(model.parameters()).device
    ids, mask = encode_prompts(tokenizer, prompts)
    ids, mask = ids.repeat_interleave(n, 0).to(device), mask.repeat_interleave(n, 0).to(device)
    pad, stop_ids = tokenizer.pad_token_id, torch.tensor(stops.ids, device=device)
    batch, width = ids.shape
    dec = _decoder(model, engine, width + max_new_tokens)
    was_training = model.training
    model.eval()

    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = dec.prefill(ids, mask, positions)
    next_pos = positions[:, -1:] + 1
    rows = torch.arange(batch, device=device)  # active batch row -> output row
    comp = torch.full((batch, max_new_tokens), pad, dtype=torch.long, device=device)
    stop_at = torch.full((batch,), -1, dtype=torch.long, device=device)  # the token that ended a row
    steps = 0
    for t in range(max_new_tokens):
        logits = logits.float()
        if greedy:
            tok = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            tok = _draw(probs, generator, rows // n)
        comp[rows, t] = tok
        ended = torch.isin(tok, stop_ids)
        if stops.strings:
            ended |= _string_stops(tokenizer, comp, rows, t, stops.strings)
        stop_at[rows[ended]] = t
        steps = t + 1
        if steps == max_new_tokens:
            break  # no forward for a token that will never be sampled
        live = ~ended
        if not bool(live.all()):
            keep = live.nonzero().squeeze(-1)
            if keep.numel() == 0:
                break
            rows, tok, next_pos = rows[keep], tok[keep], next_pos[keep]
            dec.select(keep)
        logits = dec.step(tok, next_pos, t)
        next_pos = next_pos + 1

    model.train(was_training)
    return _finish(tokenizer, ids, mask, comp[:, :steps], stop_at, stops)


def _finish(tokenizer, ids, mask, comp: torch.Tensor, stop_at: torch.Tensor, stops: Stops) -> Samples:
    """The decoded rows: the mask is 1 for every token up to and including the one that stopped the
    row (pad after it); the text is cut at a stop string. ``stop_at`` -1 = ran to the token limit."""
    steps = comp.shape[1]
    truncated = stop_at < 0
    last = torch.where(truncated, steps - 1, stop_at)
    comp_mask = (torch.arange(steps, device=comp.device)[None] <= last[:, None]).long()
    texts = tokenizer.batch_decode(comp, skip_special_tokens=True)  # rows hold pad after their stop
    if stops.strings:
        texts = [_cut(x, stops.strings) for x in texts]
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
        return logp, token_entropy(logprobs)


def token_entropy(logprobs: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's next-token distribution: [B, T, V] log-probs (a log_softmax)
    -> [B, T] nats, H = -sum_v p_v log p_v.

    Tokens a log-prob of -inf forbids have p = 0 and contribute 0 (log p is clamped to the dtype's
    most negative finite number, so 0 * -inf never appears). 16-bit inputs are upcast to float32:
    in bfloat16 the sum over a large vocabulary would lose most of its digits.
    """
    if logprobs.dtype in (torch.float16, torch.bfloat16):
        logprobs = logprobs.float()
    return -(logprobs.exp() * logprobs.clamp(min=torch.finfo(logprobs.dtype).min)).sum(-1)
