"""Weight-only quantization in the torchao style: one verb plus a frozen config, registered handlers.

    report = quantize_(model, Int8WeightOnly(parts=("llm", "xattn", "encoder")))

A handler is registered per (config type, backend). ``backend="auto"`` picks one per device:

    =========  =====================  ==========================================================
    device     Int8WeightOnly         Int4WeightOnly
    =========  =====================  ==========================================================
    cpu        torchao (Int8Tensor)   bitsandbytes nf4/fp4 (torchao int4 has no x86 CPU kernel)
    cuda       torchao (Int8Tensor)   torchao int4 (tinygemm, bf16 compute); or bnb nf4/fp4
    mps        torchao (untested)     none: a clear error
    =========  =====================  ==========================================================

Parts (what gets quantized, Linear layers only):
  "llm"     the frozen backbone's Linear layers, without embeddings and lm_head (LoRA weights stay fp32)
  "lm_head" the output projection, only when asked and only when it is not tied to the input embeddings
  "xattn"   the gated cross-attention blocks (Flamingo), attention and feed-forward alike
  "encoder" series_encoder (Flamingo: PatchEncoder + resampler) / soft_encoder (SoftPrompt)
Linear layers owned by nn.MultiheadAttention / nn.TransformerEncoderLayer (the SoftPrompt encoder's
attention and feed-forward) are skipped: torch's fused kernels read their weights directly, bypassing the
module, so a swapped-in quantized module would be ignored or fail; the SoftPrompt projector is quantized.

The report gives, per part, the layers and weights quantized, bytes before/after and the weight SQNR
(dB) of the dequantized weights against the fp32 ones they replaced. Every call also appends its recipe to
the model's compression record (``compression_record(model)``), which ``save_compressed`` writes to the
artifact's manifest so ``load_compressed`` can re-apply it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

import torch
from torch import nn

Backend = Literal["auto", "torchao", "bnb"]
PARTS = ("llm", "lm_head", "xattn", "encoder")
DEFAULT_PARTS = ("llm", "xattn", "encoder")

Q4_NOTE = (
    "smollm2-135m's transformer weights were dequantized from a Q4_1 GGUF file (4-bit, 32-wide blocks with a "
    "scale and a min): they already lie on a 4-bit grid, so 4-bit re-quantization of the LM with 32-wide blocks "
    "can look almost free in a way it would not for a model trained in full precision. That holds for an affine "
    "(scale + min) int4 aligned with Q4_1's blocks (it reproduces those weights exactly: infinite SQNR, measured "
    "on SmolLM2 layers); bitsandbytes nf4/fp4 levels are symmetric and non-uniform, do not coincide with that "
    "grid, and measure like fresh weights (~21 dB on SmolLM2, as on Gaussian weights). SQNR here is against the "
    "dequantized fp32 weights."
)

Q8_NOTE = (
    "smollm2-135m's transformer weights were dequantized from a Q4_1 GGUF file (4-bit, 32-wide blocks); the "
    "SQNR here is measured against those dequantized fp32 weights, and the LM's quality was already set by "
    "4-bit weights before this 8-bit re-quantization."
)


class QuantizationError(RuntimeError):
    """A quantization combination that cannot run here; the message names what to use instead."""


# ---------------------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class Int8WeightOnly:
    """Per-output-channel symmetric int8 weights; activations stay in the model's float dtype."""

    parts: tuple[str, ...] = DEFAULT_PARTS
    backend: Backend = "auto"


@dataclass(frozen=True)
class Int4WeightOnly:
    """4-bit weights in groups of ``group_size`` along the input dimension.

    torchao: integer int4 with a scale + zero point per group (CUDA only). bitsandbytes: ``bnb_quant_type``
    "nf4" (normal-float levels) or "fp4", one absmax per ``group_size`` block (``double_quant`` quantizes
    those absmax values again, as QLoRA does).
    """

    group_size: int = 32
    parts: tuple[str, ...] = DEFAULT_PARTS
    backend: Backend = "auto"
    bnb_quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = False


