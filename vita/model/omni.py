"""OmniModel: an LLM plus (later) encoders and projectors, returning a dict of losses.

The forward returns the *sum* of token cross-entropies and the number of supervised tokens,
so the engine can normalise by the token count of the whole global batch (all ranks, all
accumulation steps). That makes the loss independent of how a batch is split across ranks,
and world size 1 and 2 follow the same trajectory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


def count_label_tokens(labels: torch.Tensor) -> int:
    """Supervised positions after the causal shift (the first token is never predicted)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


class OmniModel(nn.Module):
    """Composite model. Module groups name what a stage can freeze, train or LoRA."""

    def __init__(self, llm: nn.Module) -> None:
        super().__init__()
        self.llm = llm

    @property
    def config(self):
        """The LLM's HF config (DeepSpeed and peft look for ``model.config``)."""
        return self.llm.config

    def module_groups(self) -> dict[str, nn.Module]:
        """Group name -> module, in the order the stage table lists them."""
        return {"llm": self.llm}

    def gradient_checkpointing_enable(self) -> None:
        self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, **_) -> dict:
        """Returns ``ce_sum`` (summed token cross-entropy, fp32), ``num_tokens`` and ``aux`` losses.

        With ``position_ids`` (packed rows, restarting per sample) the attention mask is left out so
        that transformers isolates the samples (block-diagonal causal attention)."""
        if position_ids is not None:
            attention_mask = None
        out = self.llm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        logits = out.logits[:, :-1].float()
        target = labels[:, 1:]
        ce_sum = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        return {"ce_sum": ce_sum, "num_tokens": (target != IGNORE_INDEX).sum(), "aux": {}}
