"""Magnitude pruning of the adapter with torch.nn.utils.prune, made permanent.

    report = prune_(model, 0.5)                       # L1 unstructured, per tensor
    report = prune_(model, 0.25, structured=True)     # whole output rows (L1 norm), per tensor

Parts (the frozen LM is never pruned):
  "xattn"   the gated cross-attention blocks' attention projections (to_q, to_kv, to_out)
  "ffn"     feed-forward Linear layers: the xattn blocks' and the resampler's (Flamingo); the
            TransformerEncoder layers' linear1/linear2 (SoftPrompt)
  "encoder" the rest of the series encoder: patch/residual convolutions, attention projections
            (incl. nn.MultiheadAttention's in_proj_weight / out_proj), the SoftPrompt projector

Each tensor is pruned to ``sparsity`` on its own (so every layer keeps the same share), then
``prune.remove`` folds the mask in: no weight_orig / weight_mask is left and state-dict keys are unchanged.
Norms, gates, embeddings, latents and biases are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from edge_tslm.quantize.api import compression_record, is_quantized_module

PRUNE_PARTS = ("xattn", "ffn", "encoder")


@dataclass
class PruneReport:
    sparsity: float
    structured: bool
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)  # part -> tensors, weights, zeros, sparsity

    def to_dict(self) -> dict[str, Any]:
        return {"op": "prune", "sparsity": self.sparsity, "structured": self.structured, "parts": self.parts}


def _ffn_ids(model: nn.Module) -> set[int]:
    """ids of feed-forward Linear layers (xattn blocks, resampler, TransformerEncoder layers)."""
    ids: set[int] = set()
    for m in model.modules():
        ff = getattr(m, "ff", None)
        if isinstance(ff, nn.Sequential) and hasattr(m, "attn_gate"):  # GatedCrossAttention.ff
            ids.update(id(x) for x in ff if isinstance(x, nn.Linear))
        if type(m).__name__ == "PerceiverResampler":
            for _, ffn in m.layers:
                ids.update(id(x) for x in ffn if isinstance(x, nn.Linear))
        if isinstance(m, nn.TransformerEncoderLayer):
            ids.update({id(m.linear1), id(m.linear2)})
    return ids


def prunable(model: nn.Module, part: str) -> list[tuple[str, nn.Module, str]]:
    """(name, module, parameter name) of every tensor a part prunes; each module once (shared blocks too)."""
    if part not in PRUNE_PARTS:
        raise ValueError(f"unknown prune part {part!r}; choose from {PRUNE_PARTS}")
    ffn = _ffn_ids(model)
    roots = {
        "xattn": [("xattn", getattr(model, "xattn", None))],
        "ffn": [(n, getattr(model, n, None)) for n in ("xattn", "series_encoder", "soft_encoder")],
        "encoder": [(n, getattr(model, n, None)) for n in ("series_encoder", "soft_encoder")],
    }[part]
    out, seen = [], set()
    for prefix, root in roots:
        if root is None:
            continue
        for name, m in root.named_modules(prefix=prefix):
            if id(m) in seen:
                continue
            seen.add(id(m))
            if isinstance(m, nn.MultiheadAttention):
                if part == "encoder" and m.in_proj_weight is not None:
                    out.append((name, m, "in_proj_weight"))
                continue
            in_ffn = id(m) in ffn
            if part == "xattn":
                keep = isinstance(m, nn.Linear) and not in_ffn
            elif part == "ffn":
                keep = in_ffn
            else:
                keep = isinstance(m, (nn.Linear, nn.Conv1d)) and not in_ffn
            if keep:
                out.append((name, m, "weight"))
    return out


@torch.no_grad()
def prune_(
    model: nn.Module,
    sparsity: float,
    structured: bool = False,
    parts: tuple[str, ...] = PRUNE_PARTS,
    *,
    norm: int = 1,
) -> PruneReport:
    """Zero the smallest-magnitude weights (or output rows) of each tensor in ``parts``, permanently."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    for n, m in model.named_modules():
        if n and not n.startswith("lm.") and is_quantized_module(m):
            raise RuntimeError(f"{n} is already quantized: prune before quantizing (prune_, then quantize_)")
    report = PruneReport(sparsity, structured)
    for part in dict.fromkeys(parts):
        items = prunable(model, part)
        total = zeros = 0
        for _, m, pname in items:
            if structured:
                prune.ln_structured(m, pname, amount=sparsity, n=norm, dim=0)  # whole output rows / channels
            else:
                prune.l1_unstructured(m, pname, amount=sparsity)
            prune.remove(m, pname)  # permanent: the zeros live in the parameter itself
            w = getattr(m, pname)
            total += w.numel()
            zeros += int((w == 0).sum())
        report.parts[part] = {
            "tensors": len(items),
            "weights": total,
            "zeros": zeros,
            "sparsity": zeros / total if total else 0.0,
        }
    compression_record(model).setdefault("transforms", []).append(report.to_dict())
    return report