QuantConfig = Int8WeightOnly | Int4WeightOnly
CONFIG_TYPES: dict[str, type] = {"Int8WeightOnly": Int8WeightOnly, "Int4WeightOnly": Int4WeightOnly}


def config_to_dict(cfg: QuantConfig) -> dict[str, Any]:
    return {"type": type(cfg).__name__, **dataclasses.asdict(cfg)}


def config_from_dict(d: dict[str, Any]) -> QuantConfig:
    d = dict(d)
    kind = CONFIG_TYPES.get(d.pop("type", ""))
    if kind is None:
        raise ValueError(f"unknown quantization config {d!r}; known: {sorted(CONFIG_TYPES)}")
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# ---------------------------------------------------------------------------------------- handlers

# A handler quantizes one Linear: (linear, config, device) -> (replacement module or None if changed in
# place, dequantized weight (out, in) fp32 for the SQNR).
Handler = Callable[[nn.Linear, Any, torch.device], "tuple[nn.Module | None, torch.Tensor]"]
_HANDLERS: dict[tuple[type, str], Handler] = {}
# Which backend runs which config on which device type, for "auto" and for clear errors.
_SUPPORT: dict[tuple[type, str], tuple[str, ...]] = {}


def register_handler(config_type: type, backend: str, devices: tuple[str, ...]):
    """Decorator: register ``fn`` as the handler of ``config_type`` on ``backend`` for these device types."""

    def deco(fn: Handler) -> Handler:
        _HANDLERS[(config_type, backend)] = fn
        _SUPPORT[(config_type, backend)] = devices
        return fn

    return deco


_AUTO: dict[tuple[type, str], str] = {
    (Int8WeightOnly, "cpu"): "torchao",
    (Int8WeightOnly, "cuda"): "torchao",
    (Int8WeightOnly, "mps"): "torchao",
    (Int4WeightOnly, "cpu"): "bnb",
    (Int4WeightOnly, "cuda"): "torchao",
}

_WHY: dict[tuple[type, str, str], str] = {
    (Int4WeightOnly, "torchao", "cpu"): (
        "torchao int4 weight-only has no x86 CPU kernel (its layouts need CUDA/mslk); "
        "on CPU use Int4WeightOnly(backend='bnb') (bitsandbytes nf4/fp4) or Int8WeightOnly"
    ),
    (Int4WeightOnly, "torchao", "mps"): "no int4 weight-only backend runs on MPS here; use Int8WeightOnly",
    (Int4WeightOnly, "bnb", "mps"): "bitsandbytes does not run on MPS; use Int8WeightOnly(backend='torchao')",
    (Int8WeightOnly, "bnb", "mps"): "bitsandbytes does not run on MPS; use backend='torchao'",
}


def resolve_backend(cfg: QuantConfig, device: torch.device | str) -> str:
    """The backend that runs ``cfg`` on ``device``; a QuantizationError saying what to use where none does."""
    dev = torch.device(device).type
    kind = type(cfg)
    backend = cfg.backend
    if backend == "auto":
        backend = _AUTO.get((kind, dev), "")
        if not backend:
            raise QuantizationError(
                _WHY.get((kind, "torchao", dev)) or f"no backend runs {kind.__name__} on {dev!r}"
            )
    if (kind, backend) not in _HANDLERS:
        known = sorted(b for (k, b) in _HANDLERS if k is kind)
        raise QuantizationError(f"{kind.__name__} has no backend {backend!r}; choose 'auto' or one of {known}")
    if dev not in _SUPPORT[(kind, backend)]:
        raise QuantizationError(
            _WHY.get((kind, backend, dev))
            or f"{kind.__name__} with backend {backend!r} does not run on {dev!r} "
            f"(it runs on {', '.join(_SUPPORT[(kind, backend)])})"
        )
    return backend


@register_handler(Int8WeightOnly, "torchao", ("cpu", "cuda", "mps"))
def _int8_torchao(lin: nn.Linear, cfg: Int8WeightOnly, device: torch.device):
    from torchao.quantization import Int8WeightOnlyConfig
    from torchao.quantization import quantize_ as ao_quantize_

    ao_quantize_(lin, Int8WeightOnlyConfig())  # swaps lin.weight for an Int8Tensor (qdata, per-row scale)
    return None, lin.weight.dequantize().float()


