"""Compact decoder graph: 4-bit block-quantized LM weights (ONNX Runtime's MatMulNBits) in one external data file.

Why: the fp32 export embeds every LM weight in decoder.onnx (~540 MB for SmolLM2-135M).
``compact_decoder`` rewrites an fp32 decoder export in place:

1. an lm_head ``Gemm(transB=1)`` or ``MatMul(x, Transpose(W))`` becomes a ``MatMul`` over one constant W.T
   (MatMulNBitsQuantizer only takes MatMul with a constant weight);
2. onnxruntime's ``MatMulNBitsQuantizer`` (op_types_to_quantize=("MatMul",)) turns every MatMul with a constant
   weight (LM projections, fusion blocks, lm_head) into ``MatMulNBits``;
3. with tied embeddings, the token-embedding ``Gather`` becomes ``GatherBlockQuantized`` over the lm_head's own
   4-bit bytes, scales and zero points (ORT GenAI's layout for shared embeddings): the 28M-parameter table is
   stored once, at 4 bits. (The quantizer's own ``op_types_to_quantize=("MatMul", "Gather")`` does quantize the
   embedding Gather, but as a second copy beside the lm_head.)
4. every initializer >= EXTERNAL_MIN_BYTES is written once, deduplicated by content (sha256), to one external
   data file (WEIGHTS_FILE) that the graph references by relative path, offset and length.

cross.onnx (media -> cross K/V, a few hundred thousand weights) stays fp32 beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from edge_tslm.export import spec

WEIGHTS_FILE = "weights.onnx.data"
DECODER_GRAPHS = ("decoder.onnx",)  # edge_tslm.export.spec.DECODER_GRAPH
EXTERNAL_MIN_BYTES = 1024  # smaller tensors (shapes, norms of tiny models) stay inside the graph
ALIGN = 4096  # each external tensor starts on a page boundary (onnxruntime may mmap aligned data)

# Parity of a 4-bit decoder against the fp32 torch model (the fp32 tolerance, 1e-3 on logits, is meaningless here).
# Next-token top-1 after the prefill may flip only between tokens the fp32 model nearly ties: the fp32 log-prob
# of the 4-bit model's top-1 is within MAX_TOP1_GAP_NATS of the fp32 top-1 (top-1 agreement itself is reported).
MAX_TOP1_GAP_NATS = 1.0
MAX_LABEL_LOGPROB_DIFF = 1.0  # nats: max |Δ log p('Answer: <label><eos>')| over windows and labels
MIN_LABEL_AGREEMENT = 0.8  # classify argmax over the parity windows


@dataclass(frozen=True)
class CompactConfig:
    """Weight-only quantization of the decoder graphs (encoder: see export_encoder_onnx(int8=True))."""

    bits: int = 4
    block_size: int = 32
    symmetric: bool = False  # asymmetric (scale + zero point per block), like GGUF Q4_1
    accuracy_level: int | None = None  # MatMulNBits compute type of the integer-zero-point (rtn) nodes; None: fp32
    # activations. 4 = int8 activations: the fast kernels, and the 8-bit ones' only fast path here.
    fold_accuracy_level: int | None = None  # the same for the folded min/max nodes (the 4-bit LM); None keeps them
    # exact in fp32 activations: on HAR, 4 moved label log-probs by up to 1.8 nats (parity tolerance 1.0), None 0.2
    tie_embedding: bool = True  # embedding Gather reads the lm_head's quantized bytes when the weights are tied
    # MatMuls whose exporter name scope contains one of these (e.g. "xattn": the trained fusion blocks) get
    # keep_bits instead (8: MatMulNBits 8-bit; 0: stay fp32)
    keep_scopes: tuple[str, ...] = ("xattn",)  # the trained fusion blocks: 3.3M parameters on SmolLM2
    keep_bits: int = 8
    # "rtn": onnxruntime's default blockwise quantizer (uint4 zero points, the range stretched to include 0);
    # "minmax": its HQQ quantizer without the HQQ optimisation and with float zero points, i.e. plain min/max
    # affine blocks (GGUF Q4_1's form): it reproduces weights that already lie on such a grid exactly. The tied
    # lm_head always uses "rtn" (GatherBlockQuantized takes integer zero points only).
    algorithm: str = "minmax"
    # min/max blocks store float zero points, which send MatMulNBits down onnxruntime's slow path (the weight is
    # dequantized on every call: 20x slower than fp32 per decode row, benchmarks/results/matmulnbits_micro.md).
    # Folding rewrites each as the zero-point-free MatMulNBits (fast kernels) plus an exact fp32 correction.
    fold_zero_points: bool = True
    # Fold q/k/v (and gate/up) into one node each over stacked weights. A/B on this CPU (one thread): decoding a
    # token ~4 % faster, the classify call (prompt + labels) ~4 % slower; the decision is what streams wait for.
    pack_projections: bool = False

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"weight bits must be 4 or 8 (MatMulNBits + GatherBlockQuantized), got {self.bits}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two >= 16, got {self.block_size}")
        if self.algorithm not in ("rtn", "minmax"):
            raise ValueError(f"algorithm must be 'rtn' or 'minmax', got {self.algorithm!r}")
        if self.keep_bits not in (0, 4, 8):
            raise ValueError(f"keep_bits must be 0 (fp32), 4 or 8, got {self.keep_bits}")


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """MatMulNBitsQuantizer logs one INFO line per node and warns about zero rows; keep CLI output readable."""
    import warnings

    lg = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = lg.level
    lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        lg.setLevel(level)


# ---------------------------------------------------------------- graph rewrites


def _inits(graph) -> dict[str, Any]:
    return {t.name: t for t in graph.initializer}


def _array(t) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(t)


def gemm_to_matmul(graph) -> list[str]:
    """Gemm(A, W, [C], transB=1, alpha=beta=1) with a constant W -> MatMul(A, W^T) [+ Add C]. Returns node names."""
    from onnx import helper, numpy_helper

    inits, done, nodes = _inits(graph), [], []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        ok = (
            node.op_type == "Gemm"
            and node.input[1] in inits
            and not attrs.get("transA", 0)
            and attrs.get("alpha", 1.0) == 1.0
            and attrs.get("beta", 1.0) == 1.0
        )
        if not ok:
            nodes.append(node)
            continue
        w = _array(inits[node.input[1]])  # (N, K) with transB, else (K, N)
        wt = np.ascontiguousarray(w.T if attrs.get("transB", 0) else w)  # (K, N)
        name = f"{node.input[1]}.T" if attrs.get("transB", 0) else node.input[1]
        if name not in inits:
            graph.initializer.append(numpy_helper.from_array(wt, name))
            inits[name] = graph.initializer[-1]
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{node.output[0]}_mm" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [mm_out], name=f"{node.name}_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
        done.append(node.name)
    del graph.node[:]
    graph.node.extend(nodes)
    return done


def fold_weight_transposes(graph) -> list[str]:
    """Transpose(W) of a constant 2-D W (the exporter leaves one before decode.onnx's lm_head MatMul) -> the
    initializer W.T, named as gemm_to_matmul names it, so the quantizer sees a constant weight. Returns node names."""
    from onnx import helper, numpy_helper

    inits, done, nodes, rename = _inits(graph), [], [], {}
    for node in graph.node:
        perm = next((list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "perm"), None)
        if node.op_type == "Transpose" and node.input[0] in inits and len(inits[node.input[0]].dims) == 2 and perm in (None, [1, 0]):
            name = f"{node.input[0]}.T"
            if name not in inits:
                graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(_array(inits[node.input[0]]).T), name))
                inits[name] = graph.initializer[-1]
            rename[node.output[0]] = name
            done.append(node.name)
            continue
        nodes.append(node)
    for node in nodes:
        for i, x in enumerate(node.input):
            if x in rename:
                node.input[i] = rename[x]
    if any(o.name in rename for o in graph.output):
        raise ValueError("a folded Transpose feeds a graph output")
    del graph.node[:]
    graph.node.extend(nodes)
    return done


def tied_embeddings(graph) -> list[tuple[str, str]]:
    """(embedding Gather node, MatMul node) pairs whose constant weights are transposes of each other (tied)."""
    inits = _inits(graph)
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2]
    matmuls = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2]
    pairs = []
    for g in gathers:
        emb = inits[g.input[0]]
        for m in matmuls:
            w = inits[m.input[1]]
            if list(w.dims) == list(emb.dims)[::-1] and np.array_equal(_array(w), _array(emb).T):
                pairs.append((g.name, m.name))
                break
    return pairs


_SUFFIX = __import__("re").compile(r"_Q(2|4|8)$")  # MatMulNBitsQuantizer appends _Q<bits> to node and weight names


def _bits_of(node) -> int:
    from onnx import helper

    return next(int(helper.get_attribute_value(a)) for a in node.attribute if a.name == "bits")


def _tie_to_matmul_nbits(graph, gather_name: str, nbits_name: str, block_size: int) -> None:
    """Gather(E, ids) -> GatherBlockQuantized(E_q, ids, scales, zp) over the lm_head MatMulNBits' own tensors.

    MatMulNBits stores W^T (K=D, N=V) as (N, K/bs, bs*bits/8) uint8 with scales (N, K/bs) and packed zero points
    (N, ceil(K/bs * bits/8)): row v is embedding row v, quantized along D, which is GatherBlockQuantized's uint8
    layout (quantize_axis=1). The data is the same bytes reshaped to (V, D*bits/8); the external-data writer
    stores them once.
    """
    from onnx import helper, numpy_helper

    inits = _inits(graph)
    nodes = {n.name: n for n in graph.node}
    g, mm = nodes[gather_name], nodes[nbits_name]
    packed = _array(inits[mm.input[1]])  # (V, D/bs, bs*bits/8) uint8
    V = packed.shape[0]
    data_name = f"{mm.input[1]}.rows"
    graph.initializer.append(numpy_helper.from_array(packed.reshape(V, -1), data_name))  # (V, D*bits/8)
    ins = [data_name, g.input[1], mm.input[2]] + ([mm.input[3]] if len(mm.input) > 3 and mm.input[3] else [])
    new = helper.make_node(
        "GatherBlockQuantized",
        ins,
        list(g.output),
        name=f"{g.name}_Q{_bits_of(mm)}",
        domain="com.microsoft",
        bits=_bits_of(mm),
        block_size=block_size,
        gather_axis=0,
        quantize_axis=1,
    )
    i = list(graph.node).index(g)
    graph.node.remove(g)
    graph.node.insert(i, new)


SCOPE_KEY = "pkg.torch.onnx.name_scopes"  # the torch.onnx exporter's module path of each node


def weights_in_scopes(graph, scopes: Sequence[str]) -> set[str]:
    """Initializers read by nodes whose module path contains one of ``scopes`` (read before metadata is stripped)."""
    if not scopes:
        return set()
    inits = {t.name for t in graph.initializer}
    out: set[str] = set()
    for n in graph.node:
        path = next((p.value for p in n.metadata_props if p.key == SCOPE_KEY), "")
        if any(sc in path for sc in scopes):
            out |= {i for i in n.input if i in inits}
    return out | {f"{w}.T" for w in out}  # the names gemm_to_matmul / fold_weight_transposes give their transposes


def strip_debug_metadata(graph) -> int:
    """Drop the exporter's per-node debug metadata (stack traces, fx names, scopes): ~19 KB per node, not read by
    onnxruntime. Returns the bytes removed."""
    n_bytes = 0
    for n in graph.node:
        n_bytes += sum(len(p.key) + len(p.value) for p in n.metadata_props) + len(n.doc_string)
        del n.metadata_props[:]
        n.doc_string = ""
    return n_bytes


def _minmax_config(bits: int, block_size: int):
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig

    return HQQWeightOnlyQuantConfig(block_size=block_size, bits=bits, op_types_to_quantize=("MatMul",))


def _minmax_quantizer(config):
    """onnxruntime's HQQWeightOnlyQuantizer with optimize=False, round_zero=False: min/max affine blocks with float
    zero points (w = (q - zp) * scale, q in [0, 2**bits - 1]); the packing and MatMulNBits node are ORT's."""
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantizer

    class MinMax(HQQWeightOnlyQuantizer):
        def quantize_internal(self, tensor, bits=4, channel_wise=True, group_size=64, optimize=True, round_zero=True, axis=1):
            w_q, scale, zero = super().quantize_internal(tensor.double(), bits, channel_wise, group_size, False, False, axis)
            return w_q, scale.to(tensor.dtype), zero.to(tensor.dtype)  # computed in float64, stored as the weight's dtype

    return MinMax(config)


def _drop_unused_initializers(graph) -> int:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    dropped = len(graph.initializer) - len(keep)
    seen, uniq = set(), []
    for t in keep:  # a weight shared by two MatMuls comes back from the quantizer once per node
        if t.name not in seen:
            seen.add(t.name)
            uniq.append(t)
    del graph.initializer[:]
    graph.initializer.extend(uniq)
    return dropped


# ---------------------------------------------------------------- weight SQNR


def dequantize_matmul_nbits(packed: np.ndarray, scales: np.ndarray, zp: np.ndarray | None, K: int, bits: int) -> np.ndarray:
    """MatMulNBits B (N, K/bs, blob) -> W (K, N) float32; low nibble first, zero point 2**(bits-1) when absent."""
    N, kb, blob = packed.shape
    if bits == 4:
        q = np.stack([packed & 0x0F, packed >> 4], -1).reshape(N, kb, -1)  # (N, kb, bs)
    else:
        q = packed.reshape(N, kb, -1)
    if zp is None:
        z = np.full((N, kb), 1 << (bits - 1), np.float32)
    elif zp.dtype.kind == "f":  # float zero points (minmax / HQQ): one per block, unpacked
        z = zp.reshape(N, kb).astype(np.float32)
    elif bits == 4:
        z = np.stack([zp & 0x0F, zp >> 4], -1).reshape(N, -1)[:, :kb].astype(np.float32)  # (N, kb)
    else:
        z = zp.reshape(N, kb).astype(np.float32)
    w = (q.astype(np.float32) - z[..., None]) * scales.reshape(N, kb, 1)  # (N, kb, bs)
    return w.reshape(N, -1)[:, :K].T  # (K, N)


def _sqnr_db(signal: float, noise: float) -> float:
    return float("inf") if noise == 0 else float(10 * np.log10(signal / noise))


def weight_sqnr(graph, fp32: dict[str, np.ndarray]) -> dict[str, Any]:
    """SQNR (dB) of every MatMulNBits weight against the fp32 weight it replaced: overall, min, median, lm_head."""
    inits = _inits(graph)
    per: dict[str, float] = {}
    sig = noise = 0.0
    by_bits: dict[int, list[float]] = {}
    for n in graph.node:
        if n.op_type != "MatMulNBits":
            continue
        src = _SUFFIX.sub("", n.input[1])
        w = fp32.get(src)
        if w is None:
            continue
        zp = _array(inits[n.input[3]]) if len(n.input) > 3 and n.input[3] else None
        w_hat = dequantize_matmul_nbits(_array(inits[n.input[1]]), _array(inits[n.input[2]]), zp, w.shape[0], _bits_of(n))
        s, e = float(np.sum(w.astype(np.float64) ** 2)), float(np.sum((w.astype(np.float64) - w_hat) ** 2))
        sig, noise = sig + s, noise + e
        per[src] = _sqnr_db(s, e)
        acc = by_bits.setdefault(_bits_of(n), [0.0, 0.0, 0])
        acc[0], acc[1], acc[2] = acc[0] + s, acc[1] + e, acc[2] + 1
    vals = sorted(per.values())
    return {
        "tensors": len(per),
        "overall_db": round(_sqnr_db(sig, noise), 2) if per else None,
        "min_db": round(vals[0], 2) if vals else None,
        "median_db": round(float(np.median(vals)), 2) if vals else None,
        "by_bits": {str(b): {"tensors": a[2], "overall_db": round(_sqnr_db(a[0], a[1]), 2)} for b, a in sorted(by_bits.items())},
        "reference": "each MatMul weight of the fp32 ONNX graph (= the dequantized fp32 torch weight)",
    }


# ---------------------------------------------------------------- one graph


def quantize_graph(model, cfg: CompactConfig, *, sqnr: bool = False) -> tuple[Any, dict[str, Any]]:
    """fp32 decoder ModelProto -> (4-bit ModelProto, what was done). Uses onnxruntime's MatMulNBitsQuantizer."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    graph = model.graph
    kept_weights = weights_in_scopes(graph, cfg.keep_scopes)
    stripped = strip_debug_metadata(graph)
    gemms = gemm_to_matmul(graph)
    folded = fold_weight_transposes(graph)
    ties = tied_embeddings(graph) if cfg.tie_embedding else []
    kept = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in kept_weights]
    weights = {n.input[1] for n in graph.node if n.op_type == "MatMul"}
    fp32 = {t.name: _array(t) for t in graph.initializer if t.name in weights} if sqnr else {}
    ops_before = _op_counts(graph)
    out = model
    heads = [m for _, m in ties]
    # Each pass quantizes every constant-weight MatMul it does not exclude; later passes take what is left.
    passes = [(cfg.bits, cfg.algorithm, [*kept, *heads])]
    if heads:
        passes.append((cfg.bits, "rtn", kept))
    if kept and cfg.keep_bits:
        passes.append((cfg.keep_bits, "rtn", []))
    for bits, algo, exclude in passes:
        with _quiet_quantizer():
            q = MatMulNBitsQuantizer(
                out,
                bits=bits,
                block_size=cfg.block_size,
                is_symmetric=cfg.symmetric,
                accuracy_level=cfg.accuracy_level,
                nodes_to_exclude=exclude,
                op_types_to_quantize=("MatMul",),
                algo_config=_minmax_config(bits, cfg.block_size) if algo == "minmax" else None,
            )
            if algo == "minmax":
                q.node_quantizer = _minmax_quantizer(q.algo_config)
            q.process()
        out = q.model.model
    graph = out.graph
    tied = []
    if ties:
        by_matmul = {_SUFFIX.sub("", n.name): n.name for n in graph.node if n.op_type == "MatMulNBits"}
        emb_dim = {t.name: list(t.dims) for t in graph.initializer}
        for gather, matmul in ties:
            nbits = by_matmul.get(matmul)
            node = next(n for n in graph.node if n.name == gather)
            D = emb_dim[node.input[0]][1]
            if nbits is None or D % cfg.block_size:
                continue  # not quantized, or blocks would pad past D: keep the fp32 Gather
            _tie_to_matmul_nbits(graph, gather, nbits, cfg.block_size)
            tied.append({"gather": gather, "matmul_nbits": nbits})
    _drop_unused_initializers(graph)
    ops_after = _op_counts(graph)
    info = {
        "stripped_node_metadata_bytes": stripped,
        "kept_at_keep_bits": kept,
        "gemm_to_matmul": gemms,
        "weight_transposes_folded": folded,
        "tied_embedding": tied,
        "ops_before": {k: ops_before.get(k, 0) for k in ("MatMul", "Gemm", "Gather")},
        "ops_after": {k: ops_after.get(k, 0) for k in ("MatMul", "MatMulNBits", "Gemm", "Gather", "GatherBlockQuantized")},
        "fp32_matmuls_left": ops_after.get("MatMul", 0),  # activation x activation (attention), no weights
    }
    if sqnr:
        info["weight_sqnr"] = weight_sqnr(graph, fp32)  # before the fold: it reads the zero points
    if cfg.fold_zero_points:
        info["zero_points_folded"] = fold_float_zero_points(graph, cfg.fold_accuracy_level, pack=cfg.pack_projections)
    return out, info


def fold_float_zero_points(graph, accuracy_level: int | None = None, pack: bool = False) -> list[str]:
    """MatMulNBits with float zero points -> the same node without them + an exact fp32 correction.

    w = (q - z) s = (q - 2^(b-1)) s + (2^(b-1) - z) s, so x @ W = MatMulNBits(x; q, s) + (x @ S) @ C with S (K, kb)
    the 0/1 block-membership matrix (block sums of x) and C (kb, N) the per-block offsets: kb = K/bs extra fp32
    numbers per output column, 1 bit per weight, what the float zero points cost.
    pack: nodes that read the same input with the same settings (q/k/v, gate/up) become ONE node over their
    weights stacked along N, one correction and a Split: a decoded token runs ~300 fewer nodes, and the 192-wide
    k/v projections stop being separate small GEMMs. ``accuracy_level`` is written on each folded node (None:
    removed, fp32 activations). Returns the folded node names."""
    from onnx import helper, numpy_helper

    inits = _inits(graph)
    block_sum: dict[tuple[int, int], str] = {}

    def settings(node) -> tuple:
        at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return node.input[0], int(at["K"]), int(at["bits"]), int(at["block_size"])

    def is_float_zp(node) -> bool:
        return (node.op_type == "MatMulNBits" and len(node.input) >= 4 and bool(node.input[3])
                and _array(inits[node.input[3]]).dtype.kind == "f")

    groups: dict[tuple, list] = {}
    for node in graph.node:
        if is_float_zp(node):
            groups.setdefault(settings(node) if pack else (node.name,), []).append(node)
    first = {id(g[0]): g for g in groups.values()}
    member = {id(n) for g in groups.values() for n in g}
    nodes, folded = [], []
    for node in graph.node:
        if id(node) not in member:
            nodes.append(node)
            continue
        if id(node) not in first:
            continue  # emitted with its group's first node
        group = first[id(node)]
        x, K, bits, bs = settings(node)
        kb = -(-K // bs)
        Ns = [int(next(helper.get_attribute_value(a) for a in n.attribute if a.name == "N")) for n in group]
        N = sum(Ns)
        q = np.concatenate([_array(inits[n.input[1]]) for n in group], axis=0)  # (N, kb, blob)
        sc = np.concatenate([_array(inits[n.input[2]]).reshape(n_i, kb) for n, n_i in zip(group, Ns)], axis=0)  # (N, kb)
        zp = np.concatenate([_array(inits[n.input[3]]).reshape(n_i, kb) for n, n_i in zip(group, Ns)], axis=0)  # (N, kb)
        C = ((float(1 << (bits - 1)) - zp.astype(np.float64)) * sc.astype(np.float64)).T  # (kb, N)
        if (K, bs) not in block_sum:
            S = np.zeros((K, kb), np.float32)  # (K, kb): S[k, k // bs] = 1
            S[np.arange(K), np.arange(K) // bs] = 1.0
            block_sum[(K, bs)] = f"zp_fold.block_sum.K{K}.bs{bs}"
            graph.initializer.append(numpy_helper.from_array(S, block_sum[(K, bs)]))
        name = node.name if len(group) == 1 else f"{node.name}_packed{len(group)}"
        w_name = node.input[1] if len(group) == 1 else f"{node.input[1]}.packed{len(group)}"
        if len(group) > 1:
            graph.initializer.append(numpy_helper.from_array(q, w_name))
            s_shape = _array(inits[node.input[2]]).shape
            graph.initializer.append(numpy_helper.from_array(sc.reshape(-1) if len(s_shape) == 1 else sc, f"{w_name}.scales"))
        s_name = node.input[2] if len(group) == 1 else f"{w_name}.scales"
        c_name = f"{w_name}.zp_fold_offsets"
        graph.initializer.append(numpy_helper.from_array(C.astype(np.float32), c_name))
        out = node.output[0] if len(group) == 1 else f"{name}/out"
        main, sums, corr = f"{out}/zp_fold_main", f"{out}/zp_fold_block_sums", f"{out}/zp_fold_correction"
        # integer zero points at the grid's middle (2^(b-1), what an absent zero point means too): with them
        # present onnxruntime takes its int8-activation kernels at accuracy_level 4, without them it does not
        mid_name = f"zp_fold.mid.N{N}.kb{kb}.b{bits}"
        if mid_name not in inits:
            mid = np.full((N, -(-kb * bits // 8)), 0x88 if bits == 4 else 1 << (bits - 1), np.uint8)  # packed
            inits[mid_name] = numpy_helper.from_array(mid, mid_name)
            graph.initializer.append(inits[mid_name])
        attrs = [helper.make_attribute(k, v) for k, v in (("K", K), ("N", N), ("bits", bits), ("block_size", bs))]
        if accuracy_level is not None:  # None: fp32 activations, whatever was set
            attrs.append(helper.make_attribute("accuracy_level", int(accuracy_level)))
        mm = helper.make_node("MatMulNBits", [x, w_name, s_name, mid_name], [main], name=name, domain=node.domain)
        mm.attribute.extend(attrs)
        nodes += [
            mm,
            helper.make_node("MatMul", [x, block_sum[(K, bs)]], [sums], name=f"{name}/zp_fold_sums"),
            helper.make_node("MatMul", [sums, c_name], [corr], name=f"{name}/zp_fold_offsets"),
            helper.make_node("Add", [main, corr], [out], name=f"{name}/zp_fold_add"),
        ]
        if len(group) > 1:  # (..., N) -> each member's (..., N_i), under the member's own output name
            split = f"{name}/split_sizes"
            graph.initializer.append(numpy_helper.from_array(np.asarray(Ns, np.int64), split))
            nodes.append(helper.make_node("Split", [out, split], [n.output[0] for n in group], name=f"{name}/split", axis=-1))
        folded += [n.name for n in group]
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_initializers(graph)
    return folded


def _op_counts(graph) -> dict[str, int]:
    c: dict[str, int] = {}
    for n in graph.node:
        c[n.op_type] = c.get(n.op_type, 0) + 1
    return c


# ---------------------------------------------------------------- one shared external-data file


def write_shared(models: dict[str, Any], out_dir: Path, data_name: str = WEIGHTS_FILE) -> dict[str, Any]:
    """Write each ModelProto to out_dir/<name> with every initializer >= EXTERNAL_MIN_BYTES in one data file.

    Tensors are deduplicated by content: the same bytes (in any graph, under any name, with any shape) are written
    once and every initializer holding them points at that offset. Returns counts and byte totals.
    """
    import onnx

    blobs: dict[bytes, tuple[int, int]] = {}
    referenced = 0
    per_graph: dict[str, dict[str, int]] = {}
    with open(out_dir / data_name, "wb") as f:
        for name, model in models.items():
            n_ext = shared = 0
            for t in model.graph.initializer:
                if not t.HasField("raw_data") or t.data_location == onnx.TensorProto.EXTERNAL:
                    continue
                raw = t.raw_data
                if len(raw) < EXTERNAL_MIN_BYTES:
                    continue
                key = hashlib.sha256(raw).digest()
                if key in blobs:
                    shared += 1
                else:
                    f.write(b"\0" * (-f.tell() % ALIGN))
                    blobs[key] = (f.tell(), len(raw))
                    f.write(raw)
                offset, length = blobs[key]
                t.ClearField("raw_data")
                t.data_location = onnx.TensorProto.EXTERNAL
                del t.external_data[:]
                for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(length))):
                    e = t.external_data.add()
                    e.key, e.value = k, v
                n_ext += 1
                referenced += length
            (out_dir / name).write_bytes(model.SerializeToString())
            per_graph[name] = {"external_tensors": n_ext, "reused_from_earlier": shared}
    written = sum(length for _, length in blobs.values())
    return {
        "file": data_name,
        "unique_tensors": len(blobs),
        "graphs": per_graph,
        "bytes_referenced": referenced,
        "bytes_unique": written,
        "bytes_saved_by_sharing": referenced - written,
        "file_size_bytes": (out_dir / data_name).stat().st_size,
        "align": ALIGN,
    }


def verify_shared(out_dir: Path, names: Sequence[str] = DECODER_GRAPHS, data_name: str = WEIGHTS_FILE) -> dict[str, Any]:
    """Every external reference points inside data_name, and onnx.load(load_external_data) reads it back."""
    import onnx

    size = (out_dir / data_name).stat().st_size
    files: set[str] = set()
    checked = 0
    for name in names:
        m = onnx.load(str(out_dir / name), load_external_data=False)
        for t in m.graph.initializer:
            if t.data_location != onnx.TensorProto.EXTERNAL:
                continue
            ext = {e.key: e.value for e in t.external_data}
            files.add(ext["location"])
            if int(ext["offset"]) + int(ext["length"]) > size:
                raise AssertionError(f"{name}:{t.name} points past the end of {data_name}")
            checked += 1
        onnx.load(str(out_dir / name), load_external_data=True)  # reads every tensor from the shared file
    if files != {data_name}:
        raise AssertionError(f"external data in {sorted(files)}, expected only {data_name}")
    return {"external_references": checked, "locations": sorted(files)}


# ---------------------------------------------------------------- the whole decoder


def _split_compact(decoder: Any, split: int) -> dict[str, Any] | None:
    """The compact decoder cut at its first fusion layer (edge_tslm.export.onnx.split_decoder): the lower and upper
    graphs a runtime loads instead of decoder.onnx. None for a graph exported without the hidden_split output."""
    from edge_tslm.export.onnx import split_decoder

    outputs = [o.name for o in decoder.graph.output]
    if spec.DEC_HIDDEN_SPLIT not in outputs or split < 1:
        return None
    layers = sum(n.startswith("present_key.") for n in outputs)
    lower, upper = split_decoder(decoder, layers, split)
    return {"layer": split, "layers": layers, "graphs": {spec.DECODER_LOWER_GRAPH: lower, spec.DECODER_UPPER_GRAPH: upper},
            "nodes": {"decoder": len(decoder.graph.node), "lower": len(lower.graph.node), "upper": len(upper.graph.node)}}


def compact_decoder(out_dir: str | Path, cfg: CompactConfig = CompactConfig(), split_at: int = 0,
                    label_tokens: Sequence[int] = ()) -> dict[str, Any]:
    """Rewrite out_dir's fp32 decoder.onnx to ``cfg.bits``-bit weights in WEIGHTS_FILE; with ``split_at`` (the first
    fusion layer) also write it cut in two there (decoder_lower.onnx + decoder_upper.onnx, the same weights).
    label_tokens: vocabulary ids for the graphs' label head (edge_tslm.export.label_head); none: no label head.

    Checks: the graph's external data resolve into the one file and it loads in an onnxruntime session.
    Returns the record that goes into the manifest (config, per-graph rewrites, weight SQNR, sharing stats).
    """
    import onnx
    import onnxruntime as ort

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    fp32_bytes = {name: (out_dir / name).stat().st_size for name in DECODER_GRAPHS}
    models, graphs = {}, {}
    for i, name in enumerate(DECODER_GRAPHS):
        m = onnx.load(str(out_dir / name))
        models[name], graphs[name] = quantize_graph(m, cfg, sqnr=i == 0)  # SQNR of the first graph
        del m
    split = _split_compact(models[spec.DECODER_GRAPH], split_at)
    if split:
        models.update(split["graphs"])
    from edge_tslm.export.label_head import add_label_head

    heads = {name: add_label_head(m, label_tokens) for name, m in models.items()}
    if label_tokens and heads.get(spec.DECODER_GRAPH) is None:  # only decoder_lower.onnx may lack one (it has no lm_head)
        raise ValueError(f"{spec.DECODER_GRAPH} has no logits = lm_head(Gather(hidden, logit_index)) to add a label head "
                         "to; re-export it with this edge-tslm, or pass no label tokens")
    written = tuple(models)
    sharing = write_shared(models, out_dir)
    del models
    sharing["verified"] = verify_shared(out_dir, written)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    for name in written:
        ort.InferenceSession(str(out_dir / name), opts, providers=["CPUExecutionProvider"])
    return {
        "config": asdict(cfg),
        "tool": f"onnxruntime {ort.__version__} MatMulNBitsQuantizer (op_types_to_quantize=('MatMul',), "
        "QOperator: MatMulNBits); tied embedding -> com.microsoft GatherBlockQuantized over the lm_head's bytes",
        "op_types_quantized": ["MatMul", "Gemm (lm_head, rewritten to MatMul)"]
        + (["Gather (tied token embedding)"] if any(g["tied_embedding"] for g in graphs.values()) else []),
        "graphs": graphs,
        "weight_sqnr": graphs[DECODER_GRAPHS[0]].pop("weight_sqnr", None),
        "shared_weights": sharing,
        "fp32_graph_bytes": fp32_bytes,  # the same export's graphs before this step
        "split": {k: v for k, v in (split or {}).items() if k != "graphs"} or None,
        "label_head": {name: h for name, h in heads.items() if h} or None,
        "compact_bytes": sum((out_dir / f).stat().st_size for f in (*written, WEIGHTS_FILE)),
        "seconds": round(time.perf_counter() - t0, 1),
    }


# ---------------------------------------------------------------- parity against the fp32 torch model


def task_parity_inputs(cfg: Any, per_class: int = 1, seed: int = 0) -> list[tuple[str, list[np.ndarray]]]:
    """Real windows for the parity record: the seeded stratified subset (per_class per label) of the task's test
    split, with the text the torch evaluation uses (make_example, pre_prompt as a system turn)."""
    from edge_tslm.data.subset import stratified_subset
    from edge_tslm.train.examples import layout_kwargs, make_example
    from edge_tslm.train.tasks import get_task

    samples = get_task(cfg.task).load("test", None)
    idx = stratified_subset(getattr(samples, "records", samples), per_class, seed)
    out = []
    for i in idx:
        ex = make_example(samples[i], pre_prompt="", **layout_kwargs(cfg))
        out.append((ex.text, list(ex.series)))
    return out


def _sample_shape(model: Any) -> dict[str, int]:
    """default_parity_inputs' channels / length for this model: a MiniRocket stem's axes at its fitted window."""
    from edge_tslm.model.minirocket_stem import sample_channels

    enc = getattr(model, "series_encoder", None)
    C = sample_channels(enc) if enc is not None else 1
    return {"channels": C, "length": enc.stem.cfg.window} if C > 1 else {}


def default_parity_inputs(n: int = 4, seed: int = 0, channels: int = 1, length: int = 0) -> list[tuple[str, list[np.ndarray]]]:
    """Seeded random windows (1-2 series of 40-160 samples) for models without a task test split at hand (tests,
    the demo's first build). channels > 1: every window is that many series of ``length`` samples, what an encoder
    with a MiniRocket stem reads."""
    from edge_tslm.constants import END_CHUNK_TOKEN, TS_TOKEN

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if channels <= 1:
            k = 1 + i % 2
            series = [rng.standard_normal(int(rng.integers(40, 160))).astype(np.float32) for _ in range(k)]
        else:
            k, L = channels, length or int(rng.integers(40, 160))
            series = [rng.standard_normal(L).astype(np.float32) for _ in range(k)]
        text = "Series. " + " ".join(f"s{j}: {TS_TOKEN}{END_CHUNK_TOKEN}" for j in range(k)) + " Which?\n"
        out.append((text, series))
    return out


def validate_compact(
    model: Any,
    artifact_dir: str | Path,
    inputs: Sequence[tuple[str, Sequence[np.ndarray]]],
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The compact artifact (OnnxBackend: int8 encoder + 4-bit decoder) against the fp32 torch model.

    Per window: next-token argmax after the prefill (top-1 agreement, and the fp32 log-prob gap of a flipped top-1),
    the classify label log-likelihoods (max |Δ|) and the classify argmax, both for "full" scoring and for "labels"
    scoring (through the label head when the artifact has one). Tolerances: MAX_TOP1_GAP_NATS,
    MAX_LABEL_LOGPROB_DIFF, MIN_LABEL_AGREEMENT.
    """
    import torch

    from edge_tslm.runtime.onnx_backend import OnnxBackend

    labels = list(labels or model.cfg.labels or ("yes", "no"))
    be = OnnxBackend(artifact_dir, threads=1)
    bl = OnnxBackend(artifact_dir, threads=1, label_scoring="labels")
    cases = []
    for text, series in inputs:
        series = list(series)
        with torch.no_grad():
            ref_logits, _ = model.prefill(model._batch(text, series))
            ref = model.classify(text, series, labels)
            ref_l = model.classify(text, series, labels, scoring="labels")
        enc = be.encode(series)
        logits, _ = be.prefill(text, enc)
        got = be.classify(text, enc, labels)
        got_l = bl.classify(text, enc, labels)
        r = ref_logits.double().reshape(-1).numpy()
        o = logits.reshape(-1).astype(np.float64)
        lp = r - r.max() - np.log(np.exp(r - r.max()).sum())  # fp32 log-probs (V,)
        cases.append(
            {
                "top1_equal": int(np.argmax(r)) == int(np.argmax(o)),
                "top1_gap_nats": float(lp.max() - lp[int(np.argmax(o))]),
                "logits_cosine": float(r @ o / (np.linalg.norm(r) * np.linalg.norm(o))),
                "max_abs_label_logprob_diff": max(abs(got[k] - ref[k]) for k in labels),
                "label_equal": max(ref, key=ref.get) == max(got, key=got.get),
                "labels_scoring_max_abs_diff": max(abs(got_l[k] - ref_l[k]) for k in labels),
                "labels_scoring_label_equal": max(ref_l, key=ref_l.get) == max(got_l, key=got_l.get),
                "labels_scoring_label_head": bool(bl.last_timings.get("label_head")),
            }
        )
    n = len(cases)
    top1 = sum(c["top1_equal"] for c in cases) / n
    lab = sum(c["label_equal"] for c in cases) / n
    dmax = max(c["max_abs_label_logprob_diff"] for c in cases)
    gap = max(c["top1_gap_nats"] for c in cases)
    lab_l = sum(c["labels_scoring_label_equal"] for c in cases) / n
    dmax_l = max(c["labels_scoring_max_abs_diff"] for c in cases)
    return {
        "runtime": "edge_tslm.runtime.onnx_backend.OnnxBackend (onnxruntime CPU, 1 thread)",
        "reference": "FlamingoTSLM.prefill/classify, torch eager fp32",
        "windows": n,
        "labels": labels,
        "tolerance": {
            "max_top1_gap_nats": MAX_TOP1_GAP_NATS,
            "max_abs_label_logprob_diff": MAX_LABEL_LOGPROB_DIFF,
            "min_label_agreement": MIN_LABEL_AGREEMENT,
        },
        "top1_agreement": top1,
        "max_top1_gap_nats": gap,
        "label_agreement": lab,
        "max_abs_label_logprob_diff": dmax,
        "min_logits_cosine": min(c["logits_cosine"] for c in cases),
        "labels_scoring": {"label_agreement": lab_l, "max_abs_label_logprob_diff": dmax_l,
                           "label_head": all(c["labels_scoring_label_head"] for c in cases)},
        "cases": cases,
        "passed": gap <= MAX_TOP1_GAP_NATS and min(lab, lab_l) >= MIN_LABEL_AGREEMENT
        and max(dmax, dmax_l) <= MAX_LABEL_LOGPROB_DIFF,
    }


GGUF_NOTE = (
    "SmolLM2-135M's transformer weights come from a Q4_1 GGUF (32-wide min/max affine blocks): 4-bit 'minmax' "
    "blocks of 32 reproduce them exactly (see weight_sqnr.by_bits, vs the dequantized fp32 weights), so a small "
    "F1 drop here says little about 4-bit quantization of an LM trained in higher precision. The tied token "
    "embedding / lm_head is not on a 4-bit grid in the GGUF: its 4-bit rtn quantization is a real loss"
)


def compact_export(
    model: Any,
    out_dir: Path,
    decoder_report: Any,
    cfg: CompactConfig = CompactConfig(),
    *,
    inputs: Sequence[tuple[str, Sequence[np.ndarray]]] | None = None,
) -> dict[str, Any]:
    """export_artifact's step after the fp32 decoder export: compact the graphs, update the decoder report's files,
    precision, notes and parity (the fp32 graphs' parity is kept under "fp32_graphs"), return the manifest record."""
    from edge_tslm.export.onnx import file_entry, split_layer

    bits, block_size = cfg.bits, cfg.block_size
    from edge_tslm.export.label_head import label_head_tokens
    from edge_tslm.model.batch import encode_target

    labels = list(getattr(getattr(model, "cfg", None), "labels", None) or [])
    tokens = label_head_tokens(lambda t: encode_target(model.tokenizer, t), labels) if labels else []
    rec = compact_decoder(out_dir, cfg, split_at=split_layer(model), label_tokens=tokens)
    r = decoder_report
    halves = (spec.DECODER_LOWER_GRAPH, spec.DECODER_UPPER_GRAPH) if rec["split"] else ()
    r.files = {f: file_entry(out_dir / f) for f in (*r.files, *halves, WEIGHTS_FILE)}
    lvl = lambda a: "fp32" if a is None else f"accuracy_level {a}"  # noqa: E731
    acts = f"activations: integer-zero-point nodes {lvl(cfg.accuracy_level)}" + (
        f", folded min/max nodes {lvl(cfg.fold_accuracy_level)}" if cfg.algorithm == "minmax" and cfg.fold_zero_points else "")
    r.precision = f"int{bits} weights (block {block_size}), {acts}"
    r.notes = [n for n in r.notes if "weights are embedded" not in n] + [
        f"weights {bits}-bit (MatMulNBits, block {block_size}, {cfg.algorithm}; "
        f"tied lm_head/embedding rtn; scopes {list(cfg.keep_scopes)} at {cfg.keep_bits or 32} bits), "
        f"stored once in {WEIGHTS_FILE} (external data, deduplicated by content); cross.onnx stays fp32",
        "the exporter's per-node debug metadata (stack traces) is stripped",
    ]
    info = getattr(model, "info", None)
    if info is not None and str(getattr(info, "name", "")).startswith("smollm2"):
        rec["note"] = GGUF_NOTE
        r.notes.append(GGUF_NOTE)
    r.parity = {
        "fp32_graphs": r.parity,
        "compact": validate_compact(model, out_dir, inputs or default_parity_inputs(**_sample_shape(model))),
    }
    rec["parity"] = {k: v for k, v in r.parity["compact"].items() if k != "cases"}
    return rec
