"""Soak test: long real signal streamed faster than real time with injected faults; memory must stay flat.

    python benchmarks/soak.py --ecg runs/compact-ecg --ecg-minutes 60 --har runs/compact-har --har-minutes 10
    python benchmarks/soak.py --har fake --har-minutes 60        # the cheap numpy backend (says so in the report)
    python benchmarks/soak.py --ecg runs/compact-ecg --run har:runs/compact-har:10 --run har:fake:60

Signal: real recordings played back to back (HAR: the HAPT UCI test subjects' continuous recordings, in
subject/experiment order; ECG: PhysioNet 2017 test-split records, or the MIT-BIH excerpt looped without
../shared). Every ``--fault-every`` seconds one fault is injected, cycling through the kinds:

    gap_short   0.3 s of samples removed (timestamps jump; the stream fills NaN and interpolates)
    gap_long    2 s removed (filled, but longer than the 0.5 s that may be interpolated: windows unusable)
    gap_restart 45 s removed (longer than a window: the stream restarts its windows after it)
    nan_short   0.2 s of NaN on every channel (interpolated)
    nan_long    1.0 s of NaN (unusable)
    noise       3 s of added Gaussian noise, 3x the signal's std (flagged ``noise`` where part of a window is quiet)

The stream runs in a child process (this file with ``--worker``) that reads the signal from a .npy file, feeds
it in 0.5 s chunks with timestamps as fast as the backend goes, writes every event to a JSON-lines file and
samples its own RSS (/proc/self/statm) after every ``--rss-every`` windows. The parent then checks that every
expected window produced exactly one window event (the expected count is computed from the fault plan alone:
long gaps split the timeline, short ones are filled), counts quality flags per fault kind and the faults some
window flagged with their own flag, and fits the RSS slope. Writes benchmarks/results/soak.json and .md.
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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))

# kind -> (duration in s, what is done)
FAULT_KINDS: dict[str, tuple[float, str]] = {
    "gap_short": (0.3, "gap"),
    "gap_long": (2.0, "gap"),
    "gap_restart": (45.0, "gap"),
    "nan_short": (0.2, "nan"),
    "nan_long": (1.0, "nan"),
    "noise": (3.0, "noise"),
}
# The window flag that reports each action.
ACTION_FLAG = {"gap": "gap", "nan": "nan", "noise": "noise"}


@dataclass(frozen=True)
class Fault:
    kind: str
    start: int  # first affected sample (index into the clean signal)
    length: int  # affected samples

    def span_s(self, fs: float) -> tuple[float, float]:
        return self.start / fs, (self.start + self.length) / fs


def plan_faults(n: int, fs: float, every_s: float, kinds: tuple[str, ...] = tuple(FAULT_KINDS), lead_s: float = 20.0) -> list[Fault]:
    """One fault every ``every_s`` seconds after ``lead_s``, cycling through ``kinds``; none runs past the end."""
    out: list[Fault] = []
    t, k = lead_s, 0
    while True:
        kind = kinds[k % len(kinds)]
        length = int(round(FAULT_KINDS[kind][0] * fs))
        start = int(round(t * fs))
        if start + length >= n:
            break
        out.append(Fault(kind, start, length))
        t += max(every_s, FAULT_KINDS[kind][0] + 1.0)
        k += 1
    return out


def inject(x: np.ndarray, fs: float, faults: list[Fault], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """-> (signal (C, n') float32, times (n',) s): NaN runs and noise written in, gap samples removed."""
    y = np.array(x, dtype=np.float32, copy=True)
    keep = np.ones(y.shape[1], dtype=bool)
    rng = np.random.default_rng(seed)
    std = np.nanstd(y, axis=1, keepdims=True) + 1e-6  # (C, 1)
    for f in faults:
        sl = slice(f.start, f.start + f.length)
        what = FAULT_KINDS[f.kind][1]
        if what == "gap":
            keep[sl] = False
        elif what == "nan":
            y[:, sl] = np.nan
        elif what == "noise":
            y[:, sl] += (3.0 * std * rng.standard_normal((y.shape[0], f.length))).astype(np.float32)
        else:
            raise ValueError(f"unknown fault action {what!r}")
    times = np.arange(y.shape[1], dtype=np.float64) / fs
    return y[:, keep], times[keep]


def expected_windows(n: int, fs: float, faults: list[Fault], window_s: float, hop_s: float, max_fill_s: float | None = None) -> int:
    """Windows the stream must emit for an ``n``-sample signal with these faults.

    Removed samples up to ``max_fill_s`` (default: one window) are re-inserted as missing samples, longer gaps
    restart the windows; each stretch between restarts yields (length - window) // hop + 1 windows.
    """
    L, H = max(1, int(round(window_s * fs))), max(1, int(round(hop_s * fs)))
    limit = window_s if max_fill_s is None else max_fill_s
    cuts = sorted((f for f in faults if FAULT_KINDS[f.kind][1] == "gap" and f.length / fs > limit), key=lambda f: f.start)
    total, a = 0, 0
    for f in cuts + [Fault("end", n, 0)]:
        m = f.start - a  # samples in the stretch [a, f.start), short gaps included as filled samples
        if m >= L:
            total += (m - L) // H + 1
        a = f.start + f.length
    return total


def flags_by_fault(windows: list[dict], faults: list[Fault], fs: float) -> dict:
    """Per fault kind: windows overlapping a fault of that kind (and no other), how many were flagged/unusable,
    flag counts. Windows overlapping faults of several kinds are counted under "several"; windows overlapping
    none under "none" (flags there are false alarms, or real artefacts of the recording)."""
    spans = [(f.kind, *f.span_s(fs)) for f in faults]
    out: dict[str, dict] = {}
    for w in windows:
        a, b = w["start_s"], w["end_s"]
        hit = {k for k, s, e in spans if s < b and e > a} if spans else set()
        kind = "none" if not hit else hit.pop() if len(hit) == 1 else "several"
        d = out.setdefault(kind, {"windows": 0, "flagged": 0, "unusable": 0, "flags": Counter()})
        d["windows"] += 1
        flags = w["quality"]["flags"]
        d["flagged"] += bool(flags)
        d["unusable"] += not w["quality"]["usable"]
        d["flags"].update(flags)
    return {k: {**v, "flags": dict(sorted(v["flags"].items()))} for k, v in sorted(out.items())}


def detected_by_fault(windows: list[dict], faults: list[Fault], fs: float) -> dict:
    """Per fault kind: faults, faults some window overlaps, and faults an overlapping window flags with the
    action's own flag (ACTION_FLAG). A gap that restarts the windows has no window over it (a warning says it)."""
    out: dict[str, dict] = {}
    for f in faults:
        a, b = f.span_s(fs)
        over = [w for w in windows if w["start_s"] < b and w["end_s"] > a]
        d = out.setdefault(f.kind, {"faults": 0, "overlapped": 0, "detected": 0})
        d["faults"] += 1
        d["overlapped"] += bool(over)
        d["detected"] += any(ACTION_FLAG[FAULT_KINDS[f.kind][1]] in w["quality"]["flags"] for w in over)
    return dict(sorted(out.items()))


