"""Which MatMulNBits form is fast on this CPU: one SmolLM2-sized projection, one token, per quantizer setting.

The compact decoder's rationale decoding ran 5x slower per token than the fp32 export (243 vs 45 ms). This
times a single MatMul (K=576 -> N=1536, the MLP's up projection; M=1 decode and M=128 prefill rows) as fp32
and as MatMulNBits built by onnxruntime's own quantizers: min/max blocks with float zero points (our
"minmax", exact on Q4_1 weights), the same with the zero points folded into an fp32 block-sum correction
(edge_tslm.export.compact.fold_float_zero_points), the default RTN with integer zero points, each at
accuracy_level None/4. (onnxruntime's min/max (HQQ) quantizer does not write accuracy_level on its nodes, so its
two "minmax" rows are the same graph; the fold writes it.)

    python benchmarks/matmulnbits_micro.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def matmul_model(w: np.ndarray):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    K, N = w.shape
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", N])],
        [numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8  # what every onnxruntime release reads
    return m


def quantize(model, algorithm: str, accuracy_level: int | None, bits: int = 4, block: int = 32):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    import onnx

    from edge_tslm.export.compact import _minmax_config, _minmax_quantizer

    model = onnx.ModelProto.FromString(model.SerializeToString())  # the quantizer edits its model in place

    kw = {"block_size": block, "is_symmetric": False, "accuracy_level": accuracy_level, "op_types_to_quantize": ("MatMul",)}
    if algorithm.startswith("minmax"):
        cfg = _minmax_config(bits, block)
        q = MatMulNBitsQuantizer(model, algo_config=cfg, **kw)
        q.node_quantizer = _minmax_quantizer(cfg)
    else:
        q = MatMulNBitsQuantizer(model, bits=bits, **kw)
    q.process()
    if algorithm == "minmax-folded":
        from edge_tslm.export.compact import fold_float_zero_points

        fold_float_zero_points(q.model.model.graph, accuracy_level)
    return q.model.model


def time_session(model, M: int, K: int, threads: int, reps: int) -> tuple[float, np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((M, K)).astype(np.float32)
    for _ in range(3):
        sess.run(None, {"x": x})
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        (y,) = sess.run(None, {"x": x})
        ts.append((time.perf_counter() - t) * 1000)
    return float(np.median(ts)), y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--k", type=int, default=576)
    ap.add_argument("--n", type=int, default=1536)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 128], help="M: rows per call (1: a decoded token)")
    ap.add_argument("--out", type=Path, default=RESULTS / "matmulnbits_micro.json", help="writes this .json and the .md beside it")
    a = ap.parse_args()
    import onnxruntime as ort

    from edge_tslm.machine import machine

    w = (np.random.default_rng(0).standard_normal((a.k, a.n)) * 0.02).astype(np.float32)
    base = matmul_model(w)
    rows = []
    for M in a.rows:
        ref_ms, ref = time_session(base, M, a.k, a.threads, a.reps)
        rows.append({"form": "fp32 MatMul", "M": M, "ms": round(ref_ms, 4), "rel_err": 0.0})
        for bits, alg, lvl in [(4, "minmax", None), (4, "minmax", 4), (4, "minmax-folded", None), (4, "minmax-folded", 4),
                               (4, "rtn", None), (4, "rtn", 4),
                               (8, "minmax", None), (8, "rtn", None), (8, "rtn", 4)]:
            form = f"MatMulNBits {bits}-bit {alg} accuracy_level={lvl}"
            try:
                ms, y = time_session(quantize(base, alg, lvl, bits), M, a.k, a.threads, a.reps)
                err = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
                rows.append({"form": form, "M": M, "ms": round(ms, 4), "rel_err": round(err, 5)})
            except Exception as e:  # a form this onnxruntime refuses is a result too
                rows.append({"form": form, "M": M, "ms": None, "error": f"{type(e).__name__}: {str(e)[:200]}"})
    res = {"rows": rows, "shape": {"K": a.k, "N": a.n}, "threads": a.threads, "reps": a.reps, "onnxruntime": ort.__version__,
           "machine": machine(), "command": "python benchmarks/matmulnbits_micro.py " + " ".join(sys.argv[1:])}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    lines = ["# MatMulNBits forms on this CPU (one K=%d -> N=%d projection)" % (a.k, a.n), "",
             f"`{res['command']}`; median of {a.reps} runs; onnxruntime {ort.__version__}; "
             f"{res['machine']['cpu']}, load average {res['machine']['load_avg_1min_at_start']} at start.", "",
             "| form | rows M | ms | rel. error vs fp32 |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['form']} | {r['M']} | {r['ms'] if r['ms'] is not None else r['error']} | {r.get('rel_err', '')} |")
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
