"""LoRA adapters (peft) for the SFT and GRPO stages (``<stage>.lora.enabled``).

Choices:

- ``peft.get_peft_model`` injects low-rank adapters into ``target_modules``; every other weight is
  frozen, so only adapter parameters reach the optimiser (:func:`trainable`). The trainer keeps
  working with the Hugging Face model *inside* the peft wrapper (``get_base_model()``): the
  adapters live in its layers, so sampling and log-probs take exactly the code path of a plain
  model, and the peft wrapper is kept only for what it alone can do (disable and merge).
- The GRPO reference model (``beta > 0``) is the same weights with the adapters switched off
  (:class:`Reference`): the base model, without a second copy in memory.
- Saving merges the adapters into the base weights (``merge_and_unload``) so ``models/<stage>`` is
  a plain HF folder that evaluation and the registry load like any other model.
"""

from __future__ import annotations

import torch

from tasks.config.training import LoraConfig


def add_adapters(model, cfg: LoraConfig):
    """Wrap ``model`` with fresh LoRA adapters (B = 0, so the output is unchanged at first)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    missing = [
        m for m in cfg.target_modules if not any(n.split(".")[-1] == m for n, _ in model.named_modules())
    ]
    if missing:
        raise ValueError(f"lora.target_modules: no module named {missing[0]!r} in {type(model).__name__}")
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
        bias="none",
    )
    return get_peft_model(model, peft_cfg)


def trainable(model) -> list[torch.nn.Parameter]:
    """The parameters the optimiser updates (all of a plain model; only the adapters under LoRA)."""
    return [p for p in model.parameters() if p.requires_grad]


class Reference:
    """The frozen base model as a callable: the policy's forward with its adapters disabled.

    Used where a reference model is called (``model(input_ids=..., ...)``); it never tracks gradients.
    """

    def __init__(self, peft_model):
        self.peft_model = peft_model

    def __call__(self, **inputs):
        with torch.no_grad(), self.peft_model.disable_adapter():
            return self.peft_model.get_base_model()(**inputs)


def merged(peft_model):
    """The base model with the adapters folded into its weights (W + alpha/r * B @ A), peft removed."""
    return peft_model.merge_and_unload()