def rss_trend(samples: list[tuple[float, float]]) -> dict:
    """samples: (signal time s, RSS MB). Start/middle/end RSS and the least-squares slope (MB per hour), overall
    and over the second half (after warm-up)."""
    if len(samples) < 2:
        return {"n": len(samples)}
    t = np.array([s for s, _ in samples], dtype=np.float64)
    r = np.array([v for _, v in samples], dtype=np.float64)

    def slope(tt, rr):
        return float(np.polyfit(tt / 3600.0, rr, 1)[0]) if len(tt) >= 2 and np.ptp(tt) > 0 else None

    h = len(t) // 2
    return {
        "n": len(samples),
        "start_mb": round(float(r[0]), 1),
        "middle_mb": round(float(r[h]), 1),
        "end_mb": round(float(r[-1]), 1),
        "max_mb": round(float(r.max()), 1),
        "slope_mb_per_hour": None if slope(t, r) is None else round(slope(t, r), 2),
        "slope_second_half_mb_per_hour": None if slope(t[h:], r[h:]) is None else round(slope(t[h:], r[h:]), 2),
    }


# ----------------------------------------------------------------------------- a cheap backend (only when asked)


class CheapBackend:
    """A numpy stand-in with the Backend interface (no model): used only with ``--har fake`` / ``--ecg fake``,
    to soak the runtime's own bookkeeping for hours where the real model is too slow on this CPU."""

    name = "fake-numpy"

    def __init__(self, task: str) -> None:
        from edge_tslm.data.hapt import ACTIVITIES
        from edge_tslm.data.physionet2017 import ECG_TASK

        self.labels = tuple(ACTIVITIES if task == "har" else ECG_TASK.labels)
        self.fs = 50.0 if task == "har" else 300.0
        self.max_seconds = 0.0
        self.min_length = 4
        self.task = "har" if task == "har" else "ecg_rhythm"
        self.series_features = ""  # the cheap backend reads the plain description
        self.question_first = False
        self.series_text = "full"
        self.question = ""
        self.last_timings: dict[str, float] = {}

    def encode(self, series):
        from edge_tslm.runtime.backend import Encoded

        x = np.stack([np.asarray(s, np.float32) for s in series])
        return Encoded(series, np.abs(np.fft.rfft(x, axis=1)).mean(1))

    def classify(self, text, encoded, labels):
        v = float(np.sum(encoded.value))
        return {lab: -abs(v - k) for k, lab in enumerate(labels)}

    def generate(self, text, encoded, max_new_tokens):
        return f"Answer: {self.labels[0]}"


