"""Core ML export of the Flamingo SeriesEncoder (encoder + resampler) as an .mlpackage (ML program).

Conversion and weight compression run anywhere coremltools installs (Linux included); prediction needs macOS,
so parity with eager is checked there (``validate_encoder_coreml``) and the conversion itself is proved on Linux
by checking the export-friendly forward against eager in PyTorch (``coreml_forward_parity``).

Core ML inputs are float32 ``series`` (K, L), float32 ``series_mask`` (K, L) (1 = real sample, 0 = padding; Core
ML has no bool inputs) and int32 ``series_index`` (K,); output ``latents`` (K, N, D). K and L are flexible
(ct.RangeDim; L >= one patch).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
import types
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from edge_tslm.constants import ONNX_LATENTS, ONNX_SERIES, ONNX_SERIES_INDEX, ONNX_SERIES_MASK
from edge_tslm.model.minirocket_stem import sample_channels
from edge_tslm.export.spec import (
    BATCH_AXIS,
    COREML_FP16_ATOL,
    COREML_FP32_ATOL,
    COREML_MIN_COSINE,
    LENGTH_AXIS,
    MAX_BATCH,
    MAX_LENGTH,
    ExportReport,
)

PRECISIONS = ("fp16", "fp32")
COMPRESSIONS = (None, "int8", "int4", "palettize")


def _coreml_patch_forward(self, series: torch.Tensor, mask: torch.Tensor, series_index: torch.Tensor):
    """PatchEncoder.forward rewritten without symbolic shape arithmetic (coremltools' torch.export frontend has
    no ``mod``/``floordiv`` on sizes). Same result as eager:

    - pad by p - 1 zeros instead of to the next multiple of p: a stride-p conv then yields ceil(L / p) patches,
      and the extra zeros never enter a full window;
    - a patch is real if any of its samples is: a stride-p sum of the mask over each patch;
    - positions from a cumulative sum (no arange of a symbolic length); sin/cos interleaved by stack + flatten.
    """
    p, dim = self.cfg.patch_len, self.cfg.dim
    x = torch.nn.functional.pad(series * mask, (0, p - 1))  # (B, L + p - 1)
    m = torch.nn.functional.pad(mask, (0, p - 1))
    ones = torch.ones(1, 1, p, dtype=m.dtype, device=m.device)
    patch_mask = torch.nn.functional.conv1d(m[:, None, :], ones, stride=p)[:, 0] > 0.5  # (B, P): any real sample
    h = self.patch(x[:, None, :]).transpose(1, 2)  # (B, P, D)
    pos = torch.cumsum(torch.ones_like(h[0, :, :1]), dim=0) - 1.0  # (P, 1): 0, 1, 2, ...
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (D/2,)
    ang = pos * freq[None]  # (P, D/2)
    h = h + torch.stack((torch.sin(ang), torch.cos(ang)), dim=-1).flatten(1)[None]  # (1, P, D) interleaved
    for conv in self.convs:
        h = conv(h, patch_mask)
    h = h + self.series_embed(series_index)[:, None, :]
    return self.drop(self.norm(h)), patch_mask


class CoreMLSeriesEncoder(nn.Module):
    """Core ML's view of the SeriesEncoder: float mask (no bool inputs), int32 index."""

    def __init__(self, series_encoder: nn.Module):
        super().__init__()
        self.series_encoder = series_encoder

    def forward(self, series: torch.Tensor, series_mask: torch.Tensor, series_index: torch.Tensor) -> torch.Tensor:
        enc = self.series_encoder
        h, patch_mask = enc.encoder(series, series_mask, series_index.long())
        return enc.resampler(h, patch_mask)  # (K, N, D)


