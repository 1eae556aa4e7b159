"""PatchEncoder: a z-normalised series of any length -> one embedding per patch."""

from __future__ import annotations

import math

import torch
from torch import nn

from edge_tslm.config import EncoderConfig
from edge_tslm.constants import STD_EPS


def sinusoidal_positions(n: int, dim: int, device: torch.device, offset: int = 0) -> torch.Tensor:
    """Fixed sin/cos positions computed on the fly, so any length works (no table to outgrow)."""
    pos = torch.arange(offset, offset + n, device=device, dtype=torch.float32)[:, None]  # (n, 1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(n, dim, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return out  # (n, dim)


def check_series_lengths(series_mask: torch.Tensor, patch_len: int) -> None:
    """series_mask (B, S, L): refuse any present series shorter than one patch. PatchEncoder only sees the
    padded length, so a short series batched beside a longer one would otherwise slip through."""
    n = series_mask.sum(-1)  # (B, S) real samples per series; 0 = absent
    short = (n > 0) & (n < patch_len)
    if bool(short.any()):
        b, s = (int(i) for i in short.nonzero()[0])
        raise ValueError(
            f"sample {b} series {s} has length {int(n[b, s])}, shorter than one patch ({patch_len} samples); "
            f"pass at least {patch_len}"
        )


class ResidualConv(nn.Module):
    """Conv over neighbouring patches: local shape (a QRS, a step) without a length limit."""

    def __init__(self, dim: int, kernel: int = 5):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, P, D); mask: (B, P) True where the patch is real
        h = self.norm(x).masked_fill(~mask[..., None], 0.0).transpose(1, 2)  # (B, D, P)
        return x + torch.nn.functional.gelu(self.conv(h)).transpose(1, 2)  # (B, P, D)


