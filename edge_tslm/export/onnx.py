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

from edge_tslm.model.ecg_stem import EcgStem
from edge_tslm.model.minirocket_stem import sample_channels
from edge_tslm.export.spec import (
    BATCH_AXIS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    ENCODER_VECTOR_INPUT,
    LENGTH_AXIS,
    MAX_BATCH,
    MAX_LENGTH,
    ExportReport,
    encoder_io,
)


class ParityError(AssertionError):
    """An exported graph disagrees with eager PyTorch beyond the stated tolerance. ``component``: which graph
    ("encoder" or "decoder"), so a caller can react to one (the demo retries an int8 encoder in fp32)."""

    def __init__(self, message: str, component: str | None = None):
        super().__init__(message)
        self.component = component


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


def _example_encoder_inputs(enc: nn.Module) -> tuple[torch.Tensor, ...]:
    p = enc.encoder.cfg.patch_len
    K, L = 2, 16 * p  # the graph pads any L; the parity check runs lengths that are not whole patches
    stem = getattr(enc, "stem", None)
    if isinstance(stem, EcgStem):  # long enough that the last (stride-2**n) layer is not one sample: a size-1
        L = max(L, 4 << len(stem.convs))  # dim would be specialised by the trace
    elif sample_channels(enc) > 1:  # the MiniRocket stem reads whole samples of C rows: two of them, at the fitted length
        K, L = 2 * sample_channels(enc), max(L, stem.cfg.window)
    dev = next(enc.parameters()).device
    series = torch.randn(K, L, device=dev)
    mask = torch.ones(K, L, dtype=torch.bool, device=dev)
    if getattr(enc, "rhythm", None) is None:
        return series, mask, torch.arange(K, device=dev)
    return series, mask, torch.arange(K, device=dev), example_vectors(enc, K, dev)


def example_vectors(enc: nn.Module, K: int, device: torch.device | str = "cpu", seed: int = 0) -> torch.Tensor:
    """(K, F) rhythm vectors for tracing and parity: typical sizes with every third number undefined (nan)."""
    scales = enc.rhythm.scales.to(device)  # (F,)
    gen = torch.Generator().manual_seed(seed)
    v = (torch.rand(K, scales.numel(), generator=gen).to(device) * 2) * scales  # (K, F)
    v[:, ::3] = float("nan")
    return v



def _to_onnx(
    module: nn.Module,
    args: tuple,
    dynamic_shapes: dict[str, Any],
    path: Path,
    *,
    opset: int,
    input_names: list[str],
    output_names: list[str],
    axis_names: dict[tuple[str, int], str],
) -> None:
    """torch.export.export (non-strict; a failure surfaces here instead of a slow exporter fallback) -> ONNX.

    axis_names: (input name, axis) -> the name that axis carries in the saved graph; the exporter's own
    symbols (s0, s1, ...) are renamed everywhere they appear, expressions included ("past + 1").
    """
    program = torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False)
    onnx_program = torch.onnx.export(
        program,
        dynamo=True,
        opset_version=opset,
        input_names=input_names,
        output_names=output_names,
        optimize=True,
        verbose=False,
    )
    onnx_program.save(str(path), external_data=False)
    _rename_axes(path, axis_names)


