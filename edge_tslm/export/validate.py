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

from edge_tslm.constants import ONNX_LATENTS, ONNX_SERIES, ONNX_SERIES_INDEX, ONNX_SERIES_MASK, ONNX_SERIES_VECTORS
from edge_tslm.export.spec import (
    COREML_FP16_ATOL,
    COREML_FP32_ATOL,
    COREML_MIN_COSINE,
    ENCODER_FP32_ATOL,
    ENCODER_INT8_ATOL,
    ENCODER_INT8_MIN_COSINE,
)
from edge_tslm.model.minirocket_stem import sample_channels


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
        feed = {ONNX_SERIES: series.numpy(), ONNX_SERIES_MASK: mask.numpy(), ONNX_SERIES_INDEX: idx.numpy()}
        vectors = None
        if getattr(enc, "rhythm", None) is not None:
            from edge_tslm.export.onnx import example_vectors

            vectors = example_vectors(enc, len(idx), seed=seed)  # (K, F), some undefined
            feed[ONNX_SERIES_VECTORS] = vectors.numpy()
        with torch.no_grad():
            ref = enc(series, mask, idx, vectors).float().numpy()
        (out,) = sess.run([ONNX_LATENTS], feed)
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
    cross_path: str | Path,
    decoder_path: str | Path,
    *,
    steps: int = 3,
    series_lengths: tuple[int, ...] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """cross.onnx + decoder.onnx in onnxruntime vs FlamingoTSLM.prefill/decode, every way the runtime calls them.

    Cases: the whole prompt from an empty cache (P = 0); the prompt split at its first <ts> (the runtime's cached
    prefix, then the rest); the window tiled to batch 2; ``steps`` greedy one-token steps; a two-branch label trie
    in one row (positions and mask per branch) against eager decoding of each branch. Tolerance: max abs logit
    diff <= DECODER_FP32_ATOL (1e-3) in every case.
    """
    import copy

    import onnxruntime as ort

    from edge_tslm.constants import END_CHUNK_TOKEN, TS_TOKEN
    from edge_tslm.export import spec
    from edge_tslm.export.onnx import decoder_io_names

    names = decoder_io_names(model)
    if series_lengths is None:  # two series of two lengths; a MiniRocket stem reads its C axes, of one length
        C = sample_channels(model.series_encoder)
        series_lengths = (40, 60) if C == 1 else (model.series_encoder.stem.cfg.window,) * C
    rng = np.random.default_rng(seed)
    text = "Series. " + " ".join(f"s{i}: {TS_TOKEN}{END_CHUNK_TOKEN}" for i in range(len(series_lengths))) + " Which?\n"
    series = [rng.standard_normal(n).astype(np.float32) for n in series_lengths]
    batch = model._batch(text, series)
    model.eval()
    with torch.no_grad():
        ref, state = model.prefill(batch)
    media, ts_pos = state.extras["media"], state.extras["ts_pos"].numpy()
    xs = ort.InferenceSession(str(cross_path), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(decoder_path), providers=["CPUExecutionProvider"])
    cross = xs.run(names["cross_outputs"], {spec.DEC_MEDIA: media.float().numpy()})
    n_cache = 2 * model.lm.config.num_hidden_layers
    hkv, d = dec.get_inputs()[5].shape[1], dec.get_inputs()[5].shape[3]
    past_names, cross_names = names["decoder_inputs"][5 : 5 + n_cache], names["decoder_inputs"][5 + n_cache :]

    def run(ids: np.ndarray, pos: np.ndarray, mask: np.ndarray, past: list[np.ndarray], logit_index, tile: int = 1):
        B = ids.shape[0]
        feed = {
            spec.DEC_INPUT_IDS: ids, spec.DEC_POSITION_IDS: pos, spec.DEC_ATTENTION_MASK: mask,
            spec.DEC_TS_POSITIONS: np.repeat(ts_pos, tile, 0), spec.DEC_LOGIT_INDEX: np.asarray(logit_index, np.int64),
            **dict(zip(past_names, past)), **{n: np.repeat(c, tile, 0) for n, c in zip(cross_names, cross)},
        }
        assert all(v.shape[0] == B for k, v in feed.items() if k != spec.DEC_LOGIT_INDEX)
        outs = dec.run(names["decoder_outputs"][:-1], feed)  # logits and present K/V (not hidden_split)
        return outs[0], outs[1:]

    ids = batch.input_ids.numpy()
    T = ids.shape[1]
    empty = lambda B: [np.zeros((B, hkv, 0, d), np.float32)] * n_cache  # noqa: E731
    pos = np.arange(T, dtype=np.int64)[None]
    ref_np = ref.float().numpy().reshape(1, -1)
    cases = {}
    logits, kv = run(ids, pos, spec.causal_mask(T), empty(1), [T - 1])
    cases["prompt_from_empty_cache"] = compare(ref_np, logits[:, 0])
    n = int(ts_pos.min())  # tokens before the first <ts>: the runtime's cached prefix
    _, kv_n = run(ids[:, :n], pos[:, :n], spec.causal_mask(n), empty(1), [n - 1])
    split, _ = run(ids[:, n:], pos[:, n:], spec.causal_mask(T - n), kv_n, [T - n - 1])
    cases["prompt_after_cached_prefix"] = compare(ref_np, split[:, 0])
    tiled, _ = run(np.repeat(ids, 2, 0), np.repeat(pos, 2, 0), spec.causal_mask(T, 2), empty(2), [T - 1], tile=2)
    cases["prompt_batch2"] = compare(np.repeat(ref_np, 2, 0), tiled[:, 0])
    # A label trie in one row: branch a -> b, branch c, both continuing the prompt.
    a, b, c = (int(t) for t in rng.integers(3, model.new_tokens.base_vocab, 3))
    with torch.no_grad():
        la, sa = model.decode(torch.tensor([[a]]), copy.deepcopy(state))
        lb, _ = model.decode(torch.tensor([[b]]), sa)
        lc, _ = model.decode(torch.tensor([[c]]), copy.deepcopy(state))
    tmask = np.array([[[[True, False, False], [True, True, False], [False, False, True]]]])  # (1, 1, 3, 3)
    tri, _ = run(np.array([[a, b, c]]), np.array([[T, T + 1, T]]), tmask, kv, [0, 1, 2])
    cases["label_trie_one_row"] = compare(torch.cat([la, lb, lc], 1).float().numpy(), tri)
    logits_t = ref
    for step in range(steps):
        tok = torch.argmax(logits_t.reshape(1, -1), -1).reshape(1, 1)  # eager's greedy token drives both
        with torch.no_grad():
            logits_t, state = model.decode(tok, state)
        P = kv[0].shape[2]
        out, kv = run(tok.numpy(), np.array([[P]]), spec.causal_mask(1), kv, [0])
        cases[f"decode_{step + 1}"] = compare(logits_t.float().numpy().reshape(1, 1, -1), out)
    for case in cases.values():
        case["passed"] = case["max_abs_diff"] <= spec.DECODER_FP32_ATOL
    return {
        "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
        "reference": "FlamingoTSLM.prefill/decode, torch eager fp32",
        "tolerance": {"max_abs_diff": spec.DECODER_FP32_ATOL},
        "prompt_tokens": int(T),
        "series_lengths": list(series_lengths),
        "cases": cases,
        "max_abs_diff": max(c["max_abs_diff"] for c in cases.values()),
        "passed": all(c["passed"] for c in cases.values()),
    }
