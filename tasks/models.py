"""Load a model and tokenizer by hub id or local path; build the tiny embedded default.

Every stage loads models through :func:`load_model` / :func:`load_tokenizer`, so the embedded
default and a hub model follow one code path. The embedded default is a Qwen2 causal LM built from
a config, with a character-level tokenizer built locally with the ``tokenizers`` library, both saved
with ``save_pretrained``. Characters suit arithmetic (one digit = one token); the reasoning tags
``<think>``, ``</think>``, ``<answer>``, ``</answer>`` are single tokens so the format costs four
decode steps, not thirty.

A ``models/base`` folder that holds only ``r1flow_source.json`` points at a hub model (id, the
requested revision and the commit sha ``base`` resolved it to; every stage loads the sha) instead
of a copy of its weights: a 70B model is not duplicated onto local disk.

Prompts are rendered by :func:`render_prompt` as ``model.prompt`` says (the same function in SFT,
GRPO rollouts and evaluation; :func:`rendering_id` names the rendering for an eval spec):
- ``chat``: the tokenizer's chat template with a system turn holding ``system_prompt``;
- ``chat_no_system``: the template with the user turn only (for templates that inject their own
  system prompt, or models prompted without one);
- ``chat_fold_system``: ``system_prompt``, a blank line and the problem in one user turn, for
  templates without a system role (Gemma's raises "System role not supported");
- ``plain``: ``plain_template`` filled with ``{system}`` and ``{prompt}``, for base models;
- ``auto`` (default): ``chat``, or ``chat_fold_system`` when the template rejects a system turn,
  when the tokenizer has a chat template; else ``plain``. The embedded tokenizer has none, and the
  default plain template is ``{prompt}``: it sees the raw prompt.
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config

from tasks.config.base import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from tasks.config.model import SYSTEM_PROMPT, ModelConfig, PromptConfig

POINTER = "r1flow_source.json"
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
TAGS = [THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE]
__all__ = ["SYSTEM_PROMPT"]  # re-exported: the default system prompt lives in tasks.config


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


def write_pointer(cfg: ModelConfig, out_dir: str | Path, sha: str) -> Path:
    """For a hub model: record id, requested revision and resolved commit instead of the weights."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = {"name_or_path": cfg.name_or_path, "revision": cfg.revision, "sha": sha}
    (out / POINTER).write_text(json.dumps(src, indent=1) + "\n")
    return out


def resolve(name_or_path: str | Path) -> tuple[str, str | None]:
    """Map a local pointer folder to (hub id, commit sha); anything else passes through."""
    p = Path(name_or_path)
    if (p / POINTER).is_file() and not (p / "config.json").is_file():
        src = json.loads((p / POINTER).read_text())
        return src["name_or_path"], src.get("sha") or src.get("revision")
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


def prompt_format(tokenizer, cfg: PromptConfig) -> str:
    """The concrete format ``cfg.format`` means for this tokenizer (``auto`` resolved)."""
    template = getattr(tokenizer, "chat_template", None)
    if cfg.format != "auto":
        if cfg.format != "plain" and not template:
            raise ValueError(
                f"model.prompt.format: {cfg.format} needs a chat template; this tokenizer has none "
                "(use plain or auto)"
            )
        return cfg.format
    if not template:
        return "plain"
    key = (template, cfg.system_prompt)
    if key not in _SYSTEM_OK:  # does the template accept a system turn? (Gemma's raises)
        from jinja2.exceptions import TemplateError

        try:
            _chat(
                tokenizer,
                [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": "x"}],
            )
            _SYSTEM_OK[key] = True
        except TemplateError:
            _SYSTEM_OK[key] = False
    return "chat" if _SYSTEM_OK[key] else "chat_fold_system"


_SYSTEM_OK: dict[tuple[str, str], bool] = {}


def _chat(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_prompt(tokenizer, prompt: str, cfg: PromptConfig | None = None) -> str:
    """The text the model is conditioned on for one problem (formats: module docstring)."""
    cfg = cfg or PromptConfig()
    fmt = prompt_format(tokenizer, cfg)
    if fmt == "plain":
        return cfg.plain_template.format(prompt=prompt, system=cfg.system_prompt)
    if fmt == "chat":
        return _chat(
            tokenizer, [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": prompt}]
        )
    if fmt == "chat_fold_system":
        return _chat(tokenizer, [{"role": "user", "content": f"{cfg.system_prompt}\n\n{prompt}"}])
    return _chat(tokenizer, [{"role": "user", "content": prompt}])


def rendering_id(tokenizer, cfg: PromptConfig | None = None) -> str:
    """``<format>-<12 hex>``: names the rendering (format, system prompt, template and a probe
    rendering), so two runs that condition the model differently never share an id."""
    cfg = cfg or PromptConfig()
    fmt = prompt_format(tokenizer, cfg)
    facts = {
        "format": fmt,
        "system_prompt": cfg.system_prompt,
        "template": cfg.plain_template if fmt == "plain" else tokenizer.chat_template,
        "probe": render_prompt(tokenizer, "What is 12+34?", cfg),
    }
    return f"{fmt}-{hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:12]}"


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