@contextlib.contextmanager
def coreml_patches(series_encoder: nn.Module) -> Iterator[CoreMLSeriesEncoder]:
    """Within the block the encoder runs the Core ML-friendly forward; on exit it is exactly as before."""
    if series_encoder.encoder.cfg.dim % 2:
        raise ValueError("Core ML export needs an even encoder.dim (sin/cos pairs)")
    patch_encoder = series_encoder.encoder
    was_training = series_encoder.training
    series_encoder.eval()
    patch_encoder.forward = types.MethodType(_coreml_patch_forward, patch_encoder)
    try:
        yield CoreMLSeriesEncoder(series_encoder).eval()
    finally:
        del patch_encoder.forward
        series_encoder.train(was_training)


def coreml_forward_parity(series_encoder: nn.Module, lengths: tuple[int, ...] | None = None) -> dict[str, Any]:
    """The Core ML-friendly forward vs eager, in PyTorch (runs on any OS): what was converted computes the same."""
    from edge_tslm.export.validate import compare, encoder_cases

    cases = {}
    for name, series, mask, idx in encoder_cases(series_encoder.encoder.cfg.patch_len, lengths):
        with torch.no_grad():
            ref = series_encoder.eval()(series, mask, idx).numpy()
            with coreml_patches(series_encoder) as wrapped:
                out = wrapped(series, mask.float(), idx.int()).numpy()
        cases[name] = compare(ref, out)
    return {
        "reference": "torch eager fp32",
        "checked": "the Core ML-friendly torch forward that was converted (not Core ML prediction)",
        "cases": cases,
        "max_abs_diff": max(c["max_abs_diff"] for c in cases.values()),
        "passed": all(c["max_abs_diff"] <= 1e-4 for c in cases.values()),
    }


