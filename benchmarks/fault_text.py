"""Does a short fault inside an ECG window change the stream's answer? With and without leaving the fault out
of the measured RR text (StreamConfig.exclude_untrusted).

    python benchmarks/fault_text.py --model runs/compactrr-ecg --per-class 25

Real PhysioNet 2017 test-split records (seeded, `--per-class` per label), each streamed alone as one window
(its first min(30 s, its length)) through the runtime's Streamer and the artifact's backend. Into the
middle of the window goes one fault as benchmarks/soak.py injects it: none, a 0.3 s timestamp gap
(gap_short), 0.2 s of NaNs (nan_short), or 3 s of noise at 3x the record's std (noise). The gap and the
NaNs are interpolated by the stream (and flagged); the noise is flagged. Each faulted window is streamed
twice: exclude_untrusted=True (the runtime's default: heart rate and RR numbers in the text are measured
around the interpolated/noisy samples) and False (measured over the whole window, as before this option).

Reported per fault kind and setting: macro-F1 and the challenge score against the record labels, and the
share of windows whose answer equals the clean window's answer. Writes benchmarks/results/fault_text.json/.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"
KINDS = ("none", "gap_short", "nan_short", "noise")


def choose(per_class: int, seed: int = 0):
    from edge_tslm.data.physionet2017 import LABEL_NAMES, split_records

    recs = split_records("test")
    rng = np.random.default_rng(seed)
    out = []
    for code in LABEL_NAMES:
        members = sorted((r for r in recs if r.code == code), key=lambda r: r.name)
        out += [members[int(i)] for i in sorted(rng.choice(len(members), size=min(per_class, len(members)), replace=False))]
    return out


def stream_once(backend, x: np.ndarray, times: np.ndarray, fs: float, window_s: float, exclude: bool) -> dict:
    from edge_tslm.runtime.stream import StreamConfig, Streamer

    cfg = StreamConfig(task="afib", window_s=window_s, hop_s=window_s, rationale_on="never", channels=("ECG",), unit="mV",
                       exclude_untrusted=exclude)
    st = Streamer(backend, cfg, fs=fs)
    events = st.feed(x, times) + st.finish()
    wins = [e for e in events if e["type"] == "window"]
    if len(wins) != 1:
        raise RuntimeError(f"expected one window, got {len(wins)}")
    return wins[0]


def run(model: str, per_class: int, threads: int) -> dict:
    from soak import Fault, FAULT_KINDS, inject

    from edge_tslm.data.physionet2017 import ECG_TASK
    from edge_tslm.machine import machine
    from edge_tslm.metrics import challenge_score, macro_f1
    from edge_tslm.runtime.backend import load_backend

    backend = load_backend(model, "auto", threads=threads) if threads else load_backend(model, "auto")
    recs = choose(per_class)
    fs = 300.0
    rows = []
    t0 = time.time()
    for r in recs:
        sig = r.load().astype(np.float32)  # (1, L) mV at 300 Hz
        window_s = float(min(30.0, int(sig.shape[1] / fs)))
        x = sig[:, : int(window_s * fs)]
        row = {"record": r.name, "label": r.label, "window_s": window_s}
        for kind in KINDS:
            if kind == "none":
                y, t = x, np.arange(x.shape[1]) / fs
                settings = {"clean": True}
            else:
                n = int(round(FAULT_KINDS[kind][0] * fs))
                y, t = inject(x, fs, [Fault(kind, x.shape[1] // 2 - n // 2, n)], seed=0)
                settings = {"exclude": True, "whole": False}
            for name, exclude in settings.items():
                w = stream_once(backend, y, t, fs, window_s, exclude)
                row[f"{kind}/{name}"] = {"answer": w["answer"], "flags": w["quality"]["flags"]}
        rows.append(row)
        print(f"{r.name} {r.label}: " + ", ".join(f"{k}={v['answer']}" for k, v in row.items() if isinstance(v, dict)),
              file=sys.stderr, flush=True)
    labels = tuple(ECG_TASK.labels)
    table = []
    for key in ["none/clean"] + [f"{k}/{s}" for k in KINDS[1:] for s in ("whole", "exclude")]:
        y = [row["label"] for row in rows]
        p = [row[key]["answer"] or "<none>" for row in rows]
        clean = [row["none/clean"]["answer"] for row in rows]
        table.append({
            "setting": key, "n": len(rows),
            "macro_f1": round(macro_f1(y, p, labels), 4),
            "challenge": round(challenge_score(y, p, all_labels=list(labels) + ["<none>"]), 4),
            "same_as_clean": round(float(np.mean([a == b for a, b in zip(p, clean)])), 4),
            "answered": dict(sorted(Counter(p).items())),
            "flagged": round(float(np.mean([bool(row[key]["flags"]) for row in rows])), 4),
        })
    return {"model": model, "per_class": per_class, "records": rows, "table": table, "threads": threads,
            "wall_s": round(time.time() - t0, 1), "machine": machine(), "command": "python " + " ".join(sys.argv)}


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# A short fault inside an ECG window: the stream's answer with and without the fault in the RR text", "",
        f"`{res['command']}` — artifact `{res['model']}`, {len(res['records'])} PhysioNet 2017 test-split records "
        f"({res['per_class']} per label, seeded), each streamed alone as one window; {m['cpu']}, {m['cores']} cores; "
        f"{res['wall_s']} s.", "",
        "One fault in the middle of the window, as benchmarks/soak.py injects it (gap_short: 0.3 s of timestamps missing, "
        "interpolated; nan_short: 0.2 s of NaNs, interpolated; noise: 3 s at 3x the record's std). **whole**: heart rate "
        "and RR numbers in the text measured over the whole window (before `StreamConfig.exclude_untrusted`); "
        "**exclude**: measured around the interpolated / noisy samples (the runtime's default).", "",
        "| fault | RR text | macro-F1 | challenge | same answer as clean | windows flagged | answers |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in res["table"]:
        kind, how = r["setting"].split("/")
        lines.append(f"| {kind} | {how} | {r['macro_f1']:.4f} | {r['challenge']:.4f} | {r['same_as_clean']:.2%} | "
                     f"{r['flagged']:.0%} | {', '.join(f'{k} {v}' for k, v in r['answered'].items())} |")
    lines += ["", "Scores are against each record's label (one window per record); `same answer as clean` compares with "
              "the same record streamed without a fault.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="ECG artifact whose text has measured RR numbers (series_features rr/beats)")
    ap.add_argument("--per-class", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "fault_text.json")
    a = ap.parse_args(argv)
    if a.per_class < 1:
        ap.error(f"--per-class must be >= 1 (records per label), got {a.per_class}")
    from edge_tslm.results import write_results

    print(write_results(a.out, run(a.model, a.per_class, a.threads), markdown))


if __name__ == "__main__":
    main()
