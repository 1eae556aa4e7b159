"""Export: the Flamingo encoder + resampler (and the fused decoder) to ONNX and Core ML, parity-checked.

Heavy imports (torch, onnx, coremltools) happen inside the functions; importing this package is cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = [
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
