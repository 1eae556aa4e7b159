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


def validate_decoder_onnx(
    model: nn.Module,
    prefill_path: str | Path,
    decode_path: str | Path,
    *,
    steps: int = 3,
    series_lengths: tuple[int, ...] = (40, 60),
    seed: int = 0,
) -> dict[str, Any]:
    """Prefill + ``steps`` greedy decode steps in onnxruntime vs FlamingoTSLM.prefill/decode.

    The eager model encodes the series (media) and its greedy tokens drive both paths. Tolerance: max abs logit
    diff <= DECODER_FP32_ATOL (1e-3) at the prefill and at every step; the same window tiled to batch 2 must give
    the batch-1 logits in both rows.
    """
    import onnxruntime as ort

    from edge_tslm.constants import END_CHUNK_TOKEN, TS_TOKEN
    from edge_tslm.export import spec
    from edge_tslm.export.onnx import decoder_io_names

    names = decoder_io_names(model)
    rng = np.random.default_rng(seed)
    text = "Series. " + " ".join(f"s{i}: {TS_TOKEN}{END_CHUNK_TOKEN}" for i in range(len(series_lengths))) + " Which?\n"
    series = [rng.standard_normal(n).astype(np.float32) for n in series_lengths]
    batch = model._batch(text, series)
    model.eval()
    with torch.no_grad():
        ref, state = model.prefill(batch)
    media, ts_pos = state.extras["media"], state.extras["ts_pos"]
    opts = ort.SessionOptions()
    pre = ort.InferenceSession(str(prefill_path), opts, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(decode_path), opts, providers=["CPUExecutionProvider"])
    feed = {
        spec.DEC_INPUT_IDS: batch.input_ids.numpy(),
        spec.DEC_ATTENTION_MASK: batch.attention_mask.numpy().astype(np.int64),
        spec.DEC_MEDIA: media.float().numpy(),
        spec.DEC_TS_POSITIONS: ts_pos.numpy(),
    }
    outs = pre.run(names["prefill_outputs"], feed)
    n_cache = 2 * model.lm.config.num_hidden_layers
    kv, cross = outs[1 : 1 + n_cache], outs[1 + n_cache :]
    cases = {"prefill": compare(ref.float().numpy(), outs[0])}
    tiled = pre.run([spec.DEC_LOGITS], {k: np.repeat(v, 2, axis=0) for k, v in feed.items()})[0]
    cases["prefill_batch2"] = compare(np.repeat(ref.float().numpy(), 2, axis=0), tiled)
    logits = ref
    for step in range(steps):
        tok = torch.argmax(logits.reshape(1, -1), -1).reshape(1, 1)  # eager's greedy token drives both
        with torch.no_grad():
            logits, state = model.decode(tok, state)
        past_len = kv[0].shape[2]
        dfeed = {
            spec.DEC_INPUT_IDS: tok.numpy(),
            spec.DEC_ATTENTION_MASK: np.ones((1, past_len + 1), np.int64),
            spec.DEC_TS_POSITIONS: ts_pos.numpy(),
            **dict(zip(names["decode_inputs"][3 : 3 + n_cache], kv)),
            **dict(zip(names["decode_inputs"][3 + n_cache :], cross)),
        }
        douts = dec.run(names["decode_outputs"], dfeed)
        cases[f"decode_{step + 1}"] = compare(logits.float().numpy(), douts[0])
        kv = douts[1:]
    for c in cases.values():
        c["passed"] = c["max_abs_diff"] <= spec.DECODER_FP32_ATOL
    return {
        "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
        "reference": "FlamingoTSLM.prefill/decode, torch eager fp32",
        "tolerance": {"max_abs_diff": spec.DECODER_FP32_ATOL},
        "prompt_tokens": int(batch.input_ids.shape[1]),
        "series_lengths": list(series_lengths),
        "cases": cases,
        "max_abs_diff": max(c["max_abs_diff"] for c in cases.values()),
        "passed": all(c["passed"] for c in cases.values()),
    }
