"""Gated cross-attention into any HF causal LM, without changing the LM's module tree or state-dict keys.

The blocks live on the TSLM; a forward pre-hook on each decoder layer applies its block to the layer's
input. Media reach the hook as forward keyword arguments (transformers passes **kwargs from the
CausalLM down to every decoder layer), so nothing is stored on a layer between calls.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edge_tslm.config import FusionConfig
from edge_tslm.model.resampler import feed_forward

MEDIA_KWARG = "ts_media"  # (B, M, Dm) latents of every series in the sample
ALLOWED_KWARG = "ts_allowed"  # (B, T, M) bool: may text token t attend to media slot m


class GatedCrossAttention(nn.Module):
    """x + tanh(g_attn) * XAttn(x, media) ; x + tanh(g_ff) * FF(x). Gates start at 0: the LM is unchanged."""

    def __init__(self, lm_dim: int, media_dim: int, cfg: FusionConfig):
        super().__init__()
        self.heads, self.dim_head = cfg.heads, cfg.dim_head
        inner = cfg.heads * cfg.dim_head
        self.norm = nn.LayerNorm(lm_dim)
        self.to_q = nn.Linear(lm_dim, inner, bias=False)
        self.to_kv = nn.Linear(media_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, lm_dim, bias=False)
        self.ff = feed_forward(lm_dim, cfg.ff_mult)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ff_gate = nn.Parameter(torch.zeros(1))

    def media_kv(self, media: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """media: (B, M, Dm) -> k, v: (B, H, M, d). Computed once per window; decode steps reuse it."""
        B, M, _ = media.shape
        k, v = self.to_kv(media).chunk(2, dim=-1)
        k = k.view(B, M, self.heads, self.dim_head).transpose(1, 2)
        v = v.view(B, M, self.heads, self.dim_head).transpose(1, 2)
        return k, v

    def forward(self, x: torch.Tensor, media: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) text hidden states; media: (B, M, Dm); allowed: (B, T, M) bool."""
        B, T, _ = x.shape
        k, v = self.media_kv(media)
        has_media = allowed.any(-1, keepdim=True)  # (B, T, 1): tokens before the first series see nothing
        mask = (allowed | ~has_media)[:, None]  # (B, 1, T, M); rows with no media are zeroed below
        q = self.to_q(self.norm(x)).view(B, T, self.heads, self.dim_head).transpose(1, 2)  # (B, H, T, d)
        out = torch.nn.functional.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask)
        out = self.to_out(out.transpose(1, 2).reshape(B, T, -1)) * has_media  # (B, T, D)
        x = x + torch.tanh(self.attn_gate) * out
        return x + torch.tanh(self.ff_gate) * self.ff(x) * has_media


def install_fusion_hooks(layers: nn.ModuleList, blocks: dict[int, GatedCrossAttention]) -> list[Any]:
    """Register a pre-hook on every decoder layer: it removes our kwargs and, where a block sits, applies it."""
    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(_make_hook(blocks.get(i)), with_kwargs=True))
    return handles


def _make_hook(block: GatedCrossAttention | None):
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        media = kwargs.pop(MEDIA_KWARG, None)
        allowed = kwargs.pop(ALLOWED_KWARG, None)
        if block is None or media is None:
            return args, kwargs
        if args:
            args = (block(args[0], media, allowed),) + tuple(args[1:])
        else:
            kwargs["hidden_states"] = block(kwargs["hidden_states"], media, allowed)
        return args, kwargs

    return hook


def media_allowed(ts_positions: torch.Tensor, token_positions: torch.Tensor, num_latents: int) -> torch.Tensor:
    """Which media slot each token may see: token t sees series s iff s's <ts> token is at or before t.

    ts_positions: (B, S) position of each series' <ts> token (a huge value for absent series);
    token_positions: (B, T) absolute positions of the tokens in this call -> (B, T, S * num_latents).
    """
    ok = token_positions[:, :, None] >= ts_positions[:, None, :]  # (B, T, S)
    return ok.repeat_interleave(num_latents, dim=-1)  # (B, T, S * N)
