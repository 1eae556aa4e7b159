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
    decoder: Annotated[bool, typer.Option(help="onnx: also export the fused decoder (prefill + decode with KV cache)")] = False,
    opset: Annotated[int, typer.Option(help="onnx opset")] = 18,
    precision: Annotated[str, typer.Option(help="coreml compute precision: fp16 or fp32")] = "fp16",
    compress: Annotated[Optional[Compression], typer.Option(help="coreml weight compression")] = None,
) -> None:
    """Export encoder + resampler (and optionally the fused decoder), parity-checked against PyTorch."""
    from edge_tslm.export import export_artifact
    from edge_tslm.model.artifact import from_pretrained

    m = from_pretrained(model)
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
    )
    summary = {
        "out": str(out),
        "files": {k: v["size_bytes"] for k, v in manifest["files"].items()},
        "parity_passed": manifest["parity_passed"],
    }
    typer.echo(json.dumps(summary, indent=1))
    if not manifest["parity_passed"]:
        raise typer.Exit(1)
