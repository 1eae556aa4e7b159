"""Where a streamed decision's decoder time goes: onnxruntime's profiler over the classify path's upper half.

    python benchmarks/classify_profile.py --model runs/compactdeep-har --windows 12

For a split compact artifact (decoder_lower.onnx + decoder_upper.onnx), each window's classify call runs the upper
half over the prompt tokens after the cached head and the label trie, and reads logits at the trie's rows. This
swaps in an upper-half session with profiling on (same options as the backend), classifies real test windows
(eval_tslm's text), and sums kernel time per op type over the calls after the first two (which also fill the
caches). Writes benchmarks/results/classify_profile.json/.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from decode_profile import aggregate

RESULTS = Path(__file__).resolve().parent / "results"


def profile(model: str, windows: int, label_scoring: str = "full") -> dict:
    import onnxruntime as ort

    from edge_tslm.machine import machine
    from edge_tslm.runtime.onnx_backend import OnnxBackend
    from edge_tslm.train.examples import layout_kwargs, make_example
    from edge_tslm.train.tasks import get_task

    be = OnnxBackend(model, threads=1, split=True, label_scoring=label_scoring)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.enable_mem_pattern = False  # as the backend
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "upper")
    be.upper = ort.InferenceSession(str(Path(model) / "decoder_upper.onnx"), opts, providers=["CPUExecutionProvider"])
    samples = get_task(be.cfg.task).load("test", None)
    idx = np.random.default_rng(0).permutation(len(samples))[:windows]
    prefill, tokens = [], []
    for i in idx:
        ex = make_example(samples[int(i)], pre_prompt="", **layout_kwargs(be.cfg))
        be.classify(ex.text, be.encode(ex.series), be.labels)
        prefill.append(be.last_timings["prefill_ms"])
        ids, _ = be._prompt(ex.text, len(ex.series))
        tokens.append(len(ids) - len(be._prefix_ids))
    agg = aggregate(json.loads(Path(be.upper.end_profiling()).read_text()), max(1, windows - 2))
    return {"model": model, "windows": windows, "calls_profiled": agg.pop("runs"), "onnxruntime": ort.__version__,
            "per_window_prompt_tokens": float(np.mean(tokens)), "label_trie_tokens": be.last_timings["label_tokens"],
            "label_scoring": label_scoring, "label_head": bool(be.last_timings.get("label_head")),
            "prefill_ms_median": round(float(np.median(prefill[2:] or prefill)), 1), **agg, "machine": machine(),
            "command": "python " + " ".join(sys.argv)}


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = ["# Where a streamed decision's decoder time goes (classify path, upper half, onnxruntime profiler)", "",
             f"`{res['command']}` — `{res['model']}`, {res['calls_profiled']} classify calls on real test windows, 1 thread, "
             f"onnxruntime {res['onnxruntime']}; {m['cpu']}, load average {m['load_avg_1min_at_start']} at start "
             "(the profiler itself adds time per node).", "",
             f"Per call: {res['run_ms_per_step']} ms in the upper half's `run`, {res['kernel_ms_per_step']} ms in kernels, "
             f"{res['nodes_per_step']:.0f} nodes; {res['per_window_prompt_tokens']:.0f} prompt tokens after the cached head + "
             f"{res['label_trie_tokens']:.0f} label-trie tokens ({res.get('label_scoring', 'full')} scoring"
             f"{', label head' if res.get('label_head') else ''}); prefill (both halves, as timed by the backend) "
             f"{res['prefill_ms_median']} ms median.", "",
             "| op type | ms per call | share of kernel time | nodes per call |", "|---|---:|---:|---:|"]
    for o in res["ops"][:12]:
        lines.append(f"| {o['op']} | {o['ms_per_step']} | {o['share']:.1%} | {o['nodes_per_step']:.0f} |")
    lines += ["", "Slowest nodes: " + ", ".join(f"`{n['node']}` {n['ms_per_step']} ms" for n in res["slowest_nodes"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/compactdeep-har", help="a split compact artifact (exported with --weight-bits)")
    ap.add_argument("--windows", type=int, default=12)
    ap.add_argument("--label-scoring", default="full", choices=("full", "labels"), help="the backend's label scoring")
    ap.add_argument("--out", type=Path, default=RESULTS / "classify_profile.json")
    a = ap.parse_args(argv)
    if a.windows < 3:
        ap.error(f"--windows must be >= 3 (the first two also fill the caches), got {a.windows}")
    from edge_tslm.results import write_results

    print(write_results(a.out, profile(a.model, a.windows, a.label_scoring), markdown))


if __name__ == "__main__":
    main()