def _rename_axes(path: Path, axis_names: dict[tuple[str, int], str]) -> None:
    import re

    import onnx

    model = onnx.load(str(path))
    inputs = {i.name: i for i in model.graph.input}
    mapping: dict[str, str] = {}
    for (name, axis), new in axis_names.items():
        dim = inputs[name].type.tensor_type.shape.dim[axis]
        if dim.dim_param and re.fullmatch(r"[A-Za-z_]\w*", dim.dim_param):
            mapping[dim.dim_param] = new
    pattern = re.compile(r"\b[A-Za-z_]\w*\b")
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in vi.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: mapping.get(m.group(0), m.group(0)), dim.dim_param)
    onnx.save(model, str(path))


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

    int8: dynamic int8 quantization of MatMul/Gemm weights (onnxruntime.quantization.quantize_dynamic; convs fp32);
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
    C = sample_channels(enc)
    if C > 1:  # the MiniRocket stem reads whole samples: K = C * samples
        batch = C * torch.export.Dim("samples", min=1, max=MAX_BATCH // C)
    # Dim.DYNAMIC, not a named Dim: tracing records 0/1-specialisation guards (e.g. patches != 1) that hold
    # for the traced example only; the ONNX ops themselves are shape-generic, and the parity check runs a
    # one-patch series to prove it.
    length = torch.export.Dim.DYNAMIC(min=patch_len, max=MAX_LENGTH)
    fp32_path = out_path if not int8 else Path(tempfile.mkdtemp(prefix="edge_tslm_onnx_")) / "encoder_fp32.onnx"
    args = _example_encoder_inputs(enc)
    shapes = {"series": {0: batch, 1: length}, "mask": {0: batch, 1: length}, "series_index": {0: batch}}
    names = list(ENCODER_INPUTS)
    if len(args) == 4:  # the rhythm vector: measured by the runtime, read by the graph
        shapes["vectors"] = {0: batch}
        names.append(ENCODER_VECTOR_INPUT)
    with export_patches(enc), torch.no_grad(), _quiet_exporter():
        _to_onnx(
            enc,
            args,
            shapes,
            fp32_path,
            opset=opset,
            input_names=names,
            output_names=list(ENCODER_OUTPUTS),
            axis_names={(ENCODER_INPUTS[0], 0): BATCH_AXIS, (ENCODER_INPUTS[0], 1): LENGTH_AXIS},
        )
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
                # 7-bit weights: on x86 CPUs without VNNI (AVX2 only) onnxruntime's u8 x s8 kernel adds pairs of
                # products in int16 and saturates with full 8-bit weights; the tiny test encoder then missed
                # parity (cosine 0.95) on such a host while passing on an AVX-512 VNNI one. An artifact must be
                # right on whichever CPU runs it, so every export takes the 7-bit range.
                reduce_range=True,
                # Not Conv: onnxruntime runs a dynamically quantized Conv as ConvInteger, its slow path. On a 30 s
                # ECG window at 150 Hz (one thread) the encoder took 44 ms with int8 Conv + MatMul, 17 ms with
                # int8 MatMul only (fp32 convs, +1.9 MB), 20 ms all fp32 (benchmarks/results/stream_latency.md).
                op_types_to_quantize=["MatMul", "Gemm"],
            )
        onnx.checker.check_model(str(out_path), full_check=True)
        notes.append(
            "int8: onnxruntime quantize_dynamic of MatMul/Gemm (QInt8 weights in the 7-bit range, per-tensor; "
            "activations quantized at run time); convolutions stay fp32 (ConvInteger is slower than the fp32 Conv)"
        )
        fp32_path.unlink()
        fp32_path.parent.rmdir()
    n_lat, dim = enc.resampler.latents.shape
    inputs, outputs = encoder_io(n_lat, dim, args[3].shape[1] if len(args) == 4 else 0)
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
            raise ParityError(f"{out_path}: encoder parity failed: {report.parity}", component="encoder")
    report.seconds = round(time.perf_counter() - t0, 2)
    return report


# ---------------------------------------------------------------- fused decoder (LM + gated cross-attention)


class _CrossKV(dict):
    """Distinct-block index j (see fusion_blocks) -> (k, v) of that block, precomputed once per window by the prefill.

    Passed where the hooks expect the media; under ``decoder_export_patches`` each block's ``media_kv`` returns
    its own entry instead of projecting the media again.
    """


def fusion_blocks(model: nn.Module) -> list[tuple[int, nn.Module]]:
    """(first insertion layer, block) for each distinct fusion block: one entry when the block is shared
    (FusionConfig.shared), whose cross K/V then serve every insertion point."""
    seen: set[int] = set()
    out = []
    for i in model.insertion:
        block = model.xattn[str(i)]
        if id(block) not in seen:
            seen.add(id(block))
            out.append((i, block))
    return out


def _flat_cache(cache) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for layer in cache.layers:
        out += [layer.keys, layer.values]
    return out


