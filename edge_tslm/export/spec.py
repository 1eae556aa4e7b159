"""What an export promises: tensor I/O names and axes, parity tolerances, and the report every export returns.

The encoder names come from edge_tslm.constants (the runtime reads them there too); the fused-decoder names
are defined here, beside the shapes they carry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_tslm.constants import ONNX_LATENTS, ONNX_SERIES, ONNX_SERIES_INDEX, ONNX_SERIES_MASK, ONNX_SERIES_VECTORS

# ---------------------------------------------------------------- encoder + resampler graph
ENCODER_INPUTS = (ONNX_SERIES, ONNX_SERIES_MASK, ONNX_SERIES_INDEX)  # (K, L) f32, (K, L) bool, (K,) i64
# + (K, F) f32 when the encoder reads a rhythm vector (EncoderConfig.rhythm_vector); the runtime measures it
ENCODER_VECTOR_INPUT = ONNX_SERIES_VECTORS
ENCODER_OUTPUTS = (ONNX_LATENTS,)  # (K, N, D) f32
BATCH_AXIS = "batch"  # K: series in one call (all series of all samples, flattened)
LENGTH_AXIS = "length"  # L: samples per series; any length >= one patch
MAX_BATCH = 4096
MAX_LENGTH = 1 << 22  # an upper bound for torch.export's symbolic shapes, not a model limit

# ---------------------------------------------------------------- fused decoder graphs (cross + decoder)
# cross.onnx: media -> cross K/V of every fusion block, once per window. decoder.onnx: one graph for the prompt
# (with or without a cached prefix), the label trie and every generated token, so the LM weights load once.
CROSS_GRAPH = "cross.onnx"
DECODER_GRAPH = "decoder.onnx"
DEC_INPUT_IDS = "input_ids"  # (B, T) int64
DEC_POSITION_IDS = "position_ids"  # (B, T) int64: absolute positions (a label trie shares positions between branches)
DEC_ATTENTION_MASK = "attention_mask"  # (B, 1, T, T) bool: may new token t see new token j (the cache: always)
DEC_MEDIA = "media"  # (B, S * N, Dm) f32: the window's latents, series after series (cross.onnx's input)
DEC_TS_POSITIONS = "ts_positions"  # (B, S) int64: position of each series' <ts> token (2**30: absent)
DEC_LOGIT_INDEX = "logit_index"  # (K,) int64: which of the T new tokens get logits (the prompt: its last one)
DEC_LOGITS = "logits"  # (B, K, V)
PAST_KEY = "past_key.{}"  # input, per decoder layer: (B, Hkv, P, d); P may be 0
PAST_VALUE = "past_value.{}"
PRESENT_KEY = "present_key.{}"  # output, per decoder layer: (B, Hkv, P + T, d)
PRESENT_VALUE = "present_value.{}"
# The label head (decoder.onnx and decoder_upper.onnx of compact exports): logits over a few vocabulary rows baked
# into the graph (the tokens where the artifact's labels part ways), so a classify call need not run the lm_head over
# the whole vocabulary (edge_tslm.runtime.label_trie, "labels" scoring). Pass logit_index empty to skip the lm_head.
DEC_LABEL_INDEX = "label_index"  # (K2,) int64: which of the T new tokens get label logits
DEC_LABEL_TOKENS = "label_token_index"  # (J,) int64: positions in the graph's baked token table
DEC_LABEL_LOGITS = "label_logits"  # (B, K2, J)
LABEL_HEAD_META = "edge_tslm.label_head_token_ids"  # model metadata: the baked table's vocabulary ids, a JSON list
DEC_HIDDEN_SPLIT = "hidden_split"  # (B, T, D): the input of the first fusion layer (before its cross-attention)
# The decoder cut in two at that layer (compact exports): the layers below it never see the media, so a stream whose
# per-window text is the same each time (series_text="none") computes their outputs once and runs only the upper graph.
DECODER_LOWER_GRAPH = "decoder_lower.onnx"  # input_ids, position_ids, attention_mask, past of layers < split
#                                              -> hidden_split, their present
DECODER_UPPER_GRAPH = "decoder_upper.onnx"  # hidden_split, position_ids, attention_mask, ts_positions, logit_index,
#                                              past of layers >= split, cross K/V -> logits, their present
CROSS_KEY = "cross_key.{}"  # per distinct fusion block (named by its first decoder layer): (B, H, S * N, d)
CROSS_VALUE = "cross_value.{}"


def causal_mask(tokens: int, batch: int = 1) -> np.ndarray:
    """The decoder graph's attention_mask for plain causal tokens: (B, 1, T, T) bool, new token t sees the new
    tokens up to itself (and, always, the whole cache)."""
    m = np.tril(np.ones((tokens, tokens), dtype=bool))  # (T, T)
    return np.ascontiguousarray(np.broadcast_to(m, (batch, 1, tokens, tokens)))


SEQ_AXIS = "tokens"
LOGITS_AXIS = "logit_rows"
PAST_AXIS = "past"
MEDIA_AXIS = "media_slots"
SERIES_AXIS = "num_series"  # not "series": sympy has a function of that name

# ---------------------------------------------------------------- parity tolerances (stated, checked)
ENCODER_FP32_ATOL = 1e-4  # max |onnx - eager| over the latents
ENCODER_INT8_ATOL = 0.25  # dynamic int8 weights+activations: looser; cosine similarity is the main check
ENCODER_INT8_MIN_COSINE = 0.99
DECODER_FP32_ATOL = 1e-3  # max |onnx - eager| over the logits (prefill and each decode step)
COREML_FP32_ATOL = 1e-3
COREML_FP16_ATOL = 5e-2
COREML_MIN_COSINE = 0.99


@dataclass
class ExportReport:
    """What one export wrote and how well it matches eager PyTorch; ``to_dict`` goes into manifest.json."""

    target: str  # "onnx" | "coreml"
    component: str  # "encoder" | "decoder"
    files: dict[str, dict[str, Any]]  # file name -> {size_bytes, sha256}
    inputs: dict[str, str]  # name -> "dtype[shape]" with symbolic axes
    outputs: dict[str, str]
    precision: str = "fp32"  # fp32 | fp16 | int8 | int4 | palettize
    opset: int | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    path: Path | None = None  # the main file/package (not serialised: the manifest lists files by name)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("path")
        return d

    @property
    def size_bytes(self) -> int:
        return sum(f["size_bytes"] for f in self.files.values())


def encoder_io(num_latents: int, dim: int, vector_dim: int = 0) -> tuple[dict[str, str], dict[str, str]]:
    """Human-readable I/O description of the encoder graph (for reports and manifests)."""
    k, n = BATCH_AXIS, LENGTH_AXIS
    inputs = {ONNX_SERIES: f"float32[{k},{n}]", ONNX_SERIES_MASK: f"bool[{k},{n}]", ONNX_SERIES_INDEX: f"int64[{k}]"}
    if vector_dim:
        inputs[ONNX_SERIES_VECTORS] = f"float32[{k},{vector_dim}]"
    return inputs, {ONNX_LATENTS: f"float32[{k},{num_latents},{dim}]"}
