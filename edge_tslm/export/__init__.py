"""Export: the Flamingo encoder + resampler (and the fused decoder) to ONNX and Core ML, parity-checked.

Heavy imports (torch, onnx, coremltools) happen inside the functions; importing this package is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "export_artifact",
    "ExportReport",
    "ParityError",
    "export_encoder_onnx",
    "export_decoder_onnx",
    "export_encoder_coreml",
    "validate_encoder_onnx",
]


def __getattr__(name: str) -> Any:
    if name == "ExportReport":
        from edge_tslm.export.spec import ExportReport

        return ExportReport
    if name in ("ParityError", "export_encoder_onnx", "export_decoder_onnx"):
        from edge_tslm.export import onnx as _onnx

        return getattr(_onnx, name)
    if name == "export_encoder_coreml":
        from edge_tslm.export.coreml import export_encoder_coreml

        return export_encoder_coreml
    if name == "validate_encoder_onnx":
        from edge_tslm.export.validate import validate_encoder_onnx

        return validate_encoder_onnx
    raise AttributeError(f"module 'edge_tslm.export' has no attribute {name!r}")


EXPORT_FORMAT = "edge-tslm-export/1"


def export_artifact(
    model: Any,
    target: str,
    out_dir: str | Path,
    *,
    int8: bool = False,
    decoder: bool = False,
    opset: int = 18,
    precision: str = "fp16",
    compress: str | None = None,
    source: str | Path | None = None,
    weight_bits: int = 0,
    block_size: int = 32,
    weight_algorithm: str = "minmax",
    keep_scopes: tuple[str, ...] = ("xattn",),
    keep_bits: int = 8,
    accuracy_level: int | None = None,
    fold_accuracy_level: int | None = None,
    pack_projections: bool = False,
    parity_inputs: Any = None,
    attention: str = "auto",
) -> dict[str, Any]:
    """Export ``model`` (a FlamingoTSLM) into an artifact directory; returns the manifest it wrote.

    onnx: encoder.onnx (int8: dynamic int8), and with ``decoder`` cross.onnx + decoder.onnx + tokenizer/.
    coreml: encoder.mlpackage (precision fp16|fp32, compress None|int8|int4|palettize). The directory also holds
    config.json (rebuilds the model's shapes) and manifest.json (every file's size and sha256, what was
    exported, the parity results).
    weight_bits (onnx + decoder): 4 (or 8) -> the decoder graphs' weights block-quantized with onnxruntime's
    MatMulNBits (``block_size`` wide blocks) and stored once in weights.onnx.data
    (edge_tslm.export.compact: weight_algorithm rtn|minmax, MatMuls under ``keep_scopes`` at ``keep_bits``); the 4-bit parity record compares the artifact's OnnxBackend with the fp32 torch
    model on ``parity_inputs`` ([(text, series)], default: seeded random windows).
    attention (onnx + decoder): "auto" | "fused" | "traced", how the LM's self-attention is written
    (edge_tslm.export.onnx.export_decoder_onnx).
    """
    import json

    from edge_tslm import __version__
    from edge_tslm.constants import (
        CONFIG_FILE,
        MANIFEST_BACKBONE,
        MANIFEST_FILE,
        MANIFEST_FILES,
        MANIFEST_FORMAT,
        MANIFEST_SHA256,
        MANIFEST_SIZE_BYTES,
        TOKENIZER_DIR,
    )
    from edge_tslm.export.onnx import file_entry

    if weight_bits and not (target == "onnx" and decoder):
        raise ValueError("weight_bits quantizes the fused decoder: use target='onnx' with decoder=True (--decoder)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    compact = None
    if target == "onnx":
        from edge_tslm.export.onnx import export_decoder_onnx, export_encoder_onnx

        reports.append(export_encoder_onnx(model, out / "encoder.onnx", opset=opset, int8=int8))
        if decoder:
            reports.append(export_decoder_onnx(model, out, opset=opset, attention=attention))
            model.tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    elif target == "coreml":
        from edge_tslm.export.coreml import export_encoder_coreml

        if decoder:
            raise ValueError("the fused decoder exports to ONNX only; drop --decoder for Core ML")
        reports.append(export_encoder_coreml(model, out / "encoder.mlpackage", precision=precision, compress=compress))
    else:
        raise ValueError(f"target must be 'onnx' or 'coreml', got {target!r}")
    (out / CONFIG_FILE).write_text(json.dumps(model.cfg.to_dict(), indent=2))
    if weight_bits:
        from edge_tslm.export.compact import CompactConfig, compact_export

        ccfg = CompactConfig(
            bits=weight_bits, block_size=block_size, algorithm=weight_algorithm, keep_scopes=tuple(keep_scopes), keep_bits=keep_bits,
            accuracy_level=accuracy_level, fold_accuracy_level=fold_accuracy_level, pack_projections=pack_projections,
        )
        compact = compact_export(model, out, reports[-1], ccfg, inputs=parity_inputs)
    files = {
        str(f.relative_to(out)): file_entry(f)
        for f in sorted(out.rglob("*"))
        if f.is_file() and f.name != MANIFEST_FILE
    }
    info = model.info
    manifest = {
        MANIFEST_FORMAT: EXPORT_FORMAT,
        "edge_tslm_version": __version__,
        "source_artifact": str(source) if source is not None else None,
        "variant": model.cfg.variant,
        MANIFEST_BACKBONE: {"name": info.name, "sha256": info.sha256, "model_type": info.model_type},
        "target": target,
        "exported": [r.to_dict() for r in reports],
        MANIFEST_FILES: files,
        "total_size_bytes": sum(f[MANIFEST_SIZE_BYTES] for f in files.values()),
        "parity_passed": all(_passed(r.parity) for r in reports),
    }
    if compact is not None:
        manifest["weight_quantization"] = compact
    assert all(MANIFEST_SHA256 in f for f in files.values())
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return manifest


def _passed(parity: dict[str, Any]) -> bool:
    if "passed" in parity:
        return bool(parity["passed"])
    return all(_passed(v) for v in parity.values() if isinstance(v, dict) and "skipped" not in v)