@contextlib.contextmanager
def _integer_floordiv() -> Iterator[None]:
    """coremltools 9 converts every ``floordiv`` to fp32 (torch.floor_divide's dtype), which breaks the symbolic
    size arithmetic torch.export emits for a flexible length (the patch count, (L - 1) // p + 1, feeds the
    resampler's shapes). While converting, keep integer floordiv integral; restored on exit."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch import ops as ct_ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY as registry
    from coremltools.converters.mil.mil import types as ct_types

    table = registry.name_to_func_mapping
    saved = {k: table.get(k) for k in ("floordiv", "floor_divide")}

    def floor_divide(context, node):
        x, y = ct_ops.promote_input_dtypes(ct_ops._get_inputs(context, node, expected=2))
        if ct_types.is_int(x.dtype):
            context.add(mb.floor_div(x=x, y=y, name=node.name))
        else:
            saved["floor_divide"](context, node)

    for k in saved:
        table[k] = floor_divide
    try:
        yield
    finally:
        for k, f in saved.items():
            table[k] = f


def n_latents(enc: nn.Module) -> int:
    return int(enc.resampler.latents.shape[0])


def _baked_example_sizes(mlmodel, sizes: set[int]) -> list[str]:
    """Shape-like int constants (reshape/tile/broadcast shapes) equal to a size of the traced example."""
    bad = []
    for fn in mlmodel._mil_program.functions.values():
        for op in fn.operations:
            if op.op_type not in ("reshape", "tile", "expand_dims", "slice_by_size", "fill", "broadcast_to"):
                continue
            for name, var in op.inputs.items():
                val = getattr(var, "val", None)
                if name in ("shape", "reps", "size") and val is not None and set(np.atleast_1d(val).tolist()) & sizes:
                    bad.append(f"{op.op_type}:{op.name}.{name}={np.atleast_1d(val).tolist()}")
    return bad


def _compress(mlmodel, compress: str):
    import coremltools.optimize.coreml as cto

    if compress == "int8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    if compress == "int4":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32)
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    if compress == "palettize":
        op = cto.OpPalettizerConfig(mode="kmeans", nbits=4, granularity="per_tensor")
        return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    raise ValueError(f"compress must be one of {COMPRESSIONS}, got {compress!r}")


def package_files(path: Path) -> dict[str, dict[str, Any]]:
    """Every file inside an .mlpackage (a directory), by path relative to its parent."""
    from edge_tslm.export.onnx import file_entry

    return {str(f.relative_to(path.parent)): file_entry(f) for f in sorted(path.rglob("*")) if f.is_file()}


def export_encoder_coreml(
    model: nn.Module,
    out_path: str | Path,
    *,
    precision: str = "fp16",
    compress: str | None = None,
    validate: bool = True,
    lengths: tuple[int, ...] | None = None,
) -> ExportReport:
    """Convert encoder + resampler to an .mlpackage (mlprogram, iOS 17 / macOS 14+), flexible K and L.

    precision: compute precision of the program ("fp16" default, "fp32"). compress: weight compression with
    coremltools.optimize.coreml: "int8" (per-channel symmetric), "int4" (per-block of 32, needs iOS 18),
    "palettize" (4-bit k-means LUT). validate: prove the converted forward equals eager in PyTorch; on macOS,
    also predict with Core ML and compare (validate_encoder_coreml).
    """
    import platform

    import coremltools as ct

    from edge_tslm.export.onnx import _quiet_exporter, series_encoder_of

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if compress not in COMPRESSIONS:
        raise ValueError(f"compress must be one of {COMPRESSIONS}, got {compress!r}")
    enc = series_encoder_of(model).float()
    if getattr(enc, "rhythm", None) is not None:
        raise NotImplementedError(
            "this encoder reads a rhythm vector (encoder.rhythm_vector), which the Core ML package does not take yet; "
            "export it with --target onnx (its encoder graph has the series_vectors input) or use the torch backend"
        )
    if sample_channels(enc) > 1:
        raise NotImplementedError(
            "this encoder runs a MiniRocket stem over each window's axes together (encoder.minirocket_stem), which the "
            "Core ML package does not take yet (its batch axis would have to be 3 x windows); export it with "
            "--target onnx or use the torch backend"
        )
    out_path = Path(out_path)
    if out_path.suffix != ".mlpackage":
        raise ValueError(f"Core ML output must end in .mlpackage, got {out_path.name}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    p = enc.encoder.cfg.patch_len
    K, L = 3, 19 * p  # sizes no weight shape shares, so a baked-in example size would show in the program
    example = (torch.randn(K, L), torch.ones(K, L), torch.arange(K, dtype=torch.int32))
    batch = torch.export.Dim.DYNAMIC(min=1, max=MAX_BATCH)
    length = torch.export.Dim.DYNAMIC(min=p, max=MAX_LENGTH)
    with coreml_patches(enc) as wrapped, torch.no_grad(), _quiet_exporter(), _integer_floordiv():
        program = torch.export.export(
            wrapped,
            example,
            dynamic_shapes={"series": {0: batch, 1: length}, "series_mask": {0: batch, 1: length}, "series_index": {0: batch}},
            strict=False,
        ).run_decompositions()  # core ATen: e.g. new_ones -> full, which coremltools knows
        target = ct.target.iOS18 if compress == "int4" else ct.target.iOS17
        mlmodel = ct.convert(
            program,
            inputs=[
                ct.TensorType(name=ONNX_SERIES, shape=(ct.RangeDim(1, MAX_BATCH, K), ct.RangeDim(p, MAX_LENGTH, L)), dtype=np.float32),
                ct.TensorType(name=ONNX_SERIES_MASK, shape=(ct.RangeDim(1, MAX_BATCH, K), ct.RangeDim(p, MAX_LENGTH, L)), dtype=np.float32),
                ct.TensorType(name=ONNX_SERIES_INDEX, shape=(ct.RangeDim(1, MAX_BATCH, K),), dtype=np.int32),
            ],
            outputs=[ct.TensorType(name=ONNX_LATENTS, dtype=np.float32)],
            convert_to="mlprogram",
            minimum_deployment_target=target,
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        )
        if compress:
            mlmodel = _compress(mlmodel, compress)
    baked = _baked_example_sizes(mlmodel, {K, L, L // p, L // p + n_latents(enc)})
    if baked:
        raise RuntimeError(f"Core ML program fixes example sizes in {baked}: the flexible length would break")
    mlmodel.short_description = "edge-tslm Flamingo SeriesEncoder: series (K, L) -> latents (K, N, D)"
    if out_path.exists():
        shutil.rmtree(out_path)
    mlmodel.save(str(out_path))
    n_lat, dim = enc.resampler.latents.shape
    report = ExportReport(
        target="coreml",
        component="encoder",
        files=package_files(out_path),
        inputs={
            ONNX_SERIES: f"float32[{BATCH_AXIS},{LENGTH_AXIS}]",
            ONNX_SERIES_MASK: f"float32[{BATCH_AXIS},{LENGTH_AXIS}] (1 real, 0 padding)",
            ONNX_SERIES_INDEX: f"int32[{BATCH_AXIS}]",
        },
        outputs={ONNX_LATENTS: f"float32[{BATCH_AXIS},{n_lat},{dim}]"},
        precision=compress or precision,
        notes=[
            f"coremltools {ct.__version__}, mlprogram, minimum target {target.name}, compute precision {precision}, "
            f"flexible {BATCH_AXIS} in [1, {MAX_BATCH}] and {LENGTH_AXIS} in [{p}, {MAX_LENGTH}] (ct.RangeDim)",
            "converted from torch.export of a shape-arithmetic-free PatchEncoder forward (coreml_patches)",
            *([f"weights compressed: {compress} (coremltools.optimize.coreml)"] if compress else []),
        ],
        path=out_path,
    )
    if validate:
        report.parity = {"torch_forward": coreml_forward_parity(enc, lengths)}
        if platform.system() == "Darwin":
            report.parity["coreml_predict"] = validate_encoder_coreml(enc, out_path, precision=precision, lengths=lengths)
        else:
            report.parity["coreml_predict"] = {"skipped": "Core ML prediction needs macOS"}
    report.seconds = round(time.perf_counter() - t0, 2)
    return report


def validate_encoder_coreml(
    series_encoder: nn.Module, package: str | Path, *, precision: str = "fp16", lengths: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """macOS only: Core ML prediction vs eager at three lengths. Tolerance: fp32 max abs diff <= 1e-3;
    fp16 (or compressed) max abs diff <= 5e-2, and cosine >= 0.99 either way."""
    import coremltools as ct

    from edge_tslm.export.validate import compare, encoder_cases

    mlmodel = ct.models.MLModel(str(package), compute_units=ct.ComputeUnit.CPU_ONLY)
    atol = COREML_FP32_ATOL if precision == "fp32" else COREML_FP16_ATOL
    cases = {}
    for name, series, mask, idx in encoder_cases(series_encoder.encoder.cfg.patch_len, lengths):
        with torch.no_grad():
            ref = series_encoder.eval()(series, mask, idx).numpy()
        out = mlmodel.predict(
            {
                ONNX_SERIES: series.numpy(),
                ONNX_SERIES_MASK: mask.float().numpy(),
                ONNX_SERIES_INDEX: idx.int().numpy(),
            }
        )[ONNX_LATENTS]
        c = compare(ref, np.asarray(out, dtype=np.float32))
        c["passed"] = c["max_abs_diff"] <= atol and c["cosine"] >= COREML_MIN_COSINE
        cases[name] = c
    return {
        "runtime": f"Core ML (coremltools {ct.__version__}, CPU_ONLY)",
        "tolerance": {"max_abs_diff": atol, "min_cosine": COREML_MIN_COSINE},
        "cases": cases,
        "max_abs_diff": max(c["max_abs_diff"] for c in cases.values()),
        "passed": all(c["passed"] for c in cases.values()),
    }