# ----------------------------------------------------------------------------- the child process


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(a: argparse.Namespace) -> None:
    from edge_tslm.runtime import StreamConfig, Streamer, load_backend
    from edge_tslm.runtime.events import dumps
    from edge_tslm.runtime.sources import Chunk

    z = np.load(a.signal)
    x, times = z["x"], z["t"]
    t0 = time.perf_counter()
    if a.artifact == "fake":
        backend = CheapBackend(a.task)
    else:
        backend = load_backend(a.artifact, a.backend, **({"threads": a.threads} if a.threads else {}),
                               **({"label_scoring": a.label_scoring} if a.label_scoring != "full" else {}))
    load_s = time.perf_counter() - t0
    streamer = Streamer(backend, StreamConfig(task=a.task, rationale_on="never"), fs=a.fs)
    step = max(1, int(a.fs * 0.5))
    rss: list[list[float]] = []
    n_win = 0
    t_stream = time.perf_counter()
    with open(a.events, "w") as out:
        for i in range(0, x.shape[1], step):
            for ev in streamer.feed(Chunk(x[:, i : i + step], times[i : i + step])):
                out.write(dumps(ev) + "\n")
                if ev["type"] == "window":
                    n_win += 1
                    if n_win % a.rss_every == 1:
                        rss.append([ev["end_s"], round(_rss_mb(), 2), round(time.perf_counter() - t_stream, 2)])
                        out.flush()
        for ev in streamer.finish():
            out.write(dumps(ev) + "\n")
    rss.append([float(times[-1]), round(_rss_mb(), 2), round(time.perf_counter() - t_stream, 2)])
    print(json.dumps({"backend": getattr(backend, "name", "?"), "load_s": round(load_s, 2), "wall_s": round(time.perf_counter() - t_stream, 2),
                      "rss": rss, "torch_imported": "torch" in sys.modules}))


# ----------------------------------------------------------------------------- parent


