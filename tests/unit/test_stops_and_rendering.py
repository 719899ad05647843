"""Stop conditions (tasks/generation.py) and prompt rendering (tasks/models.py) on the tiny model.

- every eos id of the tokenizer and the generation config is a stop, once each, in order;
- a stop string ends a row at the token that completes it: mask, tokens and text agree, and the
  other rows are exactly what they are without the stop string;
- rendering formats: chat with and without the system turn, the system prompt folded into the
  user turn, a plain template; ``auto`` picks the fold for a template without a system role; a
  format that needs a template fails naming the key; ``rendering_id`` tells renderings apart.
"""

from __future__ import annotations

import pytest
import torch
from jinja2.exceptions import TemplateError

from tasks.config import SYSTEM_PROMPT, ModelConfig, PromptConfig, TinyModel
from tasks.generation import Stops, sample, stop_conditions
from tasks.models import (
    build_char_tokenizer,
    build_tiny,
    load_model,
    load_tokenizer,
    render_prompt,
    rendering_id,
)

pytestmark = pytest.mark.usefixtures("one_thread")

NO_SYSTEM = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{{ '<' + m['role'] + '>' + m['content'] + '\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<model>' }}{% endif %}"
)
WITH_SYSTEM = (
    "{% for m in messages %}{{ '[' + m['role'] + '] ' + m['content'] + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '[assistant] ' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = build_tiny(
        ModelConfig(
            tiny=TinyModel(
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=2,
                intermediate_size=64,
            )
        ),
        tmp_path_factory.mktemp("tiny"),
    )
    return load_model(d), load_tokenizer(d)


def test_stop_ids_are_every_eos_once(tiny):
    model, tok = tiny
    assert stop_conditions(model, tok) == Stops((tok.eos_token_id,))  # the embedded default: one eos
    model.generation_config.eos_token_id = [5, tok.eos_token_id, 7]
    try:
        assert stop_conditions(model, tok, ["</answer>"]) == Stops((tok.eos_token_id, 5, 7), ("</answer>",))
    finally:
        model.generation_config.eos_token_id = tok.eos_token_id


def test_stop_string_ends_the_row_where_it_completes(tiny):
    model, tok = tiny
    prompts = ["12+34=", "97-45=", "5+5="]
    free = sample(model, tok, prompts, max_new_tokens=16, greedy=True)
    assert free.truncated.all()  # the random model never emits eos here: only the string can stop it
    text = free.texts[0]
    stop = text[4:7]  # ends at character 7 of row 0 (one character = one token here)
    first = text.find(stop) + len(stop)
    got = sample(
        model, tok, prompts, max_new_tokens=16, greedy=True, stops=stop_conditions(model, tok, [stop])
    )
    assert got.texts[0] == text[:first] and got.texts[0].endswith(stop)
    assert int(got.completion_mask[0].sum()) == first and not got.truncated[0]
    assert got.completion_ids[0, :first].tolist() == free.completion_ids[0, :first].tolist()
    assert (got.completion_ids[0, first:] == tok.pad_token_id).all()
    for i in (1, 2):  # a row without the string is untouched
        if stop not in free.texts[i]:
            assert got.texts[i] == free.texts[i] and torch.equal(
                got.completion_ids[i], free.completion_ids[i]
            )


def test_render_formats():
    tok = build_char_tokenizer()
    assert render_prompt(tok, "1+1=") == "1+1="  # no template, default plain template: the raw prompt
    plain = PromptConfig(format="plain", plain_template="{system}\nQ: {prompt}\nA: ")
    assert render_prompt(tok, "1+1=", plain) == f"{SYSTEM_PROMPT}\nQ: 1+1=\nA: "
    with pytest.raises(ValueError, match="model.prompt.format: chat needs a chat template"):
        render_prompt(tok, "1+1=", PromptConfig(format="chat"))

    tok.chat_template = WITH_SYSTEM
    assert render_prompt(tok, "1+1=") == f"[system] {SYSTEM_PROMPT}\n[user] 1+1=\n[assistant] "
    assert render_prompt(tok, "1+1=", PromptConfig(format="chat_no_system")) == "[user] 1+1=\n[assistant] "
    ids = {
        f: rendering_id(tok, PromptConfig(format=f)) for f in ("chat", "chat_no_system", "chat_fold_system")
    }
    assert len(set(ids.values())) == 3 and ids["chat"] == rendering_id(tok)  # auto = chat here
    assert rendering_id(tok, PromptConfig(system_prompt="Be brief.")) != ids["chat"]

    tok.chat_template = NO_SYSTEM  # Gemma-style: a system turn raises
    with pytest.raises(TemplateError, match="System role not supported"):
        render_prompt(tok, "1+1=", PromptConfig(format="chat"))
    folded = f"<user>{SYSTEM_PROMPT}\n\n1+1=\n<model>"
    assert (
        render_prompt(tok, "1+1=")
        == folded
        == render_prompt(tok, "1+1=", PromptConfig(format="chat_fold_system"))
    )
    assert rendering_id(tok).startswith("chat_fold_system-")


def test_plain_template_must_name_the_prompt():
    with pytest.raises(ValueError, match="must contain {prompt}"):
        PromptConfig(format="plain", plain_template="Q: {question}")
    with pytest.raises(ValueError, match="only {prompt} and {system}"):
        PromptConfig(format="plain", plain_template="{prompt} {answer}")
