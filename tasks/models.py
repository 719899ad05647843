"""Load a model and tokenizer by hub id or local path; build the tiny embedded default.

Every stage loads models through :func:`load_model` / :func:`load_tokenizer`, so the embedded
default and a hub model follow one code path. The embedded default is a Qwen2 causal LM built from
a config, with a character-level tokenizer built locally with the ``tokenizers`` library, both saved
with ``save_pretrained``. Characters suit arithmetic (one digit = one token); the reasoning tags
``<think>``, ``</think>``, ``<answer>``, ``</answer>`` are single tokens so the format costs four
decode steps, not thirty.

A ``models/base`` folder that holds only ``r1flow_source.json`` points at a hub model (id and
revision) instead of a copy of its weights: a 70B model is not duplicated onto local disk.

Prompts are rendered by :func:`render_prompt`: a tokenizer with a chat template gets a system
message asking for the think/answer format; the embedded tokenizer has none and sees the raw prompt.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config

from tasks.config.base import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from tasks.config.model import ModelConfig

POINTER = "r1flow_source.json"
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
TAGS = [THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE]
SYSTEM_PROMPT = (
    "Think step by step inside <think></think>, then give only the final answer inside "
    "<answer></answer>."
)


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """Printable ASCII + newline as single characters, the four tags as whole tokens."""
    chars = list(dict.fromkeys(string.printable))
    vocab = {tok: i for i, tok in enumerate(SPECIALS + TAGS + chars)}
    # BPE with no merges splits text into characters; Fuse joins them back without spaces.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.add_special_tokens(SPECIALS)
    tok.add_tokens(TAGS)  # ordinary (non-special) tokens: decode keeps them
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        padding_side="left",
        model_max_length=4096,
    )


def build_tiny(cfg: ModelConfig, out_dir: str | Path) -> Path:
    """Build and save the embedded default model + tokenizer (random init, seeded)."""
    out = Path(out_dir)
    tok = build_char_tokenizer()
    t = cfg.tiny
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=t.hidden_size,
        num_hidden_layers=t.num_hidden_layers,
        num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_key_value_heads,
        intermediate_size=t.intermediate_size,
        max_position_embeddings=t.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_pointer(cfg: ModelConfig, out_dir: str | Path) -> Path:
    """For a hub model: record id@revision instead of copying the weights."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / POINTER).write_text(json.dumps({"name_or_path": cfg.name_or_path, "revision": cfg.revision}))
    return out


def resolve(name_or_path: str | Path) -> tuple[str, str | None]:
    """Map a local pointer folder to (hub id, revision); anything else passes through."""
    p = Path(name_or_path)
    if (p / POINTER).is_file() and not (p / "config.json").is_file():
        src = json.loads((p / POINTER).read_text())
        return src["name_or_path"], src.get("revision")
    return str(name_or_path), None


def load_tokenizer(name_or_path: str | Path, revision: str | None = None):
    ident, rev = resolve(name_or_path)
    if _is_plain_fast_tokenizer(ident):
        # AutoTokenizer picks the tokenizer class from the *model* type (qwen2) and would graft
        # Qwen2's byte-level pre-tokenizer onto our character vocabulary, dropping spaces.
        tok = PreTrainedTokenizerFast.from_pretrained(ident)
    else:
        tok = AutoTokenizer.from_pretrained(ident, revision=revision or rev)
    tok.padding_side = "left"  # batched generation needs the prompts flush right
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _is_plain_fast_tokenizer(path: str) -> bool:
    cfg = Path(path) / "tokenizer_config.json"
    if not cfg.is_file():
        return False
    cls = json.loads(cfg.read_text()).get("tokenizer_class")
    return cls in ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_model(name_or_path: str | Path, revision: str | None = None, dtype: torch.dtype = torch.float32):
    ident, rev = resolve(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(ident, revision=revision or rev, dtype=dtype)
    return model


def render_prompt(tokenizer, prompt: str) -> str:
    """The text the model is conditioned on for one problem."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
