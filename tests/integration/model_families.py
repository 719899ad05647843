"""Hub-shaped model folders built locally (no downloads), one per model family the pipeline meets.

Each family is a random tiny causal LM saved with ``save_pretrained`` next to a byte-level BPE
tokenizer trained (``tokenizers``) on a slice of ``../shared/data/gsm8k``, with the family's special
tokens, chat template and ``generation_config`` stop ids, shaped like the real ones:

- ``qwen2``: Qwen2 model, ChatML template that injects a default system prompt when none is given;
  tokenizer eos ``<|im_end|>`` (stop ids ``<|im_end|>``, ``<|endoftext|>``);
- ``llama3``: Llama model, header template; tokenizer eos ``<|end_of_text|>`` but turns end with
  ``<|eot_id|>``: the generation config lists both (the Llama-3-Instruct case);
- ``gemma``: Gemma model (not a lean-decoder architecture: the HF forward path), template without
  a system role (raises "System role not supported"); eos ``<eos>``, turns end with
  ``<end_of_turn>``, both in the generation config;
- ``base``: Mistral model without a chat template, eos ``</s>`` only.

``END_OF_TURN`` names, per family, the stop token that ends an assistant turn.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    GenerationConfig,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

SHARED = Path(__file__).resolve().parents[3] / "shared"
GSM8K = SHARED / "data" / "gsm8k" / "train.jsonl"
FAMILIES = ("qwen2", "llama3", "gemma", "base")

QWEN_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for m in messages %}{%- if m['role'] != 'system' %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA_TEMPLATE = (
    "{{- bos_token }}{%- for m in messages %}"
    "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

# family -> (specials, bos, eos, pad, stop tokens in generation_config, chat template)
SPEC = {
    "qwen2": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        None,
        "<|im_end|>",
        "<|endoftext|>",
        ["<|im_end|>", "<|endoftext|>"],
        QWEN_TEMPLATE,
    ),
    "llama3": (
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|end_of_text|>",
        ["<|end_of_text|>", "<|eot_id|>"],
        LLAMA_TEMPLATE,
    ),
    "gemma": (
        ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        "<bos>",
        "<eos>",
        "<pad>",
        ["<eos>", "<end_of_turn>"],
        GEMMA_TEMPLATE,
    ),
    "base": (["<s>", "</s>", "<unk>"], "<s>", "</s>", "</s>", ["</s>"], None),
}
END_OF_TURN = {"qwen2": "<|im_end|>", "llama3": "<|eot_id|>", "gemma": "<end_of_turn>", "base": "</s>"}


def corpus(n: int = 400) -> list[str]:
    """Questions and answers of the first ``n`` GSM8K rows (fails loudly if the data is missing)."""
    if not GSM8K.is_file():
        raise FileNotFoundError(
            f"{GSM8K}: the model-family tests need ../shared/data/gsm8k beside the checkout"
        )
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[:n]]
    return [r["question"] for r in rows] + [r["answer"] for r in rows]


def bpe_tokenizer(texts: list[str], specials: list[str], vocab_size: int = 512) -> Tokenizer:
    """A byte-level BPE (every byte covered, so any text round-trips) with ``specials`` as tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def model_config(family: str, vocab: int, ids: dict[str, int | None], hidden: int = 64, layers: int = 2):
    common = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=2 * hidden,
        max_position_embeddings=1024,
        **ids,
    )
    if family == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=True)
    if family == "llama3":
        return LlamaConfig(**common, tie_word_embeddings=False)
    if family == "gemma":
        return GemmaConfig(**common, head_dim=hidden // 2, hidden_activation="gelu_pytorch_tanh")
    return MistralConfig(**common, sliding_window=None)


def build_family(family: str, out: Path, texts: list[str], seed: int = 0) -> Path:
    """Save the family's model + tokenizer + generation config into ``out`` (a hub-shaped folder)."""
    specials, bos, eos, pad, stops, template = SPEC[family]
    raw = bpe_tokenizer(texts, specials)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=bos, eos_token=eos, pad_token=pad, model_max_length=1024
    )
    if template:
        tok.chat_template = template
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(family, len(tok), ids))
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=[tok.convert_tokens_to_ids(s) for s in stops] if len(stops) > 1 else tok.eos_token_id,
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
