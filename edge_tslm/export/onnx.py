"""ONNX export (torch.onnx dynamo exporter) of the Flamingo SeriesEncoder and of the fused decoder.

Encoder: ``series`` (K, L) f32, ``series_mask`` (K, L) bool, ``series_index`` (K,) i64 -> ``latents`` (K, N, D),
dynamic K and L, one self-contained file. Decoder: a prefill graph and a decode graph with a KV cache
(see export_decoder_onnx). Every export is followed by a parity check against eager PyTorch
(edge_tslm.export.validate); export-only patches live in the ``export_patches`` context manager.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import types
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from edge_tslm.export.spec import (
    BATCH_AXIS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    LENGTH_AXIS,
    MAX_BATCH,
    MAX_LENGTH,
    ExportReport,
    encoder_io,
)


class ParityError(AssertionError):
    """An exported graph disagrees with eager PyTorch beyond the stated tolerance."""


def series_encoder_of(model: nn.Module) -> nn.Module:
    """The SeriesEncoder (PatchEncoder + PerceiverResampler) of a FlamingoTSLM, or the module itself."""
    enc = getattr(model, "series_encoder", model)
    if not (hasattr(enc, "encoder") and hasattr(enc, "resampler")):
        raise TypeError(
            f"{type(model).__name__} has no Flamingo SeriesEncoder (encoder + resampler); "
            "export a FlamingoTSLM (variant='flamingo') or its .series_encoder"
        )
    return enc


def file_entry(path: Path) -> dict[str, Any]:
    from edge_tslm.model.artifact import sha256_file

    return {"size_bytes": path.stat().st_size, "sha256": sha256_file(path)}


# ---------------------------------------------------------------- export-only patches


def _patch_encoder_forward(self, series: torch.Tensor, mask: torch.Tensor, series_index: torch.Tensor):
    """PatchEncoder.forward minus its two input checks, which torch.export cannot trace.

    ``L < patch_len`` becomes the length axis' lower bound (min = patch_len); ``series_index >= max_series`` is
    data-dependent and is left to the runtime's input validation (an out-of-range index fails in the graph's
    Gather). Everything else is the eager code, line for line; the parity check proves they agree.
    """
    from edge_tslm.model.encoder import sinusoidal_positions

    p = self.cfg.patch_len
    B, L = series.shape
    pad = (-L) % p
    x = torch.nn.functional.pad(series * mask, (0, pad))  # (B, L + pad)
    m = torch.nn.functional.pad(mask, (0, pad))
    P = x.shape[1] // p
    patch_mask = m.view(B, P, p).any(-1)  # (B, P)
    h = self.patch(x[:, None, :]).transpose(1, 2)  # (B, P, D)
    h = h + sinusoidal_positions(P, self.cfg.dim, h.device).to(h.dtype)[None]
    for conv in self.convs:
        h = conv(h, patch_mask)
    h = h + self.series_embed(series_index)[:, None, :]  # (B, P, D)
    return self.drop(self.norm(h)), patch_mask


@contextlib.contextmanager
def export_patches(series_encoder: nn.Module) -> Iterator[nn.Module]:
    """Within the block the SeriesEncoder traces with torch.export; on exit it is exactly as before."""
    patch_encoder = series_encoder.encoder
    was_training = series_encoder.training
    series_encoder.eval()
    patch_encoder.forward = types.MethodType(_patch_encoder_forward, patch_encoder)
    try:
        yield series_encoder
    finally:
        del patch_encoder.forward  # back to the class method
        series_encoder.train(was_training)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter prints progress and warnings per call; keep test and CLI output readable."""
    loggers = [logging.getLogger(n) for n in (None, "torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def _example_encoder_inputs(enc: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p = enc.encoder.cfg.patch_len
    K, L = 2, 16 * p  # a multiple of the patch: the solver rejects a non-multiple example; the graph pads any L
    dev = next(enc.parameters()).device
    series = torch.randn(K, L, device=dev)
    mask = torch.ones(K, L, dtype=torch.bool, device=dev)
    return series, mask, torch.arange(K, device=dev)


# ---------------------------------------------------------------- encoder


def export_encoder_onnx(
    model: nn.Module,
    out_path: str | Path,
    *,
    opset: int = 18,
    int8: bool = False,
    validate: bool = True,
    strict: bool = True,
    lengths: tuple[int, ...] | None = None,
) -> ExportReport:
    """Export encoder + resampler to one ONNX file (no external data), check it, and parity-test it.

    int8: dynamic int8 quantization of MatMul/Gemm/Conv weights (onnxruntime.quantization.quantize_dynamic);
    the file at ``out_path`` is then the quantized graph. validate: run edge_tslm.export.validate at three
    lengths (one patch, 127, 4500 unless ``lengths`` is given) with a real onnxruntime session and record the
    result in the report; strict: raise ParityError when it fails its tolerance.
    """
    import onnx

    enc = series_encoder_of(model)
    enc = enc.float()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    patch_len = enc.encoder.cfg.patch_len
    t0 = time.perf_counter()
    batch = torch.export.Dim(BATCH_AXIS, min=1, max=MAX_BATCH)
    length = torch.export.Dim(LENGTH_AXIS, min=patch_len, max=MAX_LENGTH)
    fp32_path = out_path if not int8 else Path(tempfile.mkdtemp(prefix="edge_tslm_onnx_")) / "encoder_fp32.onnx"
    args = _example_encoder_inputs(enc)
    with export_patches(enc), torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            enc,
            args,
            dynamo=True,
            opset_version=opset,
            input_names=list(ENCODER_INPUTS),
            output_names=list(ENCODER_OUTPUTS),
            dynamic_shapes={"series": {0: batch, 1: length}, "mask": {0: batch, 1: length}, "series_index": {0: batch}},
            external_data=False,
            optimize=True,
            verbose=False,
        )
        program.save(str(fp32_path), external_data=False)
    onnx.checker.check_model(str(fp32_path), full_check=True)
    notes = [
        f"torch.onnx dynamo exporter (torch {torch.__version__}), opset {opset}; dynamic axes {BATCH_AXIS}, "
        f"{LENGTH_AXIS} (>= patch_len={patch_len})",
        "inputs are not validated inside the graph: series_index < encoder.max_series and length >= patch_len "
        "are the caller's job",
    ]
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with _quiet_exporter():
            quantize_dynamic(
                str(fp32_path),
                str(out_path),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm", "Conv"],
            )
        onnx.checker.check_model(str(out_path), full_check=True)
        notes.append("int8: onnxruntime quantize_dynamic (QInt8 weights, per-tensor; activations quantized at run time)")
        fp32_path.unlink()
        fp32_path.parent.rmdir()
    n_lat, dim = enc.resampler.latents.shape
    inputs, outputs = encoder_io(n_lat, dim)
    report = ExportReport(
        target="onnx",
        component="encoder",
        files={out_path.name: file_entry(out_path)},
        inputs=inputs,
        outputs=outputs,
        precision="int8" if int8 else "fp32",
        opset=opset,
        notes=notes,
        path=out_path,
    )
    if validate:
        from edge_tslm.export.validate import validate_encoder_onnx

        report.parity = validate_encoder_onnx(enc, out_path, int8=int8, lengths=lengths)
        if strict and not report.parity["passed"]:
            raise ParityError(f"{out_path}: encoder parity failed: {report.parity}")
    report.seconds = round(time.perf_counter() - t0, 2)
    return report