@register_handler(Int4WeightOnly, "torchao", ("cuda",))
def _int4_torchao(lin: nn.Linear, cfg: Int4WeightOnly, device: torch.device):
    from torchao.quantization import Int4WeightOnlyConfig
    from torchao.quantization import quantize_ as ao_quantize_

    # tinygemm packing: the only torchao int4 layout that needs no extra kernel package; it computes in bf16
    lin.to(torch.bfloat16)
    ao_quantize_(lin, Int4WeightOnlyConfig(group_size=cfg.group_size, int4_packing_format="tile_packed_to_4d"))
    deq = lin.weight.dequantize().float()
    return _CastIO(lin, torch.bfloat16), deq


@register_handler(Int8WeightOnly, "bnb", ("cpu", "cuda"))
def _int8_bnb(lin: nn.Linear, cfg: Int8WeightOnly, device: torch.device):
    import bitsandbytes as bnb

    w = lin.weight.detach().float()
    q = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, bias=lin.bias is not None, has_fp16_weights=False, threshold=0.0)
    q.weight = bnb.nn.Int8Params(w.cpu().clone(), requires_grad=False, has_fp16_weights=False)
    if lin.bias is not None:
        q.bias = nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
    q = q.to(device)  # bnb quantizes on the move (row-wise absmax int8: weight int8 + SCB fp32)
    deq = q.weight.data.float() * q.weight.SCB.float()[:, None] / 127.0
    return q, deq


@register_handler(Int4WeightOnly, "bnb", ("cpu", "cuda"))
def _int4_bnb(lin: nn.Linear, cfg: Int4WeightOnly, device: torch.device):
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbF

    dtype = lin.weight.dtype
    q = bnb.nn.Linear4bit(
        lin.in_features, lin.out_features, bias=lin.bias is not None, compute_dtype=dtype,
        quant_type=cfg.bnb_quant_type, compress_statistics=cfg.double_quant,
    )
    q.weight = bnb.nn.Params4bit(
        lin.weight.detach().cpu().clone(), requires_grad=False, quant_type=cfg.bnb_quant_type,
        blocksize=cfg.group_size, compress_statistics=cfg.double_quant,
    )
    if lin.bias is not None:
        q.bias = nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
    q = q.to(device)
    deq = bnbF.dequantize_4bit(q.weight.data, q.weight.quant_state).float()
    return q, deq


