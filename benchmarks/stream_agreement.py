"""`edge-tslm stream` over real continuous recordings: event format, and the window answers against the labels.

    python benchmarks/stream_agreement.py --har runs/compact-har --ecg runs/compact-ecg

HAR: HAPT's recordings are continuous (one per experiment, 50 Hz) with a label per sample (edge_tslm.data.hapt
``Recording.labels``: an activity, or -1 for postural transitions / unlabelled stretches). Each recording of the
chosen UCI test subjects is written as a CSV (t, x, y, z) and streamed with the real CLI
(``edge-tslm stream --task har --rationale never``, 2.56 s windows, hop 1.28 s). A window's truth is its
samples' activity when all of them carry the same one ("pure" windows: what the benchmark's windows are, as
those never straddle an activity change); windows over a transition or two activities have no truth there.
A second figure scores every window with a >= 50 % majority activity. Macro-F1 over the six activities is set
beside the benchmark's (``--har-benchmark``, default benchmarks/results/tslm_flamingo-har.json: its windows of
all nine test subjects, not the same windows; pass the results file of the model being streamed).

ECG: real PhysioNet 2017 test-split records (WFDB .hea/.mat, 300 Hz) streamed one by one with
``edge-tslm stream --task afib --input AXXXXX.hea``; each window's answer is compared with its record's label.

Every event is checked against the schema (edge_tslm.runtime.events.validate_event) and for its order
(start first, summary last, window indices 0..n-1, segments covering the usable windows).
Writes benchmarks/results/stream_agreement.json and .md.
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
from collections import Counter
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
PURE, MAJORITY = "pure", "majority"


def window_truth(start_s: float, end_s: float, labels: np.ndarray, fs: float, rule: str = PURE, t0: float = 0.0) -> str | None:
    """The truth of the window [start_s, end_s) from per-sample labels ('' or None: no activity).

    pure: the one label every sample carries (None if any sample differs or is unlabelled);
    majority: the most common label if it covers >= 50 % of the samples (unlabelled ones count against it)."""
    a = int(round((start_s - t0) * fs))
    b = int(round((end_s - t0) * fs))
    seg = labels[max(a, 0) : max(b, 0)]
    if seg.size == 0 or b > labels.size:
        return None
    if rule == PURE:
        first = seg[0]
        return str(first) if first and bool(np.all(seg == first)) else None
    if rule == MAJORITY:
        vals, counts = np.unique(seg.astype(str), return_counts=True)
        ok = vals != ""
        if not ok.any():
            return None
        vals, counts = vals[ok], counts[ok]
        k = int(np.argmax(counts))
        return str(vals[k]) if counts[k] * 2 >= seg.size else None
    raise ValueError(f"rule must be {PURE!r} or {MAJORITY!r}")


def check_stream(events: list[dict]) -> list[str]:
    """Schema and order problems of one stream's events (empty: fine)."""
    from edge_tslm.runtime.events import validate_event

    errs = [f"event {i}: {e}" for i, ev in enumerate(events) for e in validate_event(ev)]
    if not events or events[0].get("type") != "start":
        errs.append("the first event is not 'start'")
    if not events or events[-1].get("type") != "summary":
        errs.append("the last event is not 'summary'")
    wins = [e for e in events if e.get("type") == "window"]
    if [w.get("index") for w in wins] != list(range(len(wins))):
        errs.append("window indices are not 0..n-1 in order")
    if any(w["end_s"] <= w["start_s"] for w in wins):
        errs.append("a window ends before it starts")
    if events and events[-1].get("type") == "summary":
        s = events[-1]
        if s.get("windows") != len(wins):
            errs.append(f"summary counts {s.get('windows')} windows, {len(wins)} window events")
        if s.get("usable") != sum(w["answer"] is not None for w in wins):
            errs.append("summary 'usable' differs from the windows with an answer")
    segs = [e for e in events if e.get("type") == "segment"]
    if segs and sum(s["windows"] for s in segs) != sum(w["answer"] is not None for w in wins):
        errs.append("segments do not cover the usable windows once each")
    return errs


