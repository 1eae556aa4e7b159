"""MiniRocket over all axes of a window, with a ridge head fitted before the TSLM (a fixed-feature stem for HAR).

Why: the HAR TSLM encodes each axis alone and learns only through the LM's answer loss; on sitting vs standing it
stays below MiniRocket + ridge (Dempster et al. 2021), the strongest classical model measured on the same split
(`training/pretrain_minirocket_stem.py`). MiniRocket's features are fixed: 84 length-9 kernels with weights -1 and 2
at several dilations over random subsets of the axes, and for each a few biases taken from quantiles of its output on
training windows; each feature is the proportion of positive values (PPV) of one (kernel, dilation, bias). A ridge
classifier fitted on them gives one score per activity. Those scores reach every patch of every axis of the window
through a zero-initialised projection (`ecg_stem.StemEmbedding`), so an adapter trained without the stem starts out
unchanged. Frozen while the TSLM trains, saved in the adapter (~0.4 MB), and part of the exported encoder graph.

The stem reads the window as recorded (g, gravity included; the HAR model's encoder has scale_token), so the
phone's tilt, the cue between sitting and standing, is in its input.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["CrossFitHeads", "MiniRocketConfig", "MiniRocketStem", "minirocket_dilations", "sample_channels", "window_key"]

KERNEL_LEN = 9
NUM_KERNELS = 84  # every choice of 3 of the 9 taps to weigh 2 (the other six weigh -1)


@dataclass(frozen=True)
class MiniRocketConfig:
    """MiniRocket's defaults (10,000 features asked for, at most 32 dilations) for HAPT's 2.56 s windows at 50 Hz."""

    channels: int = 3  # the window's series, in order (x, y, z)
    window: int = 128  # the training windows' length: sets the dilations
    num_features: int = 10_000
    max_dilations: int = 32
    num_labels: int = 6

    def __post_init__(self) -> None:
        if self.channels < 1 or self.num_labels < 2:
            raise ValueError(f"channels must be >= 1 and num_labels >= 2, got {self.channels}, {self.num_labels}")
        if self.window < KERNEL_LEN or self.num_features < NUM_KERNELS:
            raise ValueError(f"window must be >= {KERNEL_LEN} samples and num_features >= {NUM_KERNELS}, "
                             f"got {self.window}, {self.num_features}")

    @property
    def feature_dim(self) -> int:
        """What the TSLM reads: the ridge head's score per label."""
        return self.num_labels


def minirocket_dilations(cfg: MiniRocketConfig) -> tuple[list[int], list[int]]:
    """MiniRocket's dilations (exponentially spaced up to the window) and biases per kernel at each."""
    per_kernel = cfg.num_features // NUM_KERNELS
    n = min(per_kernel, cfg.max_dilations)
    max_exp = math.log2((cfg.window - 1) / (KERNEL_LEN - 1))
    dil, counts = np.unique(np.floor(2.0 ** np.linspace(0, max_exp, n)).astype(np.int64), return_counts=True)
    per_dil = (counts * (per_kernel / n)).astype(np.int64)
    rem, i = per_kernel - int(per_dil.sum()), 0
    while rem > 0:
        per_dil[i] += 1
        rem -= 1
        i = (i + 1) % len(per_dil)
    return [int(d) for d in dil], [int(q) for q in per_dil]


def kernel_weights() -> np.ndarray:
    """(84, 9): -1 everywhere, 2 at one choice of three taps per kernel."""
    w = -np.ones((NUM_KERNELS, KERNEL_LEN), np.float32)
    for i, taps in enumerate(itertools.combinations(range(KERNEL_LEN), 3)):
        w[i, list(taps)] = 2.0
    return w


def sample_channels(series_encoder: nn.Module) -> int:
    """Rows the encoder must see together per sample: C with a MiniRocket stem (a window's axes), else 1."""
    stem = getattr(series_encoder, "stem", None)
    return stem.cfg.channels if isinstance(stem, MiniRocketStem) else 1


