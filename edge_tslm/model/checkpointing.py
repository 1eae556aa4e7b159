"""Activation checkpointing for training: keep each block's input, recompute its insides in the backward.

Costs about one more forward per step; in exchange a step's memory no longer holds every layer's
activations, so it barely grows with the prompt's text (LM layers) or the series' length (encoder blocks).
The LM's layers use transformers' own checkpointing; our encoder blocks use torch.utils.checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class CheckpointableBlock(nn.Module):
    """A block whose activations are recomputed in the backward while `gradient_checkpointing` is on."""

    gradient_checkpointing: bool = False

    def recomputes(self) -> bool:
        """Will a call now be checkpointed (switched on, training, and building a graph)?"""
        return self.gradient_checkpointing and self.training and torch.is_grad_enabled()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.recomputes():
            return checkpoint(super().__call__, *args, use_reentrant=False, **kwargs)
        return super().__call__(*args, **kwargs)


def set_activation_checkpointing(model: nn.Module, lm: nn.Module, enabled: bool) -> None:
    """Switch checkpointing on or off for the LM's decoder layers and every CheckpointableBlock of the model.

    Flamingo's gated cross-attention runs in a pre-hook of its decoder layer, so it is recomputed with
    that layer. Non-reentrant checkpointing: gradients reach the trainable parts the LM's inputs and
    hooks bring in (new token rows, cross-attention, LoRA) without forcing the frozen embeddings to track.
    """
    for m in model.modules():
        if isinstance(m, CheckpointableBlock):
            m.gradient_checkpointing = enabled
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    # transformers >= 5.25 names it activation checkpointing; older releases only have gradient_checkpointing_*
    if enabled:
        on = getattr(base, "activation_checkpointing_enable", None)
        if on is not None:
            on(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        off = getattr(base, "activation_checkpointing_disable", None) or base.gradient_checkpointing_disable
        off()