def score(pairs: list[tuple[str, str | None]], labels: tuple[str, ...]) -> dict:
    """pairs: (truth, answer) -> n, accuracy, macro-F1 over ``labels``, per-class F1, predicted/true counts."""
    from edge_tslm.metrics import accuracy, macro_f1, per_class_f1

    pairs = [(t, a) for t, a in pairs if t is not None]
    if not pairs:
        return {"n": 0}
    y = [t for t, _ in pairs]
    p = [a if a is not None else "<none>" for _, a in pairs]
    present = [lab for lab in labels if lab in set(y)]
    return {
        "n": len(pairs),
        "accuracy": round(accuracy(y, p), 4),
        "macro_f1": round(macro_f1(y, p, labels), 4),
        "macro_f1_present_classes": round(macro_f1(y, p, present), 4) if present else None,  # classes absent from the truth count 0 above
        "present_classes": present,
        "per_class_f1": {k: round(v, 4) for k, v in per_class_f1(y, p, labels).items()},
        "true": dict(sorted(Counter(y).items())),
        "answered": dict(sorted(Counter(p).items())),
    }


STREAM_ARGS: list[str] = []  # ["--threads", "N", "--label-scoring", "labels"] when asked
HAR_EXTRA: list[str] = []  # ["--hop-s", "2.56"] when asked


def stream_cli(model: str, input_path: Path, task: str, backend: str, extra: list[str] = ()) -> tuple[list[dict], float, str]:
    exe = Path(sys.executable).parent / "edge-tslm"
    cmd = [str(exe) if exe.exists() else "edge-tslm", "stream", "--model", model, "--input", str(input_path), "--task", task,
           "--backend", backend, "--rationale", "never", *STREAM_ARGS, *extra]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-3000:]}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()], time.perf_counter() - t, " ".join(cmd[1:])


