"""Compression of trained artifacts: weight-only quantization, pruning, one shared cross-attention block.

    from edge_tslm.quantize import Int8WeightOnly, quantize_, prune_, share_xattn_, save_compressed

Every transform works in place on a model, returns a report and appends its recipe to the model's
compression record; ``save_compressed`` writes the artifact (manifest: transforms, sizes, sha256, metrics)
and ``load_compressed`` rebuilds it. Importing this imports torch (torchao / bitsandbytes only when used).
"""

from edge_tslm.quantize.api import (
    Int4WeightOnly,
    Int8WeightOnly,
    QuantizationError,
    QuantReport,
    compression_record,
    config_from_dict,
    config_to_dict,
    module_bytes,
    parameter_count,
    quantize_,
    register_handler,
    resolve_backend,
)
from edge_tslm.quantize.prune import PruneReport, prune_
from edge_tslm.quantize.report import load_compressed, load_quantized, save_compressed, sizes
from edge_tslm.quantize.share import ShareReport, distill_loss, is_shared, recover_shared, share_xattn_

__all__ = [
    "Int4WeightOnly",
    "Int8WeightOnly",
    "PruneReport",
    "QuantReport",
    "QuantizationError",
    "ShareReport",
    "compression_record",
    "config_from_dict",
    "config_to_dict",
    "distill_loss",
    "is_shared",
    "load_compressed",
    "load_quantized",
    "module_bytes",
    "parameter_count",
    "prune_",
    "quantize_",
    "recover_shared",
    "register_handler",
    "resolve_backend",
    "save_compressed",
    "share_xattn_",
    "sizes",
]