class _CastIO(nn.Module):
    """Runs a low-precision-only layer inside a float32 model: cast in, compute, cast back."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = inner, dtype

    @property
    def weight(self):
        return self.inner.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(self.dtype)).to(x.dtype)


# ---------------------------------------------------------------------------------------- selection


def _lm_base(model: nn.Module) -> nn.Module:
    lm = model.lm
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


def part_roots(model: nn.Module, part: str) -> list[tuple[str, nn.Module]]:
    """(name prefix, module) roots of a part; empty if the model has no such part."""
    if part == "llm":
        return [("lm", model.lm)]
    if part == "lm_head":
        return [("lm.head", _lm_base(model).get_output_embeddings())]
    if part == "xattn":
        return [("xattn", model.xattn)] if hasattr(model, "xattn") else []
    if part == "encoder":
        return [(n, getattr(model, n)) for n in ("series_encoder", "soft_encoder") if hasattr(model, n)]
    raise ValueError(f"unknown part {part!r}; choose from {PARTS}")


def _iter_linears(root: nn.Module, prefix: str, skip: set[int]) -> Iterator[tuple[str, nn.Module, str, nn.Linear]]:
    """(full name, parent, attribute, linear) for every Linear under root, once each (shared modules too)."""
    if isinstance(root, nn.Linear):
        yield prefix, None, "", root  # type: ignore[misc]
        return
    seen: set[int] = set()
    for pname, parent in root.named_modules():
        if isinstance(parent, (nn.MultiheadAttention, nn.TransformerEncoderLayer)):
            continue  # fused kernels read these weights directly, bypassing the Linear module
        for attr, child in parent.named_children():
            if isinstance(child, nn.Linear) and id(child) not in seen and id(child) not in skip and "lora_" not in f"{pname}.{attr}":
                seen.add(id(child))
                name = ".".join(p for p in (prefix, pname, attr) if p)
                yield name, parent, attr, child


def _check_parts(model: nn.Module, parts: tuple[str, ...]) -> None:
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ValueError(f"unknown parts {bad}; choose from {PARTS}")
    if "lm_head" in parts:
        base = _lm_base(model)
        if base.get_output_embeddings().weight is base.get_input_embeddings().weight:
            raise QuantizationError(
                "lm_head is tied to the input embeddings (one matrix); quantizing it would untie them and "
                "store the matrix twice — leave 'lm_head' out of parts"
            )


# ---------------------------------------------------------------------------------------- the verb


@dataclass
class PartReport:
    layers: int = 0
    weights: int = 0  # weight elements quantized
    bytes_before: int = 0  # the quantized layers' parameters + buffers
    bytes_after: int = 0
    signal: float = 0.0  # sum w^2 over the part
    noise: float = 0.0  # sum (w - dequant(q(w)))^2
    min_layer_sqnr_db: float = math.inf
    skipped_already_quantized: int = 0

    @property
    def sqnr_db(self) -> float:
        return sqnr(self.signal, self.noise)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "weights": self.weights,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "sqnr_db": _finite(self.sqnr_db),
            "min_layer_sqnr_db": _finite(self.min_layer_sqnr_db),
            **({"skipped_already_quantized": self.skipped_already_quantized} if self.skipped_already_quantized else {}),
        }


@dataclass
class QuantReport:
    config: dict[str, Any]
    backend: str
    device: str
    parts: dict[str, PartReport] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": "quantize",
            "config": self.config,
            "backend": self.backend,
            "device": self.device,
            "parts": {k: v.to_dict() for k, v in self.parts.items()},
            "notes": self.notes,
        }


def sqnr(signal: float, noise: float) -> float:
    """10 log10(sum w^2 / sum (w - w_hat)^2) in dB; inf when the quantization is exact."""
    if noise <= 0:
        return math.inf
    if signal <= 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def is_quantized_module(m: nn.Module) -> bool:
    w = getattr(m, "weight", None)
    return isinstance(m, _CastIO) or (w is not None and _is_quantized_tensor(w))


def _is_quantized_tensor(t: torch.Tensor) -> bool:
    return hasattr(t, "__tensor_flatten__") or type(t).__name__ in ("Int8Params", "Params4bit") or not t.is_floating_point()


@torch.no_grad()
def quantize_(model: nn.Module, config: QuantConfig, *, device: torch.device | str | None = None) -> QuantReport:
    """Quantize the Linear layers of ``config.parts`` in place; returns per-part SQNR and bytes.

    The model should already sit on ``device`` (default: its own device). Layers quantized before are
    skipped, so several calls compose (e.g. Int4 on "llm", then Int8 on "xattn", "encoder").
    """
    if not isinstance(config, (Int8WeightOnly, Int4WeightOnly)):
        raise TypeError(f"quantize_ takes Int8WeightOnly or Int4WeightOnly, got {type(config).__name__}")
    dev = torch.device(device) if device is not None else model.device
    backend = resolve_backend(config, dev)
    parts = tuple(dict.fromkeys(config.parts))
    _check_parts(model, parts)
    handler = _HANDLERS[(type(config), backend)]
    record = compression_record(model)
    if "fp32_adapter" not in record:  # the source of truth save_compressed writes (re-quantized at load)
        from edge_tslm.model.artifact import adapter_state

        record["fp32_adapter"] = {k: v.cpu() for k, v in adapter_state(model).items()}
    report = QuantReport(config_to_dict(config), backend, str(dev))
    done: set[int] = set()  # a Linear reached through two parts is quantized once
    for part in parts:
        roots = part_roots(model, part)
        if not roots:
            report.notes.append(f"this {model.cfg.variant} model has no {part!r} part; nothing done for it")
            continue
        pr = report.parts.setdefault(part, PartReport())
        for prefix, root in roots:
            head = _lm_base(model).get_output_embeddings() if part == "llm" else None
            skip = done | ({id(head)} if head is not None else set())
            for name, parent, attr, lin in list(_iter_linears(root, prefix, skip)):
                done.add(id(lin))
                if is_quantized_module(lin):
                    pr.skipped_already_quantized += 1
                    continue
                w = lin.weight.detach().float().clone()
                before = module_bytes(lin)
                new, deq = handler(lin, config, dev)
                if new is not None:
                    if parent is None:
                        _set_by_name(model, name, new)
                    else:
                        setattr(parent, attr, new)
                after = module_bytes(new if new is not None else lin)
                s, n = float(w.pow(2).sum()), float((w - deq.to(w.device)).pow(2).sum())
                pr.layers += 1
                pr.weights += w.numel()
                pr.bytes_before += before
                pr.bytes_after += after
                pr.signal += s
                pr.noise += n
                pr.min_layer_sqnr_db = min(pr.min_layer_sqnr_db, sqnr(s, n))
    if "llm" in parts and "smollm2" in str(model.cfg.backbone) and isinstance(config, Int4WeightOnly):
        report.notes.append(Q4_NOTE)
    elif "llm" in parts and "smollm2" in str(model.cfg.backbone):
        report.notes.append(Q8_NOTE)
    record.setdefault("transforms", []).append(report.to_dict())
    return report


def _set_by_name(model: nn.Module, name: str, new: nn.Module) -> None:
    if name == "lm.head":
        _lm_base(model).set_output_embeddings(new)
        return
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attr, new)


# ---------------------------------------------------------------------------------------- bytes


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a (possibly quantized) tensor holds: the inner tensors of torchao subclasses, the int8 data +
    row scales of bitsandbytes Int8Params, the packed nibbles + block absmax (+ code) of Params4bit."""
    kind = type(t).__name__
    if kind == "Params4bit":
        n = t.data.numel() * t.data.element_size()
        qs = getattr(t, "quant_state", None)
        if qs is not None:
            n += _nb(qs.absmax) + _nb(qs.code)
            if getattr(qs, "nested", False) and qs.state2 is not None:
                n += _nb(qs.state2.absmax) + _nb(qs.state2.code) + _nb(qs.offset)
        return n
    if kind == "Int8Params":
        scb = getattr(t, "SCB", None)
        return t.data.numel() * t.data.element_size() + (_nb(scb) if scb is not None else 0)
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def _nb(t) -> int:
    return 0 if t is None else (t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0)


def module_bytes(m: nn.Module, *, exclude: Callable[[str], bool] | None = None) -> int:
    """Sum of parameter + buffer bytes at their stored (quantized) size; shared tensors counted once."""
    seen: set[int] = set()
    total = 0
    for name, t in list(m.named_parameters(remove_duplicate=False)) + list(m.named_buffers(remove_duplicate=False)):
        if id(t) in seen or (exclude is not None and exclude(name)):
            continue
        seen.add(id(t))
        total += tensor_bytes(t)
    return total


def parameter_count(m: nn.Module) -> int:
    """Parameters (logical weight elements; a quantized weight counts its unquantized shape), shared once."""
    seen: set[int] = set()
    n = 0
    for mod in m.modules():
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if type(p).__name__ == "Params4bit" and getattr(p, "quant_state", None) is not None:
                n += int(torch.Size(p.quant_state.shape).numel())
            else:
                n += p.numel()
    return n


def compression_record(model: nn.Module) -> dict[str, Any]:
    """What was done to this model in this process (transforms, the fp32 adapter kept for saving).

    Metadata only: nothing in it is read by forward.
    """
    rec = model.__dict__.get("_edge_compression")
    if rec is None:
        rec = {}
        model.__dict__["_edge_compression"] = rec
    return rec