class PatchEncoder(nn.Module):
    """Conv1d with kernel = stride = patch_len, sinusoidal positions, a padding mask per patch."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.patch = nn.Conv1d(1, cfg.dim, kernel_size=cfg.patch_len, stride=cfg.patch_len)
        self.convs = nn.ModuleList(ResidualConv(cfg.dim) for _ in range(cfg.conv_layers))
        self.series_embed = nn.Embedding(cfg.max_series, cfg.dim)
        self.norm = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self, series: torch.Tensor, mask: torch.Tensor, series_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """series: (B, L) float, mask: (B, L) bool, series_index: (B,) long -> (B, P, D), (B, P) bool."""
        p = self.cfg.patch_len
        B, L = series.shape
        if L < p:
            raise ValueError(f"series of length {L} is shorter than one patch ({p} samples); pass at least {p}")
        pad = (-L) % p
        x = torch.nn.functional.pad(series * mask, (0, pad))  # (B, L + pad)
        m = torch.nn.functional.pad(mask, (0, pad))
        P = x.shape[1] // p
        patch_mask = m.view(B, P, p).any(-1)  # (B, P): a patch is real if any of its samples is
        h = self.patch(x[:, None, :]).transpose(1, 2)  # (B, P, D)
        h = h + sinusoidal_positions(P, self.cfg.dim, h.device).to(h.dtype)[None]
        for conv in self.convs:
            h = conv(h, patch_mask)
        if (series_index >= self.cfg.max_series).any():
            raise ValueError(f"a sample has more than encoder.max_series={self.cfg.max_series} series")
        h = h + self.series_embed(series_index)[:, None, :]  # series identity
        return self.drop(self.norm(h)), patch_mask


def masked_znormalize(series: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """series, mask: (K, L) -> normed (K, L), mean (K,), std (K,): `signals.znormalize` over each row's real samples
    (population std floored at STD_EPS; a flat row becomes zeros), so the exported encoder graph does it too."""
    m = mask.to(series.dtype)  # (K, L)
    n = m.sum(-1).clamp_min(1.0)  # (K,)
    x = series * m
    mean = x.sum(-1) / n  # (K,)
    centred = (series - mean[:, None]) * m  # (K, L): two passes, as numpy's std
    std = ((centred * centred).sum(-1) / n).sqrt().clamp_min(STD_EPS)  # (K,)
    big = torch.finfo(series.dtype).max
    hi = series.masked_fill(~mask, -big).amax(-1)  # (K,)
    lo = series.masked_fill(~mask, big).amin(-1)
    varies = (hi > lo).to(series.dtype)  # (K,): 0 for a flat row
    return centred / std[:, None] * varies[:, None], mean, std


class ScaleEmbedding(nn.Module):
    """A series' mean and std (what z-normalisation removes) -> one embedding added to each of its patches.

    asinh(mean) and log(std)/4 keep g, mV and raw ADC counts in a small range; sin/cos of them at six octaves turn a
    0.1 g change in an axis' mean (sitting vs standing: the phone's tilt) into a large change of the input (a first
    version, one extra token from an MLP of the raw pair, left HAR's sitting vs standing at chance:
    benchmarks/results/tslm_flamingo-har-scale_pc25_v1-token.json). Added to every patch, so every latent sees it. The output layer starts at
    zero: a model loaded from an adapter trained without it starts out unchanged."""

    def __init__(self, dim: int, octaves: int = 6):
        super().__init__()
        self.register_buffer("freqs", (2.0 ** torch.arange(octaves, dtype=torch.float32)) * (math.pi / 4), persistent=False)
        self.proj = nn.Sequential(nn.Linear(2 + 4 * octaves, dim), nn.GELU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.proj[2].weight)
        nn.init.zeros_(self.proj[2].bias)

    # The patches it is added to are LayerNorm'd (norm ~ sqrt(D)); from a zero start, AdamW's lr-sized steps grow the
    # embedding slowly beside them (training/README.md: without the gain, sitting vs standing had not moved after 100
    # steps). The gain makes each step move it GAIN times as far.
    GAIN = 8.0

    def forward(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """mean, std: (K,) -> (K, 1, D), to add to the (K, P, D) patch embeddings."""
        f = torch.stack([torch.asinh(mean), torch.log(std) / 4], dim=-1)  # (K, 2)
        ang = f[:, :, None] * self.freqs  # (K, 2, F)
        feats = torch.cat([f, torch.sin(ang).flatten(1), torch.cos(ang).flatten(1)], dim=-1)  # (K, 2 + 4F)
        return self.GAIN * self.proj(feats)[:, None, :]  # (K, 1, D)


class VectorEmbedding(nn.Module):
    """Measured numbers of a series (`edge_tslm.rhythm_vector`) -> one embedding added to each of its patches.

    Each number is read as asinh(value / its typical size), with nan (undefined: too few beats) as 0 plus a flag, so
    a missing number is told apart from a small one. Like ScaleEmbedding: added to every patch, output layer at zero
    (a model loaded from an adapter trained without it starts out unchanged), and the same gain."""

    GAIN = ScaleEmbedding.GAIN

    def __init__(self, scales: tuple[float, ...], dim: int):
        super().__init__()
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32), persistent=False)  # (F,)
        self.proj = nn.Sequential(nn.Linear(2 * len(scales), dim), nn.GELU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.proj[2].weight)
        nn.init.zeros_(self.proj[2].bias)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """vectors: (K, F), nan where undefined -> (K, 1, D), to add to the (K, P, D) patch embeddings."""
        return self.GAIN * self.proj(vector_features(vectors, self.scales))[:, None, :]  # (K, 1, D)


def vector_features(vectors: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(K, F) measured numbers, nan where undefined -> (K, 2F): asinh(value / typical size), then a missing flag each."""
    missing = torch.isnan(vectors)  # (K, F)
    v = torch.asinh(torch.where(missing, torch.zeros_like(vectors), vectors) / scales)  # (K, F)
    return torch.cat([v, missing.to(v.dtype)], dim=-1)  # (K, 2F)
