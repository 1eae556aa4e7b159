"""Where a rationale token's time goes: onnxruntime's own profiler over the compact decoder's decode steps.

    python benchmarks/decode_profile.py --model runs/compactf-har --tokens 24

Loads the artifact with the runtime's OnnxBackend (1 thread), swaps in a decoder session with profiling on
(same options otherwise), generates `--tokens` greedy tokens after a HAR-style prompt and sums the kernel
time of the last `--steps` decode calls per operator type. Tells whether per-node overhead (many small ops)
or the 4-bit MatMuls dominate, i.e. whether fusing rotary/attention ops could reach the bandwidth bound.
Writes benchmarks/results/decode_profile.json/.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
TEXT = ("x: mean 0.993 g, std 0.023 g <ts><endofchunk>\ny: mean 0.1 g, std 0.02 g <ts><endofchunk>\n"
        "z: mean 0.1 g, std 0.03 g <ts><endofchunk>\nWhich activity is the person doing? Explain briefly.")


def profile(model: str, tokens: int, steps: int) -> dict:
    import onnxruntime as ort

    from edge_tslm.machine import machine
    from edge_tslm.runtime.onnx_backend import OnnxBackend

    be = OnnxBackend(model, threads=1, split=False)  # the one-graph decoder.onnx, which this profiles
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.enable_mem_pattern = False  # as the backend
    opts.enable_profiling = True
    tmp = tempfile.mkdtemp()
    opts.profile_file_prefix = str(Path(tmp) / "decode")
    be.decoder = ort.InferenceSession(str(Path(model) / "decoder.onnx"), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    n_series = TEXT.count("<ts>")
    enc = be.encode([rng.standard_normal(128).astype(np.float32) for _ in range(n_series)])
    be.generate(TEXT, enc, tokens, stop=False)
    agg = aggregate(json.loads(Path(be.decoder.end_profiling()).read_text()), steps)
    return {"model": model, "tokens": tokens, "steps": agg.pop("runs"), "onnxruntime": ort.__version__, "machine": machine(),
            **agg, "command": "python " + " ".join(sys.argv)}


def aggregate(events: list[dict], last_runs: int) -> dict:
    """Kernel time per op type (and the slowest nodes) of the last ``last_runs`` session runs in a profile."""
    runs = [e for e in events if e.get("name") == "model_run"]
    last = runs[-last_runs:]
    lo, hi = last[0]["ts"], last[-1]["ts"] + last[-1]["dur"]
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and lo <= e["ts"] <= hi]
    us, calls, by_node = defaultdict(float), Counter(), defaultdict(float)
    for e in nodes:
        us[e["args"]["op_name"]] += e["dur"]
        calls[e["args"]["op_name"]] += 1
        by_node[e["name"].removesuffix("_kernel_time")] += e["dur"]
    n = len(last)
    ops = [{"op": k, "ms_per_step": round(v / n / 1000, 3), "share": round(v / max(sum(us.values()), 1e-9), 4),
            "nodes_per_step": round(calls[k] / n, 1)} for k, v in sorted(us.items(), key=lambda kv: -kv[1])]
    slowest = [{"node": k, "ms_per_step": round(v / n / 1000, 3)} for k, v in sorted(by_node.items(), key=lambda kv: -kv[1])[:5]]
    return {"runs": n, "run_ms_per_step": round(sum(r["dur"] for r in last) / n / 1000, 3),
            "kernel_ms_per_step": round(sum(us.values()) / n / 1000, 3), "nodes_per_step": round(len(nodes) / n, 1),
            "ops": ops, "slowest_nodes": slowest}


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = ["# Where a decode step's time goes (onnxruntime profiler)", "",
             f"`{res['command']}` — `{res['model']}`, the last {res['steps']} of {res['tokens']} greedy decode steps, 1 thread, "
             f"onnxruntime {res['onnxruntime']}; {m['cpu']}, load average {m['load_avg_1min_at_start']} at start "
             "(the profiler itself adds time per node).", "",
             f"Per step: {res['run_ms_per_step']} ms in `run`, {res['kernel_ms_per_step']} ms in kernels, "
             f"{res['nodes_per_step']:.0f} nodes.", "",
             "| op type | ms per step | share of kernel time | nodes per step |", "|---|---:|---:|---:|"]
    for o in res["ops"][:20]:
        lines.append(f"| {o['op']} | {o['ms_per_step']} | {o['share']:.1%} | {o['nodes_per_step']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/compactf-har")
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--steps", type=int, default=20, help="decode calls summed (the last ones)")
    ap.add_argument("--out", type=Path, default=RESULTS / "decode_profile.json")
    a = ap.parse_args(argv)
    if a.tokens < 1 or a.steps < 1:
        ap.error(f"--tokens and --steps must be >= 1, got {a.tokens} and {a.steps}")
    from edge_tslm.results import write_results

    print(write_results(a.out, profile(a.model, a.tokens, min(a.steps, a.tokens)), markdown))


if __name__ == "__main__":
    main()