def har_part(model: str, subjects: list[int], backend: str, tmp: Path, max_seconds: float | None, experiments: set[int] | None = None,
             start_s: float = 0.0, bench: Path = RESULTS / "tslm_flamingo-har.json", other_reference: bool = False) -> dict:
    from edge_tslm.data.hapt import ACTIVITIES, load_hapt_recordings

    names = np.array([*ACTIVITIES, ""], dtype=object)
    out = {"recordings": [], "pure": [], "majority": [], "schema_errors": []}
    recs = [r for r in load_hapt_recordings() if r.subject in subjects and (not experiments or r.experiment in experiments)]
    refs = {}
    if other_reference:  # each recording streamed with the gait frame of the same wearer's other recording
        from edge_tslm.data.hapt import recording_reference

        for r in load_hapt_recordings():
            if r.subject in subjects:
                refs[(r.subject, r.experiment)] = recording_reference(r)
    for rec in sorted(recs, key=lambda r: r.experiment):
        a0 = int(round(start_s * 50))
        n = rec.acc.shape[1] - a0 if max_seconds is None else min(rec.acc.shape[1] - a0, int(max_seconds * 50))
        lab = names[np.where(rec.labels[a0 : a0 + n] >= 0, rec.labels[a0 : a0 + n], len(ACTIVITIES))].astype(str)
        csv = tmp / f"hapt_s{rec.subject}_e{rec.experiment}.csv"
        t = np.arange(n) / 50.0  # the stream's times start at 0 at the excerpt's first sample
        np.savetxt(csv, np.column_stack([t, rec.acc[:, a0 : a0 + n].T]), delimiter=",", header="t,x,y,z", comments="", fmt="%.5f")
        print(f"[har] subject {rec.subject} experiment {rec.experiment}: {a0 / 50:g}-{(a0 + n) / 50:g} s ...", file=sys.stderr, flush=True)
        extra = list(HAR_EXTRA)
        if other_reference:
            other = [v for (sub, e), v in refs.items() if sub == rec.subject and e != rec.experiment and v is not None]
            if not other:
                raise SystemExit(f"--gait-reference other-recording: subject {rec.subject} has no other recording with ~30 s of gait")
            extra += ["--gait-reference", ",".join(f"{v:.6f}" for v in other[0])]
        events, wall, cmd = stream_cli(model, csv, "har", backend, extra)
        errs = check_stream(events)
        out["schema_errors"] += [f"s{rec.subject}/e{rec.experiment}: {e}" for e in errs]
        wins = [e for e in events if e["type"] == "window"]
        for w in wins:
            out["pure"].append((window_truth(w["start_s"], w["end_s"], lab, 50.0, PURE), w["answer"]))
            out["majority"].append((window_truth(w["start_s"], w["end_s"], lab, 50.0, MAJORITY), w["answer"]))
        s = events[-1]
        out["recordings"].append({"subject": rec.subject, "experiment": rec.experiment, "start_s": a0 / 50, "seconds": round(n / 50, 1), "windows": len(wins),
                                  "usable": s.get("usable"), "segments": s.get("segments"), "events": dict(Counter(e["type"] for e in events)),
                                  "wall_s": round(wall, 1), "latency_ms": s.get("latency_ms"), "peak_rss_mb": s.get("peak_rss_mb"),
                                  "flags": s.get("flags"), **({"gait_frame": s["gait_frame"]} if "gait_frame" in s else {}),
                                  "command": cmd.replace(str(tmp), "<tmp>")})
    res = {"pure_windows": score(out["pure"], ACTIVITIES), "majority_windows": score(out["majority"], ACTIVITIES),
           "recordings": out["recordings"], "schema_errors": out["schema_errors"][:50], "n_schema_errors": len(out["schema_errors"]),
           "windows": sum(r["windows"] for r in out["recordings"]),
           "unlabelled_windows": sum(t is None for t, _ in out["majority"])}
    if bench.is_file():
        b = json.loads(bench.read_text())
        m = b.get("metrics", {})
        res["benchmark"] = {"file": str(bench.resolve().relative_to(REPO)), "macro_f1": m.get("macro_f1"), "n": m.get("n"),
                            "per_class_f1": m.get("per_class_f1"), "subset": {k: v for k, v in (b.get("subset") or {}).items() if k != "indices"}}
    return res


def ecg_part(model: str, per_class: int, backend: str) -> dict:
    from edge_tslm.data.physionet2017 import ECG_TASK, LABEL_NAMES, split_records

    try:
        recs = split_records("test")
    except FileNotFoundError as e:
        return {"skipped": str(e)}
    rng = np.random.default_rng(0)
    chosen = []
    for code in LABEL_NAMES:
        members = sorted((r for r in recs if r.code == code), key=lambda r: r.name)
        for i in sorted(rng.choice(len(members), size=min(per_class, len(members)), replace=False)):
            chosen.append(members[int(i)])
    pairs, rec_pairs, rows, errs = [], [], [], []
    for r in chosen:
        print(f"[ecg] {r.name} ({r.label}) ...", file=sys.stderr, flush=True)
        events, wall, cmd = stream_cli(model, Path(r.directory) / f"{r.name}.hea", "afib", backend)
        errs += [f"{r.name}: {e}" for e in check_stream(events)]
        wins = [e for e in events if e["type"] == "window"]
        answers = [w["answer"] for w in wins]
        pairs += [(r.label, a) for a in answers]
        got = [a for a in answers if a is not None]
        rec_pairs.append((r.label, Counter(got).most_common(1)[0][0] if got else None))
        burden = next((e for e in events if e["type"] == "burden"), None)
        rows.append({"record": r.name, "label": r.label, "windows": len(wins), "answers": answers, "wall_s": round(wall, 1),
                     "burden": burden and burden["burden"], "latency_ms": events[-1].get("latency_ms")})
    return {"records": rows, "window_vs_record_label": score(pairs, ECG_TASK.labels), "record_majority": score(rec_pairs, ECG_TASK.labels),
            "schema_errors": errs[:50], "n_schema_errors": len(errs), "selection": f"{per_class} test-split records per class, seeded (0)"}