def _check_decoder_exportable(model: nn.Module) -> None:
    from edge_tslm.backbones import decoder_layers

    if not hasattr(model, "xattn") or not hasattr(model, "insertion"):
        raise TypeError(f"{type(model).__name__} is not a FlamingoTSLM: the fused-decoder export needs gated cross-attention")
    model_type = model.lm.config.model_type
    if model_type not in DECODER_FAMILIES:
        raise NotImplementedError(
            f"fused-decoder export is implemented and parity-tested for {sorted(DECODER_FAMILIES)} backbones, "
            f"not {model_type!r} (sliding-window caches and other layouts need their own cache flattening)"
        )
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        raise ValueError(f"export the decoder from a float32 model (found {sorted(map(str, dtypes))}); call model.float()")
    decoder_layers(model.lm)  # raises for an unknown layout


# Llama-layout decoders with a plain (non-sliding) DynamicCache: one key and one value tensor per layer.
DECODER_FAMILIES = frozenset({"llama", "mistral", "qwen2", "qwen3", "smollm3"})


class CrossGraph(nn.Module):
    """media (B, S*N, Dm) -> cross K/V (B, H, S*N, d) of each distinct fusion block: once per window."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, media):
        cross: list[torch.Tensor] = []
        for _, block in fusion_blocks(self.model):
            cross += list(block.media_kv(media))
        return tuple(cross)


class DecoderGraph(nn.Module):
    """(input_ids, position_ids, attention_mask (B, 1, T, T) bool over the new tokens, ts_positions, logit_index,
    past K/V..., cross K/V...)
    -> (logits at logit_index, present K/V...).

    One graph for every decoder call: the prompt (past P = 0, or a cached prefix), the label trie (one row whose
    tokens see only their own branch: the mask and the positions say so) and each generated token. The
    FlamingoTSLM's own decoder call (fusion pre-hooks, DynamicCache rebuilt from flat tensors) is what traces.
    """

    def __init__(self, model: nn.Module, rope: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.rope = rope  # RopeTables when the LM's attention exports as ONNX's fused ops (onnx_attention)

    def forward(self, input_ids, position_ids, attention_mask, ts_positions, logit_index, *kv):
        from transformers import DynamicCache

        from edge_tslm.backbones import decoder_layers

        md = self.model
        n_layers = md.lm.config.num_hidden_layers
        past, cross = kv[: 2 * n_layers], kv[2 * n_layers :]
        cache = DynamicCache(config=md.lm.config)
        for i in range(n_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        media = _CrossKV({j: (cross[2 * j], cross[2 * j + 1]) for j in range(len(cross) // 2)})
        B, T = input_ids.shape
        # P from the last layer's cache (every layer's is the same length): the graph's upper part must not read a
        # lower layer's input, or it could not be cut out at the split layer (split_decoder)
        seen = torch.ones(B, 1, T, past[-1].shape[2], dtype=torch.bool, device=input_ids.device)  # the cache: all visible
        mask = torch.cat([seen, attention_mask], dim=-1)  # (B, 1, T, P + T)
        captured: list[torch.Tensor] = []
        split = split_layer(md)
        # prepend: before the fusion pre-hook of that layer, so this is the input its cross-attention gets
        handle = decoder_layers(md.lm)[split].register_forward_pre_hook(
            lambda _m, args, kwargs: captured.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True,
            prepend=True,
        )
        try:
            hidden, cache = md._run(input_ids, mask, media, ts_positions, cache, 0, True, positions=position_ids)
        finally:
            handle.remove()
        logits = md.head(hidden.index_select(1, logit_index))  # (B, K, V)
        return (logits, *_flat_cache(cache), captured[0])


def split_layer(model: nn.Module) -> int:
    """The first decoder layer with a fusion block: every layer below it sees text only."""
    return min(model.insertion)


EXPORT_ATTENTION = "edge_tslm_export_sdpa"


def _export_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """SDPA under the graph's explicit mask with is_causal=False. transformers' sdpa path decides is_causal from
    ``q_len > 1``, which is a symbolic bool once the token axis is dynamic; the mask here says everything."""
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: (B, Hkv, P+T, d) -> (B, H, P+T, d)
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None  # (B, T, H, d), no weights


@contextlib.contextmanager
def _explicit_mask_attention(lm: nn.Module) -> Iterator[None]:
    """Within the block the LM's attention layers call _export_sdpa."""
    from transformers import AttentionInterface

    AttentionInterface.register(EXPORT_ATTENTION, _export_sdpa)
    cfg = lm.config
    before = cfg._attn_implementation
    cfg._attn_implementation = EXPORT_ATTENTION
    try:
        yield
    finally:
        cfg._attn_implementation = before


