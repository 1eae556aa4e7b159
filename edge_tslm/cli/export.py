"""edge-tslm export: an artifact directory -> ONNX or Core ML files + manifest.json (sizes, sha256, parity)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class Target(str, Enum):
    onnx = "onnx"
    coreml = "coreml"


class Compression(str, Enum):
    int8 = "int8"
    int4 = "int4"
    palettize = "palettize"


def export(
    model: Annotated[Path, typer.Option(help="artifact directory of a Flamingo model, e.g. models/flamingo-har")],
    target: Annotated[Target, typer.Option(help="onnx (onnxruntime) or coreml (.mlpackage)")] = Target.onnx,
    out: Annotated[Path, typer.Option(help="output directory (created)")] = Path("export"),
    int8: Annotated[bool, typer.Option(help="onnx: dynamic int8 quantization of the encoder")] = False,
    decoder: Annotated[bool, typer.Option(help="onnx: also export the fused decoder (cross.onnx + one decoder.onnx with a KV cache)")] = False,
    opset: Annotated[int, typer.Option(help="onnx opset (a decoder with fused attention takes at least 23)")] = 18,
    precision: Annotated[str, typer.Option(help="coreml compute precision: fp16 or fp32")] = "fp16",
    compress: Annotated[Optional[Compression], typer.Option(help="coreml weight compression")] = None,
    weight_bits: Annotated[int, typer.Option(help="onnx --decoder: 4 (or 8) = block-quantized decoder weights (MatMulNBits) in one shared weights.onnx.data; 0 = fp32")] = 0,
    block_size: Annotated[int, typer.Option(help="with --weight-bits: weights per quantization block (32 or 64, ...)")] = 32,
    weight_algorithm: Annotated[str, typer.Option(help="with --weight-bits: minmax (min/max affine blocks, float zero points; exact on GGUF Q4_1 weights) or rtn (onnxruntime default, integer zero points)")] = "minmax",
    keep_scopes: Annotated[str, typer.Option(help="with --weight-bits: comma-separated module scopes kept at --keep-bits (default: the fusion blocks)")] = "xattn",
    keep_bits: Annotated[int, typer.Option(help="with --weight-bits: bits for --keep-scopes (8, or 0 = fp32)")] = 8,
    accuracy_level: Annotated[Optional[int], typer.Option(help="with --weight-bits: MatMulNBits accuracy_level of the integer-zero-point nodes (rtn; the --keep-bits 8 scopes): 4 = int8 activations, onnxruntime's fast CPU kernels (benchmarks/results/matmulnbits_micro.md)")] = None,
    fold_accuracy_level: Annotated[Optional[int], typer.Option(help="with --weight-bits and minmax: accuracy_level of the folded min/max nodes (default: fp32 activations, exact)")] = None,
    attention: Annotated[str, typer.Option(help="onnx --decoder: how the LM's self-attention is written: fused (ONNX RotaryEmbedding + Attention ops, opset 23: ~3 nodes a layer), traced (decomposed SDPA at --opset, the graph before 2026-12-06), auto (fused where the LM allows it)")] = "auto",
    pack_projections: Annotated[bool, typer.Option(help="with --weight-bits and minmax: q/k/v and gate/up as one MatMulNBits each over stacked weights (fewer nodes per decoded token)")] = False,
    parity_windows: Annotated[int, typer.Option(help="with --weight-bits: real test windows per label for the 4-bit parity record (0: seeded random windows)")] = 1,
) -> None:
    """Export encoder + resampler (and optionally the fused decoder), parity-checked against PyTorch."""
    from edge_tslm.export import export_artifact
    from edge_tslm.model.artifact import from_pretrained

    m = from_pretrained(model)
    inputs = None
    if weight_bits and parity_windows:
        from edge_tslm.export.compact import task_parity_inputs

        inputs = task_parity_inputs(m.cfg, parity_windows)
    manifest = export_artifact(
        m,
        target.value,
        out,
        int8=int8,
        decoder=decoder,
        opset=opset,
        precision=precision,
        compress=compress.value if compress else None,
        source=model,
        weight_bits=weight_bits,
        block_size=block_size,
        weight_algorithm=weight_algorithm,
        keep_scopes=tuple(x for x in keep_scopes.split(",") if x),
        keep_bits=keep_bits,
        accuracy_level=accuracy_level,
        fold_accuracy_level=fold_accuracy_level,
        pack_projections=pack_projections,
        parity_inputs=inputs,
        attention=attention,
    )
    summary = {
        "out": str(out),
        "files": {k: v["size_bytes"] for k, v in manifest["files"].items()},
        "total_size_bytes": manifest["total_size_bytes"],
        "parity_passed": manifest["parity_passed"],
    }
    if "weight_quantization" in manifest:
        wq = manifest["weight_quantization"]
        summary["weight_quantization"] = {"sqnr": wq["weight_sqnr"], "parity": wq["parity"], "seconds": wq["seconds"]}
    typer.echo(json.dumps(summary, indent=1))
    if not manifest["parity_passed"]:
        raise typer.Exit(1)
