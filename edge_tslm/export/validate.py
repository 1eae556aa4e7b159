"""Parity of exported graphs against eager PyTorch, with stated tolerances; the dicts land in manifest.json.

Each check runs the exported file in a real runtime (onnxruntime.InferenceSession; Core ML prediction on
macOS only) on seeded random inputs and reports max abs diff, mean abs diff and cosine similarity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_tslm.constants import ONNX_LATENTS, ONNX_SERIES, ONNX_SERIES_INDEX, ONNX_SERIES_MASK
from edge_tslm.export.spec import (
    COREML_FP16_ATOL,
    COREML_FP32_ATOL,
    COREML_MIN_COSINE,
    ENCODER_FP32_ATOL,
    ENCODER_INT8_ATOL,
    ENCODER_INT8_MIN_COSINE,
)


def compare(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """max/mean abs diff and cosine similarity of two arrays of one shape."""
    if ref.shape != out.shape:
        raise AssertionError(f"shape mismatch: eager {ref.shape} vs exported {out.shape}")
    r, o = ref.astype(np.float64).ravel(), out.astype(np.float64).ravel()
    d = np.abs(r - o)
    denom = np.linalg.norm(r) * np.linalg.norm(o)
    cos = float(r @ o / denom) if denom > 0 else float(np.array_equal(r, o))
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()), "cosine": cos}


def default_lengths(patch_len: int) -> tuple[int, ...]:
    """One patch, a window that is not a whole number of patches (the pad path), a long ECG-like record."""
    return (patch_len, 127, 4500)


def encoder_cases(patch_len: int, lengths: tuple[int, ...] | None, seed: int = 0):
    """(name, series, mask, index) per length: 3 series, the last one padded (its mask ends early)."""
    gen = torch.Generator().manual_seed(seed)
    for L in lengths or default_lengths(patch_len):
        K = 3
        series = torch.randn(K, L, generator=gen)
        mask = torch.ones(K, L, dtype=torch.bool)
        real = max(patch_len, (2 * L) // 3)  # a padded series, still at least one patch long
        mask[-1, real:] = False
        series[-1, real:] = 0.0
        yield f"L={L}", series, mask, torch.arange(K)


def validate_encoder_onnx(
    series_encoder: nn.Module,
    onnx_path: str | Path,
    *,
    int8: bool = False,
    lengths: tuple[int, ...] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the ONNX encoder in onnxruntime against eager at several lengths (default: one patch, 127, 4500).

    Tolerance: fp32 max abs diff <= ENCODER_FP32_ATOL (1e-4); int8 max abs diff <= ENCODER_INT8_ATOL (0.25)
    and cosine >= ENCODER_INT8_MIN_COSINE (0.99) per length.
    """
    import onnxruntime as ort

    enc = series_encoder.eval()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    atol = ENCODER_INT8_ATOL if int8 else ENCODER_FP32_ATOL
    min_cos = ENCODER_INT8_MIN_COSINE if int8 else None
    cases: dict[str, Any] = {}
    for name, series, mask, idx in encoder_cases(enc.encoder.cfg.patch_len, lengths, seed):
        with torch.no_grad():
            ref = enc(series, mask, idx).float().numpy()
        (out,) = sess.run(
            [ONNX_LATENTS],
            {ONNX_SERIES: series.numpy(), ONNX_SERIES_MASK: mask.numpy(), ONNX_SERIES_INDEX: idx.numpy()},
        )
        c = compare(ref, out)
        c["shape"] = list(out.shape)
        c["passed"] = c["max_abs_diff"] <= atol and (min_cos is None or c["cosine"] >= min_cos)
        cases[name] = c
    return {
        "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
        "reference": "torch eager fp32",
        "tolerance": {"max_abs_diff": atol, **({"min_cosine": min_cos} if min_cos is not None else {})},
        "cases": cases,
        "max_abs_diff": max(c["max_abs_diff"] for c in cases.values()),
        "min_cosine": min(c["cosine"] for c in cases.values()),
        "passed": all(c["passed"] for c in cases.values()),
    }