@contextlib.contextmanager
def decoder_export_patches(model: nn.Module) -> Iterator[nn.Module]:
    """Let each fusion block take its precomputed cross K/V (a _CrossKV) in place of the media; eval mode."""
    was_training = model.training
    model.eval()
    blocks = [b for _, b in fusion_blocks(model)]
    for j, block in enumerate(blocks):

        def media_kv(self, media, _j=j):
            if isinstance(media, _CrossKV):
                return media[_j]
            return type(self).media_kv(self, media)

        block.media_kv = types.MethodType(media_kv, block)
    try:
        yield model
    finally:
        for block in blocks:
            del block.media_kv
        model.train(was_training)


def decoder_io_names(model: nn.Module) -> dict[str, list[str]]:
    from edge_tslm.export import spec

    n_layers = model.lm.config.num_hidden_layers
    present = [n.format(i) for i in range(n_layers) for n in (spec.PRESENT_KEY, spec.PRESENT_VALUE)]
    past = [n.format(i) for i in range(n_layers) for n in (spec.PAST_KEY, spec.PAST_VALUE)]
    cross = [n.format(i) for i, _ in fusion_blocks(model) for n in (spec.CROSS_KEY, spec.CROSS_VALUE)]
    return {
        "cross_inputs": [spec.DEC_MEDIA],
        "cross_outputs": cross,
        "decoder_inputs": [
            spec.DEC_INPUT_IDS, spec.DEC_POSITION_IDS, spec.DEC_ATTENTION_MASK, spec.DEC_TS_POSITIONS, spec.DEC_LOGIT_INDEX,
            *past, *cross,
        ],
        "decoder_outputs": [spec.DEC_LOGITS, *present, spec.DEC_HIDDEN_SPLIT],  # the halves: split_decoder
    }


def _example_decoder_inputs(model: nn.Module):
    """B=2, P=5 cached + T=7 new tokens, two series (the second absent in sample 1): every dynamic axis is > 1."""
    from edge_tslm.model.flamingo import ABSENT

    gen = torch.Generator().manual_seed(0)
    B, P, T, S = 2, 9, 6, 2
    n_lat, dim = model.cfg.resampler.num_latents, model.cfg.encoder.dim
    vocab = model.new_tokens.base_vocab
    ids = torch.randint(3, vocab, (B, P + T), generator=gen)
    ids[:, 3] = model.ts_id
    ids[0, 7] = model.ts_id
    ts_pos = torch.tensor([[3, 7], [3, ABSENT]])
    media = torch.randn(B, S * n_lat, dim, generator=gen)
    media[1, n_lat:] = 0.0
    return ids, P, media, ts_pos