def _recs(h: dict) -> str:
    return ", ".join(f"s{r['subject']}/e{r['experiment']} {r.get('start_s', 0):g}–{r.get('start_s', 0) + r['seconds']:g} s" for r in h["recordings"])


def markdown(res: dict) -> str:
    L = ["# `edge-tslm stream` on real recordings: event format and agreement with the labels", "", f"Command: `{res['command']}`", "",
         f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores; load average at start {res['loadavg_start']}, end {res['loadavg_end']}.", ""]
    h = res.get("har")
    if h:
        b = h.get("benchmark", {})
        L += [f"## HAR — `{res['har_model']}`, UCI test subject(s) {res['har_subjects']}", "",
              f"{len(h['recordings'])} continuous recording(s) ({_recs(h)}), {h['windows']} windows (2.56 s, hop {res.get('har_hop_s') or 1.28:g} s) streamed by the CLI; "
              f"schema/order errors: **{h['n_schema_errors']}**."
              + (f" Gait frame: {res['har_gait_reference']}; windows read before it was set: "
                 f"{sum((r.get('flags') or {}).get('gait_frame_pending', 0) for r in h['recordings'])}."
                 if res.get("har_gait_reference") and any("gait_frame" in r for r in h["recordings"]) else ""), "",
              "| windows scored | n | accuracy | macro-F1 (6 classes) | macro-F1 (classes present) |", "|---|---:|---:|---:|---:|"]
        for key, name in (("pure_windows", "pure (one activity, no transition)"), ("majority_windows", "majority activity ≥ 50 %")):
            s = h[key]
            L.append(f"| {name} | {s.get('n')} | {s.get('accuracy', '–')} | {s.get('macro_f1', '–')} | {s.get('macro_f1_present_classes', '–')} "
                     f"({len(s.get('present_classes') or [])}) |")
        bf = b.get("macro_f1")
        pc = (b.get("subset") or {}).get("per_class")
        where = f"windows{f' in a {pc}/class subset' if pc else ''} of all 9 test subjects"
        L.append(f"| benchmark: `{b.get('file')}` ({b.get('n')} {where}) | {b.get('n')} | – | "
                 f"{'–' if bf is None else round(bf, 4)} | (6) |")
        if b.get("per_class_f1"):
            L += ["", f"Benchmark per-class F1: { {k: round(v, 3) for k, v in b['per_class_f1'].items()} }"]
        L += ["", f"Per-class F1 (pure windows): {h['pure_windows'].get('per_class_f1')}", "",
              f"Answered (pure windows): {h['pure_windows'].get('answered')}; true: {h['pure_windows'].get('true')}", ""]
    e = res.get("ecg")
    if e and "skipped" not in e:
        s, r = e["window_vs_record_label"], e["record_majority"]
        L += [f"## ECG rhythm — `{res['ecg_model']}`, PhysioNet 2017 test records ({e['selection']})", "",
              f"{len(e['records'])} records streamed one by one (`--input AXXXXX.hea`); schema/order errors: **{e['n_schema_errors']}**.", "",
              "| scored | n | accuracy | macro-F1 (4 classes) |", "|---|---:|---:|---:|",
              f"| every 30 s window vs its record's label | {s.get('n')} | {s.get('accuracy', '–')} | {s.get('macro_f1', '–')} |",
              f"| record = majority of its windows | {r.get('n')} | {r.get('accuracy', '–')} | {r.get('macro_f1', '–')} |", ""]
    elif e:
        L += ["## ECG rhythm", "", f"Skipped: {e['skipped']}", ""]
    return "\n".join(L)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--har", help="HAR artifact (ONNX export dir or torch artifact)")
    ap.add_argument("--ecg", help="ECG artifact")
    ap.add_argument("--subjects", default="2", help="comma-separated UCI test subjects for HAR")
    ap.add_argument("--har-seconds", type=float, default=None, help="crop each recording (default: whole)")
    ap.add_argument("--har-start", type=float, default=0.0, help="start each HAR recording at this second")
    ap.add_argument("--ecg-per-class", type=int, default=3)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--hop-s", type=float, default=None, help="HAR hop in s (default: the CLI's 1.28; 2.56 = no overlap, half the windows)")
    ap.add_argument("--threads", type=int, default=0, help="backend CPU threads passed to edge-tslm stream (0: its default)")
    ap.add_argument("--label-scoring", default=None, choices=("full", "labels"),
                    help="passed to edge-tslm stream (default: its own; labels since session 14, full before)")
    ap.add_argument("--experiments", default="", help="comma-separated HAPT experiment ids to keep (default: all of the subjects')")
    ap.add_argument("--har-benchmark", type=Path, default=RESULTS / "tslm_flamingo-har.json",
                    help="results JSON whose macro-F1 the HAR agreement is set beside (that of the model streamed)")
    ap.add_argument("--gait-reference", default="", help="for a har_gait model: 'scan' (passed to edge-tslm stream) takes each "
                    "recording's gait frame from its own first ~30 s of walking before streaming it (HAPT records the "
                    "still postures first); 'other-recording' passes the reference of the same subject's other recording "
                    "(a wearer calibrated in an earlier session); default: the stream sets it live, and reads the windows "
                    "before the walk as worn")
    ap.add_argument("--out", type=Path, default=RESULTS / "stream_agreement.json")
    a = ap.parse_args(argv)
    if not (a.har or a.ecg):
        ap.error("pass --har and/or --ecg")
    if a.har and not a.har_benchmark.is_file():
        ap.error(f"--har-benchmark {a.har_benchmark}: no such results file (e.g. benchmarks/results/runtime_<artifact>_full.json "
                 "from benchmarks/eval_runtime.py)")
    if a.threads:
        STREAM_ARGS[:] = ["--threads", str(a.threads)]
    if a.label_scoring:
        STREAM_ARGS.extend(["--label-scoring", a.label_scoring])
    if a.hop_s:
        HAR_EXTRA[:] = ["--hop-s", str(a.hop_s)]
    if a.gait_reference == "scan":
        HAR_EXTRA.extend(["--gait-reference", "scan"])
    elif a.gait_reference not in ("", "other-recording"):
        ap.error("--gait-reference: scan | other-recording")
    from edge_tslm.machine import machine

    res: dict = {"command": "python benchmarks/stream_agreement.py " + " ".join(shlex.quote(v) for v in (argv if argv is not None else sys.argv[1:])),
                 "machine": machine(), "loadavg_start": [round(v, 2) for v in os.getloadavg()],
                 "label_scoring": a.label_scoring or "the edge-tslm stream default (labels)"}
    with tempfile.TemporaryDirectory() as tmp:
        if a.har:
            subjects = [int(s) for s in a.subjects.split(",")]
            res.update(har_model=a.har, har_subjects=subjects, har_hop_s=a.hop_s)
            exps = {int(e) for e in a.experiments.split(",") if e}
            res["har"] = har_part(a.har, subjects, a.backend, Path(tmp), a.har_seconds, exps or None, a.har_start, a.har_benchmark,
                                  a.gait_reference == "other-recording")
            res["har_gait_reference"] = a.gait_reference or "live (set by the stream once the wearer has walked)"
        if a.ecg:
            res["ecg_model"] = a.ecg
            res["ecg"] = ecg_part(a.ecg, a.ecg_per_class, a.backend)
    res["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    from edge_tslm.results import write_results

    print(write_results(a.out, res, markdown))


if __name__ == "__main__":
    main()