class MiniRocketStem(nn.Module):
    """(B, C, L) windows + (B, L) real-sample mask -> (B, num_labels) ridge scores.

    Buffers (all saved, none trained): per dilation the kernels masked to their axes (84, C, 9), the biases
    (84, q) and which kernels pad (84,); the ridge head is a Linear over the standardised features (standardisation
    folded in). `fit_biases` sets the biases from training windows; the head is fitted outside (scikit-learn)."""

    def __init__(self, cfg: MiniRocketConfig = MiniRocketConfig()):
        super().__init__()
        self.cfg = cfg
        self.dilations, self.per_dilation = minirocket_dilations(cfg)
        for i, q in enumerate(self.per_dilation):
            self.register_buffer(f"weight{i}", torch.zeros(NUM_KERNELS, cfg.channels, KERNEL_LEN))  # (84, C, 9)
            self.register_buffer(f"bias{i}", torch.zeros(NUM_KERNELS, q))  # (84, q)
            # MiniRocket alternates: half the (kernel, dilation) pairs pad ("same"), half only read full receptive fields
            pads = (torch.arange(NUM_KERNELS) + i * NUM_KERNELS) % 2 == 0
            self.register_buffer(f"pads{i}", pads.float()[None, :, None])  # (1, 84, 1)
        self.head = nn.Linear(self.num_features, cfg.num_labels)

    @property
    def num_features(self) -> int:
        return NUM_KERNELS * sum(self.per_dilation)

    def _conv(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """x (B, C, L) -> (B, 84, L) 'same' dilated convolution of dilation i."""
        d = self.dilations[i]
        return nn.functional.conv1d(x, getattr(self, f"weight{i}"), padding=(KERNEL_LEN - 1) * d // 2, dilation=d)

    @torch.no_grad()
    def init_kernels(self, seed: int = 0) -> None:
        """Random axis subsets per (kernel, dilation), as multivariate MiniRocket draws them."""
        rng = np.random.default_rng(seed)
        w = kernel_weights()  # (84, 9)
        top = math.log2(min(self.cfg.channels, KERNEL_LEN) + 1)
        for i in range(len(self.dilations)):
            sel = np.zeros((NUM_KERNELS, self.cfg.channels), np.float32)
            for k in range(NUM_KERNELS):
                n = min(self.cfg.channels, max(1, int(2.0 ** rng.uniform(0, top))))
                sel[k, rng.choice(self.cfg.channels, n, replace=False)] = 1.0
            getattr(self, f"weight{i}").copy_(torch.from_numpy(sel[:, :, None] * w[:, None, :]))

    @torch.no_grad()
    def fit_biases(self, windows: torch.Tensor, seed: int = 0) -> None:
        """windows (N, C, L) training windows: each (kernel, dilation) takes its biases from quantiles of its output on
        one random window (MiniRocket's low-discrepancy quantiles)."""
        if all(not getattr(self, f"weight{i}").any() for i in range(len(self.dilations))):
            raise RuntimeError("the kernels are all zero: call init_kernels(seed) before fit_biases")
        rng = np.random.default_rng(seed)
        phi = (math.sqrt(5) + 1) / 2
        start = 0
        for i, q in enumerate(self.per_dilation):
            pick = torch.as_tensor(rng.integers(0, len(windows), NUM_KERNELS))
            out = self._conv(windows[pick].float(), i)  # (84, 84, L): every kernel on every picked window
            own = out[torch.arange(NUM_KERNELS), torch.arange(NUM_KERNELS)]  # (84, L): kernel k on window k
            quant = torch.from_numpy(((np.arange(start, start + NUM_KERNELS * q).reshape(NUM_KERNELS, q) + 1) * phi % 1)
                                     .astype(np.float32))  # (84, q)
            getattr(self, f"bias{i}").copy_(torch.stack([torch.quantile(own[k], quant[k]) for k in range(NUM_KERNELS)]))
            start += NUM_KERNELS * q

    @torch.no_grad()
    def set_ridge(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> None:
        """The head from a ridge fitted on standardised features: scores = ((f - mean) / scale) @ coef.T + intercept.
        coef (labels, F) and intercept (labels,) rows in the stem's label order."""
        w = coef / scale[None, :]  # (labels, F)
        self.head.weight.copy_(torch.from_numpy(w.astype(np.float32)))
        self.head.bias.copy_(torch.from_numpy((intercept - w @ mean).astype(np.float32)))

    def features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, C, L) as recorded, mask (B, L) real samples -> (B, num_features) PPV, in [0, 1]."""
        m = mask.to(x.dtype)[:, None, :]  # (B, 1, L)
        x = x * m
        out = []
        for i, d in enumerate(self.dilations):
            conv = self._conv(x, i)  # (B, 84, L)
            # where every tap reads a real sample (the unpadded kernels' positions) vs where the centre is real
            taps = nn.functional.conv1d(m, torch.ones(1, 1, KERNEL_LEN, dtype=x.dtype, device=x.device),
                                        padding=(KERNEL_LEN - 1) * d // 2, dilation=d)  # (B, 1, L)
            full = (taps > KERNEL_LEN - 0.5).to(x.dtype)  # (B, 1, L)
            pads = getattr(self, f"pads{i}")  # (1, 84, 1)
            valid = pads * m + (1 - pads) * full  # (B, 84, L)
            pos = (conv[:, :, None, :] > getattr(self, f"bias{i}")[None, :, :, None]).to(x.dtype)  # (B, 84, q, L)
            ppv = (pos * valid[:, :, None, :]).sum(-1) / valid.sum(-1).clamp_min(1.0)[:, :, None]  # (B, 84, q)
            out.append(ppv.flatten(1))
        return torch.cat(out, dim=1)  # (B, num_features)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, C, L), mask (B, L) -> (B, num_labels) ridge scores."""
        f = self.features(x, mask)  # (B, F)
        scores = self.head(f)  # (B, labels)
        cross = getattr(self, "cross_fit", None)
        if cross is None or not self.training:
            return scores
        fold = cross.folds(x, mask)  # (B,): -1 for a window no fold knows (validation, test)
        hit = fold >= 0
        if hit.any():
            w, b = cross.weight[fold[hit]], cross.bias[fold[hit]]  # (h, labels, F), (h, labels)
            own = torch.einsum("hf,hlf->hl", f[hit].float(), w) + b  # (h, labels)
            scores = scores.clone()
            scores[hit] = own.to(scores.dtype)
        return scores


def window_key(x: np.ndarray) -> bytes:
    """A window's identity for CrossFitHeads: its (C, L) float32 bytes."""
    return np.ascontiguousarray(x, dtype=np.float32).tobytes()


class CrossFitHeads:
    """While training only: each training window is scored by a ridge head fitted without its subject's fold.

    Why: on training subjects the full head is nearly always right (it was fitted on them), so a TSLM trained on its
    scores learns nothing about how far they hold on a new wearer; out-of-fold scores are as wrong as on a new
    wearer. Set as `stem.cross_fit` by training/curriculum.py --stem-folds; a plain attribute, never saved, and
    ignored in eval mode, so the artifact and every evaluation use the full head. Windows are matched by their exact
    float32 bytes (`window_key`), so nothing in the batch has to carry the subject.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, table: dict[bytes, int]):
        self.weight = weight.float()  # (K, labels, F)
        self.bias = bias.float()  # (K, labels)
        self.table = table
        self.seen, self.hits = 0, 0  # windows looked up while training, and how many a fold knew

    def folds(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, C, L), mask (B, L) -> (B,) long fold of each window (its real samples), -1 where unknown."""
        xs, ms = x.detach().float().cpu().numpy(), mask.cpu().numpy()
        fold = torch.tensor([self.table.get(window_key(xs[i][:, ms[i]]), -1) for i in range(len(xs))], device=x.device)
        self.seen += len(xs)
        self.hits += int((fold >= 0).sum())
        return fold
