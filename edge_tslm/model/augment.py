"""Training-time changes of a multi-axis window that a new wearer brings: the phone turned a little, a faster or
slower gait.

The encoder applies them, while training only, to what its own patch path reads; a stem (fitted before, frozen) still
reads the window as recorded. A TSLM trained on the subjects its patch encoder has seen finds its own features
always right there, and learns to trust them over the stem; on a new wearer they are not. Augmenting only the patch
path makes its features about as unreliable in training as on new people, so the model learns when to lean on the
stem, and the patch features themselves learn to hold under the changes.
"""

from __future__ import annotations

import math

import torch


def random_rotations(n: int, max_deg: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """n rotation matrices (n, 3, 3), each about a uniformly random axis by an angle uniform in [-max_deg, max_deg]."""
    axis = torch.randn(n, 3, generator=generator)
    axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-8)  # (n, 3) unit axes
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_deg)  # (n,)
    kx, ky, kz = axis.unbind(1)
    zero = torch.zeros_like(kx)
    k = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], 1).reshape(n, 3, 3)  # (n, 3, 3) cross-product matrix
    s, c = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
    return torch.eye(3).expand(n, 3, 3) + s * k + (1 - c) * (k @ k)  # Rodrigues


def time_warp(x: torch.Tensor, max_frac: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x (B, C, L) -> (B, C, L) replayed at a speed uniform in [1 - max_frac, 1 + max_frac] per sample (all axes
    alike), from a random start; positions past the ends reflect back, linear interpolation between samples."""
    B, C, L = x.shape
    speed = 1 + (torch.rand(B, generator=generator) * 2 - 1) * max_frac  # (B,)
    span = speed * (L - 1)  # (B,) samples the warped window covers
    start = torch.rand(B, generator=generator) * (L - 1 - span).clamp_min(0)  # (B,) slower: a random sub-span
    pos = start[:, None] + speed[:, None] * torch.arange(L, dtype=torch.float32)  # (B, L)
    period = 2 * (L - 1)
    pos = torch.remainder(pos, period)
    pos = torch.where(pos > L - 1, period - pos, pos)  # (B, L) reflected into [0, L-1]
    lo = pos.floor().long().clamp(0, L - 1)
    hi = (lo + 1).clamp(max=L - 1)
    frac = (pos - lo.to(pos.dtype))[:, None, :]  # (B, 1, L)
    idx_lo, idx_hi = lo[:, None, :].expand(B, C, L), hi[:, None, :].expand(B, C, L)
    xf = x.float()
    return ((1 - frac) * xf.gather(2, idx_lo) + frac * xf.gather(2, idx_hi)).to(x.dtype)  # (B, C, L)


def augment_windows(x: torch.Tensor, full: torch.Tensor, rotate_deg: float, warp: float,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """x (B, 3, L) windows as recorded, full (B,) True where every sample of the window is present -> (B, 3, L) with
    each full window turned and replayed at another speed. Windows with gaps are left as they are: a warp would
    move samples across the gap."""
    out = x
    if rotate_deg > 0:
        if x.shape[1] != 3:
            raise ValueError(f"rotation needs 3-axis windows, got {x.shape[1]} axes per window")
        R = random_rotations(x.shape[0], rotate_deg, generator).to(x.dtype)  # (B, 3, 3)
        out = R @ out  # (B, 3, L)
    if warp > 0:
        out = time_warp(out, warp, generator)
    return torch.where(full[:, None, None], out, x)  # (B, 3, L)
