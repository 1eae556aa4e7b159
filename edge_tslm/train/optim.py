"""AdamW with a learning rate per part (encoder, fusion/LoRA, new token rows) and warmup + cosine decay."""

from __future__ import annotations

import math

import torch


def param_groups(model: torch.nn.Module, lr_encoder: float, lr_fusion: float, lr_tokens: float, weight_decay: float):
    """Encoder-side parts, the parts inside the LM (cross-attention, LoRA), the new token rows."""
    groups: dict[str, list[torch.nn.Parameter]] = {"encoder": [], "fusion": [], "tokens": [], "no_decay": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("new_tokens"):
            groups["tokens"].append(p)
        elif p.ndim < 2 or name.endswith(("attn_gate", "ff_gate")) or name.endswith("latents"):
            groups["no_decay"].append(p)
        elif name.startswith(("xattn", "lm.")):
            groups["fusion"].append(p)
        else:
            groups["encoder"].append(p)
    return [
        {"params": groups["encoder"], "lr": lr_encoder, "weight_decay": weight_decay, "name": "encoder"},
        {"params": groups["fusion"], "lr": lr_fusion, "weight_decay": weight_decay, "name": "fusion"},
        {"params": groups["tokens"], "lr": lr_tokens, "weight_decay": 0.0, "name": "tokens"},
        {"params": groups["no_decay"], "lr": lr_encoder, "weight_decay": 0.0, "name": "no_decay"},
    ]


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.1) -> float:
    """Multiplier on each group's base lr."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