def har_hour(minutes: float) -> tuple[np.ndarray, str]:
    from edge_tslm.data.hapt import TEST_SUBJECTS, load_hapt_recordings

    parts, used, total = [], [], 0
    need = int(minutes * 60 * 50)
    for r in sorted((r for r in load_hapt_recordings() if r.subject in TEST_SUBJECTS), key=lambda r: (r.subject, r.experiment)):
        parts.append(r.acc)
        used.append(f"s{r.subject}/e{r.experiment}")
        total += r.acc.shape[1]
        if total >= need:
            break
    x = np.concatenate(parts, 1)[:, :need].astype(np.float32)
    return x, f"HAPT UCI test-subject recordings back to back ({', '.join(used)}), {x.shape[1] / 50 / 60:.1f} min at 50 Hz"


def ecg_hour(minutes: float) -> tuple[np.ndarray, float, str]:
    from stream_latency import ecg_stream

    x, fs, desc = ecg_stream(seconds=minutes * 60.0)
    n = int(minutes * 60 * fs)
    if x.shape[1] < n:  # the MIT-BIH excerpt is 5 min: loop it
        reps = -(-n // x.shape[1])
        x = np.tile(x, (1, reps))
        desc += f", looped {reps}x"
    x = x[:, :n]
    if len(desc) > 300:
        desc = desc[:300] + f"… ({x.shape[1] / fs / 60:.1f} min)"
    return x, fs, desc


def soak_one(task: str, artifact: str, x: np.ndarray, fs: float, desc: str, a: argparse.Namespace, tmp: Path) -> dict:
    from edge_tslm.runtime.quality import FLAGS
    from edge_tslm.runtime.stream import TASKS

    preset = TASKS[task]
    every = a.fault_every or (20.0 if task == "har" else 90.0)
    faults = plan_faults(x.shape[1], fs, every)
    y, t = inject(x, fs, faults, seed=0)
    sig = tmp / f"{task}.npz"
    np.savez(sig, x=y, t=t)
    evf = tmp / f"{task}.jsonl"
    cmd = [sys.executable, __file__, "--worker", "--task", task, "--artifact", artifact, "--backend", a.backend, "--signal", str(sig),
           "--fs", str(fs), "--events", str(evf), "--rss-every", str(a.rss_every), "--threads", str(a.threads),
           "--label-scoring", a.label_scoring]
    load0 = [round(v, 2) for v in os.getloadavg()]
    print(f"[{task}] soaking {x.shape[1] / fs / 60:.1f} min ({len(faults)} faults) through {artifact} ...", file=sys.stderr, flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"worker failed ({p.returncode}):\n{p.stderr[-4000:]}")
    child = json.loads(p.stdout.strip().splitlines()[-1])
    events = [json.loads(line) for line in evf.read_text().splitlines()]
    from edge_tslm.runtime.events import validate_event

    invalid = sum(bool(validate_event(e)) for e in events)
    wins = [e for e in events if e["type"] == "window"]
    summary = events[-1]
    exp = expected_windows(x.shape[1], fs, faults, preset.window_s, preset.hop_s)
    indices_ok = [w["index"] for w in wins] == list(range(len(wins)))
    rss = rss_trend([(s, r) for s, r, _ in child["rss"]])
    return {
        "task": task,
        "artifact": artifact,
        "backend": child["backend"],
        "label_scoring": a.label_scoring,
        "fake_backend": artifact == "fake",
        "signal": desc,
        "signal_minutes": round(x.shape[1] / fs / 60, 2),
        "wall_s": child["wall_s"],
        "speed_x_realtime": round(x.shape[1] / fs / max(child["wall_s"], 1e-9), 1),
        "load_s": child["load_s"],
        "loadavg_start": load0,
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "fault_every_s": every,
        "faults": dict(Counter(f.kind for f in faults)),
        "fault_plan": [asdict(f) for f in faults][:400],
        "windows_expected": exp,
        "window_events": len(wins),
        "every_window_has_an_event": len(wins) == exp and indices_ok and summary.get("windows") == exp,
        "summary_windows": summary.get("windows"),
        "usable": summary.get("usable"),
        "decisions": summary.get("decisions"),
        "summary_flags": summary.get("flags"),
        "events": dict(Counter(e["type"] for e in events)),
        "warnings": dict(Counter(e.get("kind") for e in events if e["type"] == "warning")),
        "invalid_events": invalid,
        "flags_by_fault": flags_by_fault(wins, faults, fs),
        "detected_by_fault": detected_by_fault(wins, faults, fs),
        "runtime_flags": list(FLAGS),  # what the runtime could flag then (no "noise" before it had the detector)
        "rss": rss,
        "rss_samples": child["rss"],
        "torch_imported": child["torch_imported"],
        "latency_ms_p50_p95": summary.get("latency_ms"),
    }


def markdown(res: dict) -> str:
    m = res["machine"]
    cmds = res.get("commands") or [res["command"]]
    L = ["# Soak: long real signal, faster than real time, with injected faults", "", "Command(s): " + "; ".join(f"`{c}`" for c in cmds), "",
         f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM (shared with other jobs; load averages in the JSON).", "",
         "| task | backend | signal min | × real time | windows expected / events | schema errors | RSS start / middle / end MB | slope MB/h (2nd half) |",
         "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in res["runs"]:
        s = r["rss"]
        be = r["backend"] + (" (**fake numpy backend, not the model**)" if r["fake_backend"] else f" `{r['artifact']}`") + (
            " labels" if r.get("label_scoring", "full") != "full" else "")
        L.append(f"| {r['task']} | {be} | {r['signal_minutes']:g} | {r['speed_x_realtime']:g} | {r['windows_expected']} / {r['window_events']} "
                 f"({'all' if r['every_window_has_an_event'] else 'MISMATCH'}) | {r['invalid_events']} | {s.get('start_mb')} / {s.get('middle_mb')} / {s.get('end_mb')} | "
                 f"{s.get('slope_mb_per_hour')} ({s.get('slope_second_half_mb_per_hour')}) |")
    for r in res["runs"]:
        L += ["", f"## {r['task']} — {r['backend']}{' (fake numpy backend)' if r['fake_backend'] else ''}", "", f"Signal: {r['signal']}.", "",
              *([f"**Note:** {r['note']}", ""] if r.get("note") else []),
              f"Command: `{r.get('command', res['command'])}`. Load average {r['loadavg_start']} → {r['loadavg_end']}; "
              f"{r['wall_s']:.0f} s wall (model load {r['load_s']:.0f} s); torch imported by the streaming process: {r['torch_imported']}.", "",
              f"Faults injected (one every {r.get('fault_every_s', 20)} s): {r['faults']}. Summary flags: {r['summary_flags']}. Warnings: {r['warnings']}. "
              f"Decisions: {r['decisions']}.", "",
              "| windows overlapping | windows | flagged | unusable | flags |", "|---|---:|---:|---:|---|"]
        for k, v in r["flags_by_fault"].items():
            L.append(f"| {k} | {v['windows']} | {v['flagged']} | {v['unusable']} | {v['flags']} |")
        if r.get("detected_by_fault"):
            L += ["", "Faults flagged by some overlapping window with their own flag (gap / nan / noise): "
                  + ", ".join(f"{k} {v['detected']}/{v['faults']}" for k, v in r["detected_by_fault"].items()) + "."]
    before = [f"{r['task']} {r['artifact']}" for r in res["runs"] if "noise" not in r.get("runtime_flags", ())]
    L += ["", "Fault kinds: " + "; ".join(f"{k}: {d:g} s ({w})" for k, (d, w) in FAULT_KINDS.items()) + ".",
          f"Runs measured before the runtime had its `noise` flag show none on noise bursts ({', '.join(before)})." if before else
          "Noise bursts are flagged `noise` where part of a window is quiet (benchmarks/results/noise_flag.md).", ""]
    return "\n".join(L)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--har", help="HAR artifact dir, or 'fake' for the cheap numpy backend")
    ap.add_argument("--ecg", help="ECG artifact dir, or 'fake'")
    ap.add_argument("--har-minutes", type=float, default=10.0)
    ap.add_argument("--ecg-minutes", type=float, default=60.0)
    ap.add_argument("--fault-every", type=float, default=None,
                    help="seconds between injected faults (default: 20 for har, 90 for afib, so most 30 s windows see one fault at most)")
    ap.add_argument("--rss-every", type=int, default=10, help="sample RSS every N windows")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--label-scoring", default="full", choices=("full", "labels"), help="the backend's label scoring (edge-tslm stream --label-scoring)")
    ap.add_argument("--run", action="append", default=[], metavar="TASK:ARTIFACT:MINUTES",
                    help="another soak, e.g. har:fake:60 or afib:runs/compact-ecg:60 (repeatable; runs after --ecg/--har)")
    ap.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    ap.add_argument("--note", default="", help="a note saved with this invocation's runs (e.g. which build of the artifact)")
    ap.add_argument("--note-for", default="", metavar="TASK:ARTIFACT",
                    help="with --markdown-only: attach --note to this existing run of the results file")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the JSON")
    ap.add_argument("--append", action="store_true",
                    help="keep the existing file's runs (each with its command), replacing those with the same task and artifact")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--task", help=argparse.SUPPRESS)
    ap.add_argument("--artifact", help=argparse.SUPPRESS)
    ap.add_argument("--signal", help=argparse.SUPPRESS)
    ap.add_argument("--events", help=argparse.SUPPRESS)
    ap.add_argument("--fs", type=float, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker(a)
    if a.markdown_only:
        res = json.loads(a.out.read_text())
        if a.note and a.note_for:
            task, _, art = a.note_for.partition(":")
            hits = [r for r in res["runs"] if r["task"] == task and r["artifact"] == art]
            if not hits:
                ap.error(f"no run {a.note_for!r} in {a.out}")
            for r in hits:
                r["note"] = a.note
            a.out.write_text(json.dumps(res, indent=1))
        a.out.with_suffix(".md").write_text(markdown(res))
        return print(a.out.with_suffix(".md").read_text())
    jobs = ([("afib", a.ecg, a.ecg_minutes)] if a.ecg else []) + ([("har", a.har, a.har_minutes)] if a.har else [])
    for spec in a.run:
        task, _, rest = spec.partition(":")
        art, _, minutes = rest.rpartition(":")
        if task not in ("har", "afib") or not art:
            ap.error(f"--run takes TASK:ARTIFACT:MINUTES with TASK har or afib, got {spec!r}")
        jobs.append((task, art, float(minutes)))
    if not jobs:
        ap.error("pass --har, --ecg and/or --run")
    from edge_tslm.machine import machine

    command = "python benchmarks/soak.py " + " ".join(shlex.quote(v) for v in (argv if argv is not None else sys.argv[1:]))
    res = {"command": command, "machine": machine(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for task, art, minutes in jobs:
            if task == "afib":
                x, fs, desc = ecg_hour(minutes)
            else:
                (x, desc), fs = har_hour(minutes), 50.0
            res["runs"].append({**soak_one(task, art, x, fs, desc, a, Path(tmp)), "command": command, "note": a.note})
            a.out.with_suffix(".partial.json").write_text(json.dumps(res, indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    if a.append and a.out.is_file():
        old = json.loads(a.out.read_text())
        new_keys = {(r["task"], r["artifact"]) for r in res["runs"]}
        kept = [{**r, "command": r.get("command", old.get("command"))} for r in old.get("runs", []) if (r["task"], r["artifact"]) not in new_keys]
        res["runs"] = kept + res["runs"]
        res["commands"] = sorted({r["command"] for r in res["runs"]})
    a.out.write_text(json.dumps(res, indent=1))
    a.out.with_suffix(".partial.json").unlink(missing_ok=True)
    a.out.with_suffix(".md").write_text(markdown(res))
    print(a.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
