"""PerceiverResampler: any number of patch embeddings -> a fixed number of latents (open_flamingo's design)."""

from __future__ import annotations

import torch
from torch import nn

from edge_tslm.config import ResamplerConfig


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(), nn.Linear(dim * mult, dim, bias=False))


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.norm_x = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, P, D); latents: (B, N, D); mask: (B, P) bool
        B, N, _ = latents.shape
        x, lat = self.norm_x(x), self.norm_latents(latents)
        kv_in = torch.cat([x, lat], dim=1)  # (B, P + N, D): latents also attend to themselves
        kv_mask = torch.cat([mask, mask.new_ones(B, N)], dim=1)  # (B, P + N)
        q = self.to_q(lat).view(B, N, self.heads, self.dim_head).transpose(1, 2)  # (B, H, N, d)
        k, v = self.to_kv(kv_in).chunk(2, dim=-1)
        k = k.view(B, -1, self.heads, self.dim_head).transpose(1, 2)  # (B, H, P + N, d)
        v = v.view(B, -1, self.heads, self.dim_head).transpose(1, 2)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=kv_mask[:, None, None, :])
        return self.to_out(out.transpose(1, 2).reshape(B, N, -1))  # (B, N, D)


class PerceiverResampler(nn.Module):
    def __init__(self, dim: int, cfg: ResamplerConfig):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(cfg.num_latents, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, cfg.heads, cfg.dim_head), feed_forward(dim, cfg.ff_mult)])
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, P, D), mask: (B, P) -> latents (B, N, D)."""
        lat = self.latents[None].expand(x.shape[0], -1, -1)  # (B, N, D)
        for attn, ff in self.layers:
            lat = lat + attn(x, lat, mask)
            lat = lat + ff(lat)
        return self.norm(lat)