def export_decoder_onnx(
    model: nn.Module,
    out_dir: str | Path,
    *,
    opset: int = 18,
    validate: bool = True,
    strict: bool = True,
    attention: str = "auto",
) -> ExportReport:
    """Export the fused decoder (LM + gated cross-attention) as two ONNX graphs.

    ``cross.onnx``: media (B, S*N, Dm) f32 (the encoder's latents, series after series) -> cross_key/value.{layer}
    (B, H, S*N, d) for each distinct fusion block: once per window. ``decoder.onnx``: input_ids (B, T) i64,
    position_ids (B, T) i64, attention_mask (B, 1, T, T) bool (which new tokens each new token sees; the cache
    is always fully visible), ts_positions (B, S) i64, logit_index (K,) i64,
    past_key/value.{layer} (B, Hkv, P, d) with P >= 0, cross_key/value.* -> logits (B, K, V) at the tokens
    logit_index names, present_key/value.{layer} (B, Hkv, P+T, d). One graph serves the prompt, a cached
    prompt prefix, the label trie and each generated token, so a runtime loads the LM weights once.
    Llama-layout backbones only (see DECODER_FAMILIES).

    attention: "fused" writes each LM layer's self-attention as ONNX's RotaryEmbedding + Attention ops (opset 23,
    edge_tslm.export.onnx_attention: ~3 nodes a layer instead of ~60), "traced" as the decomposed SDPA the exporter
    traces (the given opset), "auto" fused where the LM allows it.
    """
    import onnx

    from edge_tslm.export import spec
    from edge_tslm.export.onnx_attention import ONNX_ATTENTION_OPSET, RopeTables, onnx_attention, onnx_attention_unsupported

    _check_decoder_exportable(model)
    if attention not in ("auto", "fused", "traced"):
        raise ValueError(f"attention must be 'auto', 'fused' or 'traced', got {attention!r}")
    why_not = onnx_attention_unsupported(model.lm)
    if attention == "fused" and why_not:
        raise NotImplementedError(f"attention='fused' does not cover this LM: {why_not}; export with attention='traced'")
    fused_attention = attention != "traced" and why_not is None
    decoder_opset = max(opset, ONNX_ATTENTION_OPSET) if fused_attention else opset
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = decoder_io_names(model)
    t0 = time.perf_counter()
    batch = torch.export.Dim(spec.BATCH_AXIS, min=1, max=MAX_BATCH)
    series = torch.export.Dim(spec.SERIES_AXIS, min=1, max=1 << 10)
    slots = series * model.cfg.resampler.num_latents  # media slots: N latents per series
    tokens = torch.export.Dim(spec.SEQ_AXIS, min=1, max=1 << 16)
    past = torch.export.Dim(spec.PAST_AXIS, min=0, max=1 << 16)
    dyn = torch.export.Dim.DYNAMIC  # logit rows
    ids, P, media, ts_pos = _example_decoder_inputs(model)
    B, T = ids.shape[0], ids.shape[1] - P
    n_cache = 2 * model.lm.config.num_hidden_layers
    cross_path, decoder_path = out_dir / spec.CROSS_GRAPH, out_dir / spec.DECODER_GRAPH
    with decoder_export_patches(model), _explicit_mask_attention(model.lm), torch.no_grad(), _quiet_exporter():
        cross_graph = CrossGraph(model)
        _to_onnx(
            cross_graph,
            (media,),
            {"media": {0: batch, 1: slots}},
            cross_path,
            opset=opset,
            input_names=names["cross_inputs"],
            output_names=names["cross_outputs"],
            axis_names={(spec.DEC_MEDIA, 0): spec.BATCH_AXIS, (spec.DEC_MEDIA, 1): spec.MEDIA_AXIS},
        )
        cross = cross_graph(media)
        rope = RopeTables(model.lm) if fused_attention else None
        graph = DecoderGraph(model, rope)
        positions = torch.arange(P + T)[None].expand(B, -1)
        empty = tuple(x for _ in range(n_cache // 2) for x in (torch.zeros(B, *_kv_shape(model, 0)),) * 2)
        mask0 = torch.from_numpy(spec.causal_mask(P, B))
        # the LM's attention layers run the fused ops within it, for the eager example pass and the trace alike
        with onnx_attention(model.lm, rope) if fused_attention else contextlib.nullcontext():
            kv = graph(ids[:, :P], positions[:, :P], mask0, ts_pos, torch.tensor([P - 1]), *empty, *cross)[1:-1]  # present K/V
            example = tuple(  # clones: a view's base would be traced as an input of its own
                x.clone() for x in (
                    ids[:, P:], positions[:, P:], torch.from_numpy(spec.causal_mask(T, B)), ts_pos, torch.tensor([T - 1, 0]),
                    *kv, *cross,
                )
            )
            _to_onnx(
                graph,
                example,
                {
                    "input_ids": {0: batch, 1: tokens},
                    "position_ids": {0: batch, 1: tokens},
                    "attention_mask": {0: batch, 2: tokens, 3: tokens},
                    "ts_positions": {0: batch, 1: series},
                    "logit_index": {0: dyn},
                    "kv": tuple([{0: batch, 2: past}] * n_cache + [{0: batch, 2: slots}] * len(cross)),
                },
                decoder_path,
                opset=decoder_opset,
                input_names=names["decoder_inputs"],
                output_names=names["decoder_outputs"],
                axis_names={
                    (spec.DEC_INPUT_IDS, 0): spec.BATCH_AXIS,
                    (spec.DEC_INPUT_IDS, 1): spec.SEQ_AXIS,
                    (spec.DEC_ATTENTION_MASK, 3): spec.SEQ_AXIS,
                    (spec.DEC_TS_POSITIONS, 1): spec.SERIES_AXIS,
                    (spec.DEC_LOGIT_INDEX, 0): spec.LOGITS_AXIS,
                    **{(n, 2): spec.PAST_AXIS for n in names["decoder_inputs"][5 : 5 + n_cache]},
                },
            )
    for p in (cross_path, decoder_path):
        onnx.checker.check_model(str(p), full_check=True)
    fused = fuse_rms_norms(decoder_path)  # after the checker: the fused op is onnxruntime's, not standard ONNX
    cfg = model.lm.config
    hkv, d = _kv_shape(model, 0)[0], _kv_shape(model, 0)[2]
    fh, fd = model.cfg.fusion.heads, model.cfg.fusion.dim_head
    blocks = ",".join(str(i) for i, _ in fusion_blocks(model))
    report = ExportReport(
        target="onnx",
        component="decoder",
        files={p.name: file_entry(p) for p in (cross_path, decoder_path)},
        inputs={
            "cross": f"media float32[B,S*N,{model.cfg.encoder.dim}]",
            "decoder": "input_ids int64[B,T], position_ids int64[B,T], attention_mask bool[B,1,T,T], "
            f"ts_positions int64[B,S], logit_index int64[K], past_key/value.{{0..{cfg.num_hidden_layers - 1}}} "
            f"float32[B,{hkv},P,{d}] (P >= 0), cross_key/value.{{{blocks}}} float32[B,{fh},S*N,{fd}]",
        },
        outputs={
            "cross": f"cross_key/value.{{{blocks}}} float32[B,{fh},S*N,{fd}]",
            "decoder": f"logits float32[B,K,{cfg.vocab_size}], present_key/value.* float32[B,{hkv},P+T,{d}], "
            f"hidden_split float32[B,T,{cfg.hidden_size}] (the input of layer {split_layer(model)}, the first fusion layer)",
        },
        opset=decoder_opset,
        notes=[
            f"torch.onnx dynamo exporter (torch {torch.__version__}), opset {decoder_opset}; the model's own decoder call "
            "(fusion pre-hooks, DynamicCache rebuilt from flat tensors) is traced, "
            + ("the LM's self-attention as ONNX RotaryEmbedding + Attention ops (edge_tslm.export.onnx_attention) "
               if fused_attention else "attention as SDPA ")
            + "under the graph's explicit 4-D mask"
            + ("" if fused_attention or attention == "traced" else f" (fused attention not used: {why_not})"),
            "one decoder graph for prompt, cached prefix, label trie and generation; the LM weights are embedded (fp32)",
            f"{fused} RMSNorms as one node each (RMSNormalization at opset 23, else onnxruntime.transformers' "
            "SimplifiedLayerNormalization fusion; the parity check runs this graph)",
            f"fusion blocks at layers {list(model.insertion)}; cross K/V per distinct block "
            f"{[i for i, _ in fusion_blocks(model)]} (a shared block has one pair)",
        ],
        path=out_dir,
    )
    if validate:
        from edge_tslm.export.validate import validate_decoder_onnx

        report.parity = validate_decoder_onnx(model, cross_path, decoder_path)
        if strict and not report.parity["passed"]:
            raise ParityError(f"{out_dir}: decoder parity failed: {report.parity}", component="decoder")
    report.seconds = round(time.perf_counter() - t0, 2)
    return report


def split_decoder(decoder: Any, layers: int, split: int) -> tuple[Any, Any]:
    """decoder.onnx's ModelProto -> (lower, upper) ModelProtos cut at ``hidden_split``, the input of layer ``split``.

    lower: input_ids, position_ids, attention_mask, past of layers < split -> hidden_split, their present K/V.
    upper: hidden_split, position_ids, attention_mask, ts_positions, logit_index, past of layers >= split, cross K/V
    -> logits, their present K/V. Together they compute what decoder.onnx does, with no node in both but the few
    that derive positions and masks; no weight is in both unless the graph shares it (a tied embedding). A stream
    whose per-window text does not change runs the lower graph once and the upper graph per window."""
    from onnx.utils import Extractor

    from edge_tslm.export import spec

    past = [n.format(i) for i in range(layers) for n in (spec.PAST_KEY, spec.PAST_VALUE)]
    present = [n.format(i) for i in range(layers) for n in (spec.PRESENT_KEY, spec.PRESENT_VALUE)]
    graph_inputs = [i.name for i in decoder.graph.input]
    if spec.DEC_HIDDEN_SPLIT not in {o.name for o in decoder.graph.output}:
        raise ValueError(f"this decoder.onnx has no {spec.DEC_HIDDEN_SPLIT!r} output (an export before edge-tslm 0.6); re-export it")
    cross = [n for n in graph_inputs if n.startswith("cross_")]
    ex = Extractor(decoder)
    k = 2 * split
    lower = ex.extract_model([spec.DEC_INPUT_IDS, spec.DEC_POSITION_IDS, spec.DEC_ATTENTION_MASK, *past[:k]],
                             [spec.DEC_HIDDEN_SPLIT, *present[:k]])
    upper = ex.extract_model([spec.DEC_HIDDEN_SPLIT, spec.DEC_POSITION_IDS, spec.DEC_ATTENTION_MASK, spec.DEC_TS_POSITIONS,
                              spec.DEC_LOGIT_INDEX, *past[k:], *cross], [spec.DEC_LOGITS, *present[k:]])
    for part, name in ((lower, "lower"), (upper, "upper")):
        _own_cache_shapes(part, spec.PAST_KEY.format(0 if part is lower else split))
        produced = {o for n in part.graph.node for o in n.output} | {i.name for i in part.graph.input}
        produced |= {t.name for t in part.graph.initializer}
        dangling = sorted({i for n in part.graph.node for i in n.input if i and i not in produced})
        if dangling:
            raise ValueError(f"the {name} half of decoder.onnx reads {dangling[:4]} from the other half; it cannot be cut "
                             f"at layer {split}")
        del part.opset_import[:]
        part.opset_import.extend(decoder.opset_import)
    return lower, upper


def _own_cache_shapes(part: Any, own_past: str) -> None:
    """Every layer's cache has the same shape, so the exporter reads the cache length (for masks and positions)
    from whichever past input it likes, often a layer of the other half: a Shape of another layer's past becomes a
    Shape of ``own_past``. Any other use of a foreign input is left for split_decoder to refuse."""
    names = {i.name for i in part.graph.input}
    for node in part.graph.node:
        if node.op_type == "Shape" and node.input[0].startswith("past_") and node.input[0] not in names:
            node.input[0] = own_past


# An RMSNorm as one node: onnxruntime's fused op, or ONNX's own (opset 23, which the exporter writes itself there)
ONE_NODE_RMS_NORMS = ("SimplifiedLayerNormalization", "RMSNormalization")


def fuse_rms_norms(path: Path) -> int:
    """RMSNorm as exported (Pow, ReduceMean, Add, Sqrt, Reciprocal, Mul, Mul) -> one SimplifiedLayerNormalization
    node, with onnxruntime.transformers' own fusion. A decoded token runs ~3,100 small nodes; this removes ~370 of
    them (61 norms in SmolLM2-135M). Returns the number of one-node norms afterwards (at opset 23 the exporter
already writes ONNX's RMSNormalization, and there is nothing left to fuse)."""
    import onnx
    from onnxruntime.transformers.fusion_simplified_layernorm import FusionSimplifiedLayerNormalization
    from onnxruntime.transformers.onnx_model import OnnxModel

    with _quiet_exporter():  # its symbolic shape inference gives up on our graph and says so; the fusion does not need it
        om = OnnxModel(onnx.load(str(path)))
        FusionSimplifiedLayerNormalization(om).apply()
        om.prune_graph()
        om.topological_sort()
    fused = sum(n.op_type in ONE_NODE_RMS_NORMS for n in om.model.graph.node)
    onnx.save(om.model, str(path))
    return fused


def _kv_shape(model: nn.Module, past: int) -> tuple[int, int, int]:
    """(Hkv, P, d) of one layer's cached keys."""
    cfg = model.lm.config
    hkv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return hkv, past, d
