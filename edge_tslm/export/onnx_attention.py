"""Export-time self-attention of a Llama-layout LM as ONNX's own RotaryEmbedding and Attention ops (opset 23).

Why: traced as written, one decoder layer's attention is ~60 small nodes (rotate_half slices and concats, the
GQA repeat, transposes, the mask's Where, Softmax and two MatMuls), and a decoded token pays a kernel launch for
each: SmolLM2's compact decoder ran 2,557 nodes a token, 1,113 with these ops, and a rationale token took 8–19 % less
time (benchmarks/results/decode_profile*.md, stream_latency.md). `torch.onnx.ops` gives the
two ops with a reference implementation in torch and an exact ONNX translation, so each layer's attention
becomes 3 nodes (two RotaryEmbedding, one Attention with the past and present K/V) that onnxruntime runs as
kernels of their own. The graph's inputs and outputs do not change: the runtime feeds it as before.

Only where the rotary tables are static (the model's inv_freq, no dynamic scaling) and the layer is the plain
Llama attention (no q/k norm, no sliding window): anything else keeps the traced attention.
"""

from __future__ import annotations

import contextlib
import types
from typing import Iterator

import torch
from torch import nn

__all__ = ["ONNX_ATTENTION_OPSET", "RopeTables", "onnx_attention", "onnx_attention_unsupported"]

ONNX_ATTENTION_OPSET = 23  # Attention and RotaryEmbedding entered the standard ONNX opset here
_FAMILIES = frozenset({"llama"})
# rows of the rotary tables (2 x rows x head_dim/2 floats in the graph): the model's context length up to this; a
# stream's prompt plus rationale is a few hundred positions, and onnxruntime refuses a position past the table
MAX_ROPE_POSITIONS = 32768
_STATIC_ROPE = frozenset({"default", "linear", "llama3"})  # inv_freq fixed at load: a table holds every position


def onnx_attention_unsupported(lm: nn.Module) -> str | None:
    """Why this LM's attention cannot take the fused ops, or None when it can."""
    from edge_tslm.backbones import decoder_layers

    cfg = lm.config
    if cfg.model_type not in _FAMILIES:
        return f"model type {cfg.model_type!r} (fused attention is implemented and parity-tested for {sorted(_FAMILIES)})"
    rope = getattr(_rotary(lm), "rope_type", "default")
    if rope not in _STATIC_ROPE:
        return f"rope type {rope!r} changes its frequencies with the sequence length"
    for layer in decoder_layers(lm):
        attn = layer.self_attn
        if hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
            return "attention with q/k norms"
        if getattr(attn, "sliding_window", None):
            return "attention with a sliding window"
    return None


def _rotary(lm: nn.Module) -> nn.Module:
    inner = getattr(lm, "model", lm)
    rot = getattr(inner, "rotary_emb", None)
    if rot is None:
        raise TypeError(f"{type(lm).__name__} has no model.rotary_emb: not a Llama-layout LM")
    return rot


class RopeTables(nn.Module):
    """cos/sin (max_positions, head_dim / 2) of the LM's own rotary embedding, one pair for every layer: what
    RotaryEmbedding gathers by position id (each decode step reads one row)."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        rot = _rotary(lm)
        n = min(int(lm.config.max_position_embeddings), MAX_ROPE_POSITIONS)
        ang = torch.arange(n, dtype=torch.float64)[:, None] * rot.inv_freq.double()[None]  # (n, d/2)
        scale = float(getattr(rot, "attention_scaling", 1.0))
        self.register_buffer("cos", (ang.cos() * scale).float(), persistent=False)
        self.register_buffer("sin", (ang.sin() * scale).float(), persistent=False)


def _forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, position_ids=None, **kwargs):
    """LlamaAttention.forward with the fused ops; attention_mask is the graph's explicit (B, 1, T, P+T) mask."""
    from torch.onnx.ops import attention, rotary_embedding

    tables: RopeTables = self._edge_tslm_rope
    cfg = self.config
    H, Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    if position_ids is None or cache is None or attention_mask is None:
        raise ValueError("the fused export attention needs position_ids, a cache and the explicit mask")
    q = rotary_embedding(self.q_proj(hidden_states), tables.cos, tables.sin, position_ids, num_heads=H)  # (B, T, H*d)
    k = rotary_embedding(self.k_proj(hidden_states), tables.cos, tables.sin, position_ids, num_heads=Hkv)  # (B, T, Hkv*d)
    v = self.v_proj(hidden_states)  # (B, T, Hkv*d)
    layer = cache.layers[self.layer_idx]
    y, present_k, present_v, _ = attention(  # y (B, T, H*d); present (B, Hkv, P+T, d)
        q, k, v, attention_mask, layer.keys, layer.values, q_num_heads=H, kv_num_heads=Hkv, scale=self.scaling
    )
    layer.keys, layer.values = present_k, present_v
    return self.o_proj(y), None


@contextlib.contextmanager
def onnx_attention(lm: nn.Module, tables: RopeTables) -> Iterator[None]:
    """Within the block every decoder layer's self-attention runs `_forward` (tables: a RopeTables owned by the
    module being exported, so the exporter stores the pair once)."""
    from edge_tslm.backbones import decoder_layers

    reason = onnx_attention_unsupported(lm)
    if reason:
        raise NotImplementedError(f"fused ONNX attention does not cover this LM: {reason}")
    attns = [layer.self_attn for layer in decoder_layers(lm)]
    for attn in attns:
        object.__setattr__(attn, "_edge_tslm_rope", tables)  # not a submodule: the tables stay the exported root's
        attn.forward = types.MethodType(_forward, attn)
    try:
        yield
    finally:
        for attn in attns:
            del attn.forward
            object.__delattr__(attn, "_edge_tslm_rope")
