"""A small 1-D CNN over a whole single-lead ECG, trained as a rhythm classifier before the TSLM (a supervised stem).

Why: the Flamingo encoder learns the waveform only through the LM's answer loss, a weak signal on a CPU budget; its
"other rhythm" and noisy F1 stay far below a feature baseline. A CNN trained directly on the four labels
(`training/pretrain_ecg_stem.py`) learns beat shape and noise quickly, and its head's hidden layer and label logits
reach the encoder's patches through a zero-initialised projection (`StemEmbedding`), so an adapter trained without it
starts out unchanged. The stem is frozen while the TSLM trains, and is part of the exported encoder graph.

Its head also reads the record's rhythm vector (`edge_tslm.rhythm_vector`, which the encoder measures anyway), so the
stem's logits weigh beat shape against rhythm, as a feature classifier would. Small on purpose (~44k weights), so the
committed adapter stays under the repo's 20 MiB per file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edge_tslm.model.encoder import ScaleEmbedding, vector_features
from edge_tslm.model.vector_cross_fit import VectorCrossFit
from edge_tslm.rhythm_vector import RHYTHM_VECTOR_SCALES

__all__ = ["EcgStemConfig", "EcgStem", "StemEmbedding"]


@dataclass(frozen=True)
class EcgStemConfig:
    """Conv1d(k, stride 2) + ReLU layers over a z-normalised ECG at the model's rate, then masked mean + max pooling."""

    channels: tuple[int, ...] = (16, 24, 32, 48, 48, 48)
    kernels: tuple[int, ...] = (7, 7, 5, 5, 5, 3)
    num_labels: int = 4
    hidden: int = 64  # the head's hidden layer over pooled features + rhythm vector
    dropout: float = 0.2  # on the pooled features while pretraining
    rhythm_vector: bool = True  # the head reads the rhythm vector too (forward then needs vectors)

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.kernels) or not self.channels:
            raise ValueError(f"channels {self.channels} and kernels {self.kernels} must be non-empty and the same length")
        if any(k % 2 == 0 or k < 1 for k in self.kernels):
            raise ValueError(f"kernels must be odd and positive (same padding), got {self.kernels}")
        if min(self.channels) < 1 or self.hidden < 1:
            raise ValueError(f"channels and hidden must be at least 1, got {self.channels} and {self.hidden}")

    @property
    def feature_dim(self) -> int:
        """What the TSLM reads: the head's hidden layer plus the label logits."""
        return self.hidden + self.num_labels


class EcgStem(nn.Module):
    """(K, L) z-normalised ECG + (K, L) real-sample mask (+ (K, F) rhythm vectors) -> (K, feature_dim): the head's
    hidden layer, then the label logits."""

    def __init__(self, cfg: EcgStemConfig = EcgStemConfig()):
        super().__init__()
        self.cfg = cfg
        chans = (1, *cfg.channels)
        self.convs = nn.ModuleList(nn.Conv1d(a, b, k, stride=2, padding=k // 2) for a, b, k in zip(chans[:-1], chans[1:], cfg.kernels))
        self.register_buffer("scales", torch.tensor(RHYTHM_VECTOR_SCALES, dtype=torch.float32), persistent=False)  # (F,)
        n_in = 2 * cfg.channels[-1] + (2 * len(RHYTHM_VECTOR_SCALES) if cfg.rhythm_vector else 0)
        self.drop = nn.Dropout(cfg.dropout)
        self.hidden = nn.Sequential(nn.Linear(n_in, cfg.hidden), nn.GELU())
        self.head = nn.Linear(cfg.hidden, cfg.num_labels)
        # training only (training/curriculum.py --stem-folds): each training record's features from a stem fitted
        # without its fold (model.vector_cross_fit); a plain attribute, never saved
        self.cross_fit: VectorCrossFit | None = None

    def pooled(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x, mask: (K, L) -> (K, 2C) masked mean and max of the last layer."""
        h = (x * mask.to(x.dtype))[:, None, :]  # (K, 1, L): padding reads as zeros
        m = mask.to(x.dtype)[:, None, :]  # (K, 1, L)
        for conv in self.convs:
            h = torch.relu(conv(h))  # (K, C, ceil(L / 2))
            # (K, 1, ceil(L / 2)): an output position is real where its centre sample is. (A conv with a one-hot
            # kernel, not m[..., ::2] or max_pool1d: its length is the layer's own formula, so a dynamic-length
            # export does not specialise L.)
            k = conv.kernel_size[0]
            centre = torch.zeros(1, 1, k, dtype=m.dtype, device=m.device)
            centre[..., k // 2] = 1.0
            m = nn.functional.conv1d(m, centre, stride=2, padding=k // 2)
            h = h * m
        n = m.sum(-1).clamp_min(1.0)  # (K, 1)
        mean = h.sum(-1) / n  # (K, C)
        mx = h.masked_fill(m == 0, -1e4).amax(-1)  # (K, C); ReLU outputs are >= 0, so -1e4 never wins on a real row
        return torch.cat([mean, mx.clamp_min(0.0)], dim=-1)  # (K, 2C)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """x, mask: (K, L); vectors: (K, F) rhythm vectors (nan where undefined) -> (K, hidden + num_labels)."""
        p = self.drop(self.pooled(x, mask))  # (K, 2C)
        if self.cfg.rhythm_vector:
            if vectors is None:
                raise ValueError("this ECG stem's head reads the rhythm vector: pass vectors (K, F)")
            p = torch.cat([p, vector_features(vectors.to(p.dtype), self.scales)], dim=-1)  # (K, 2C + 2F)
        h = self.hidden(p)  # (K, hidden)
        out = torch.cat([h, self.head(h)], dim=-1)  # (K, hidden + labels)
        if self.training and self.cross_fit is not None and vectors is not None:
            out = self.cross_fit.replace(vectors, out)
        return out


class StemEmbedding(nn.Module):
    """Stem features (K, F) -> (K, 1, D) added to every patch; zero-initialised like the scale and vector embeddings,
    and with their gain (a zero-initialised layer otherwise takes many steps to matter)."""

    GAIN = ScaleEmbedding.GAIN

    def __init__(self, feature_dim: int, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(feature_dim, elementwise_affine=False)
        self.proj = nn.Linear(feature_dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats: (K, F) -> (K, 1, D)."""
        return self.GAIN * self.proj(self.norm(feats))[:, None, :]
