"""Calibrate the runtime's ``noise`` quality flag on real signals: false alarms on clean windows, and detection of
bursts injected the way benchmarks/soak.py injects them (Gaussian noise at 3x the signal's std, every channel, 3 s).

    python benchmarks/noise_flag.py             # test split; writes benchmarks/results/noise_flag.json and .md
    python benchmarks/noise_flag.py --sweep     # the threshold grid on the train split (how the defaults were set)

HAR: HAPT's continuous recordings cut as the stream cuts them (2.56 s windows, hop 1.28 s). Clean windows are split
into those inside one labelled activity and those over a postural transition or an unlabelled stretch (where the
subject handles the phone: real artefacts as well as false alarms). Injected: one burst every 20 s of each recording
(soak.plan_faults); every window overlapping a burst is checked, and a burst counts as detected when some window
flags noise on a span overlapping it.
ECG: the first 30 s (one stream window) of each PhysioNet 2017 record at least 30 s long. Clean: N, A and O records;
the "~" records (labelled too noisy to read; all of them, the first 30 s or less) are reported apart, not as false
alarms. Injected: one 3 s burst per clean window at a random place, straddling the window's edge in some (as in a
stream).
Per window the figure is binned by the burst's seconds inside it: a 2.56 s HAR window with >= 2.5 s inside is noise
end to end, which a within-window statistic cannot see (the burst's edges show in the neighbouring windows).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak import plan_faults  # noqa: E402

from edge_tslm.runtime.quality import QualityConfig, check_window  # noqa: E402

BURST_S = 3.0
BINS = ((0.0, 0.5), (0.5, 1.5), (1.5, 2.5), (2.5, 3.01))  # seconds of the burst inside the window


def add_burst(x: np.ndarray, start: int, length: int, amp: float, std: np.ndarray, rng: np.random.Generator) -> None:
    """In place, as soak.inject: amp x each channel's std (over the whole recording) of Gaussian noise."""
    x[:, start : start + length] += (amp * std * rng.standard_normal((x.shape[0], length))).astype(x.dtype)


def noise_spans(x: np.ndarray, fs: float, cfg: QualityConfig) -> list[tuple[float, float]] | None:
    """None when the window is not flagged, else the flagged (start, end) spans in s from the window's start."""
    _, q = check_window(x, fs, cfg=cfg)
    return [(d["start_s"], d["end_s"]) for d in q.detail["noise"]] if "noise" in q.flags else None


def located(spans: list[tuple[float, float]] | None, a: float, b: float) -> bool:
    """Flagged on a span overlapping [a, b) (s from the window's start)."""
    return bool(spans) and any(s < b and e > a for s, e in spans)


def rate(hits: int, n: int) -> dict:
    return {"n": n, "flagged": hits, "rate": round(hits / n, 4) if n else None}


def binned(rows: list[tuple[float, bool]]) -> dict:
    """rows: (burst seconds inside the window, detected) -> detection per bin."""
    return {f"{lo:g}-{min(hi, 3.0):g} s": rate(sum(d for s, d in rows if lo < s <= hi), sum(lo < s <= hi for s, _ in rows)) for lo, hi in BINS}


# ----------------------------------------------------------------------------- HAR


def har_recordings(split: str):
    from edge_tslm.data.hapt import load_hapt_recordings, subject_split

    return [r for r in load_hapt_recordings() if subject_split(r.subject) == split]


def har_eval(recs, cfg: QualityConfig, amp: float, seed: int, max_clean: int | None = None) -> dict:
    fs, L, H = 50.0, 128, 64
    rng = np.random.default_rng(seed)
    clean = {"one_activity": [0, 0], "transition_or_unlabelled": [0, 0]}  # [windows, flagged]
    starts = [(i, k) for i, r in enumerate(recs) for k in range(0, r.acc.shape[1] - L + 1, H)]
    if max_clean and len(starts) > max_clean:
        starts = [starts[j] for j in np.sort(rng.choice(len(starts), max_clean, replace=False))]
    for i, k in starts:
        r = recs[i]
        lab = r.labels[k : k + L]
        kind = "one_activity" if lab[0] >= 0 and (lab == lab[0]).all() else "transition_or_unlabelled"
        clean[kind][0] += 1
        clean[kind][1] += noise_spans(r.acc[:, k : k + L], fs, cfg) is not None
    rows, bursts, found = [], 0, 0
    for i, r in enumerate(recs):
        n = r.acc.shape[1]
        y = np.array(r.acc, dtype=np.float32, copy=True)
        std = y.std(axis=1, keepdims=True) + 1e-6  # (3, 1)
        faults = plan_faults(n, fs, 20.0, kinds=("noise",), lead_s=float(rng.uniform(5.0, 20.0)))
        for f in faults:
            add_burst(y, f.start, f.length, amp, std, rng)
        for f in faults:
            bursts += 1
            hit = False
            for k in range(max(0, (f.start - L) // H * H), min(n - L, f.start + f.length) + 1, H):
                a, b = max(f.start, k), min(f.start + f.length, k + L)
                if b <= a:
                    continue
                det = located(noise_spans(y[:, k : k + L], fs, cfg), (a - k) / fs, (b - k) / fs)
                rows.append(((b - a) / fs, det))
                hit |= det
            found += hit
    return {
        "clean": {k: rate(v[1], v[0]) for k, v in clean.items()},
        "bursts": rate(found, bursts),
        "windows_by_burst_seconds_inside": binned(rows),
    }


# ----------------------------------------------------------------------------- ECG


def ecg_records(split: str, limit: int | None, seed: int):
    from edge_tslm.data.physionet2017 import split_records

    recs = [r for r in split_records(split) if r.code == "~" or r.load().shape[1] >= 9000]  # '~': any length
    if limit and len(recs) > limit:
        recs = [recs[j] for j in np.sort(np.random.default_rng(seed).choice(len(recs), limit, replace=False))]
    return recs


def ecg_eval(recs, cfg: QualityConfig, amp: float, seed: int) -> dict:
    fs, L, B = 300.0, 9000, int(BURST_S * 300)
    rng = np.random.default_rng(seed)
    clean: dict[str, list[int]] = {}
    rows = []
    for r in recs:
        x = np.array(r.load()[:, :L], dtype=np.float32)
        d = clean.setdefault(r.code, [0, 0])
        d[0] += 1
        d[1] += noise_spans(x, fs, cfg) is not None
        if r.code == "~":
            continue
        # The soak's std is over an hour of records back to back; here over the record (3x either way).
        std = np.array(r.load(), dtype=np.float32).std(axis=1, keepdims=True) + 1e-6
        s = int(rng.integers(-B // 2, L - B // 2))  # up to half the burst may fall outside the window
        a, b = max(0, s), min(L, s + B)
        add_burst(x, a, b - a, amp, std, rng)
        rows.append(((b - a) / fs, located(noise_spans(x, fs, cfg), a / fs, b / fs)))
    n_clean = sum(v[0] for k, v in clean.items() if k != "~")
    fp = sum(v[1] for k, v in clean.items() if k != "~")
    return {
        "clean": {"N_A_O": rate(fp, n_clean), **{k: rate(v[1], v[0]) for k, v in sorted(clean.items())}},
        "injected": rate(sum(d for _, d in rows), len(rows)),
        "windows_by_burst_seconds_inside": binned(rows),
    }


# ----------------------------------------------------------------------------- report


def sweep(a: argparse.Namespace) -> list[dict]:
    """The grid on the train split (a sample of it) that the QualityConfig defaults were chosen from: quiet
    percentile x ratio, then the roughness gate and the minimum duration one at a time around the defaults."""
    har, ecg = har_recordings("train"), ecg_records("train", 300, a.seed)
    grid = [{"noise_quiet_percentile": p, "noise_ratio": r} for p in (0.0, 10.0, 25.0) for r in (15.0, 20.0, 30.0, 50.0)]
    grid += [{"noise_roughness": 0.0}, {"noise_roughness": 1.2}, {"noise_min_s": 0.25}]
    out = []
    for change in grid:
        cfg = replace(QualityConfig(), **change)
        h, e = har_eval(har, cfg, 3.0, a.seed, max_clean=3000), ecg_eval(ecg, cfg, 3.0, a.seed)
        row = {k: getattr(cfg, k) for k in ("noise_quiet_percentile", "noise_ratio", "noise_roughness", "noise_min_s")}
        row |= {"har_fp_one_activity": h["clean"]["one_activity"]["rate"], "har_fp_transition": h["clean"]["transition_or_unlabelled"]["rate"],
                "har_bursts_detected": h["bursts"]["rate"], "har_windows_1.5_2.5s": h["windows_by_burst_seconds_inside"]["1.5-2.5 s"]["rate"],
                "ecg_fp": e["clean"]["N_A_O"]["rate"], "ecg_noisy_flagged": e["clean"].get("~", {}).get("rate"), "ecg_detected": e["injected"]["rate"]}
        print(row, file=sys.stderr, flush=True)
        out.append(row)
    return out


def markdown(res: dict) -> str:
    m, c = res["machine"], res["config"]
    L = ["# Noise-burst flag: false alarms on real windows, detection of injected bursts", "",
         f"Command: `{res['command']}` ({res['wall_s']:.0f} s). Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM.", "",
         f"Flag settings (QualityConfig defaults): segments {c['noise_segment_s']:g} s, HF energy (rms of the 2nd difference) >= "
         f"{c['noise_ratio']:g}x the window's {c['noise_quiet_percentile']:g}th-percentile segment, roughness rms(d2)/rms(d1) >= "
         f"{c['noise_roughness']:g}, for >= {c['noise_min_s']:g} s. Split: {res['split']}. Bursts: {BURST_S:g} s of Gaussian noise "
         "at the given multiple of each channel's std, every channel (soak.py uses 3x).", ""]
    L += ["| task | clean windows | false alarms | also reported |", "|---|---|---:|---|"]
    h, e = res["har"][str(res["amps"][0])], res["ecg"][str(res["amps"][0])]
    for name, key in (("inside one activity", "one_activity"), ("over a transition / unlabelled stretch", "transition_or_unlabelled")):
        v = h["clean"][key]
        L.append(f"| HAR | {v['n']} HAPT windows {name} | {v['flagged']} ({v['rate']:.2%}) | |")
    v = e["clean"]["N_A_O"]
    per = ", ".join(f"{k}: {w['flagged']}/{w['n']}" for k, w in e["clean"].items() if k in "NAO" and len(k) == 1)
    tl = e["clean"].get("~")
    tl_txt = f"; '~' (noisy) records flagged: {tl['flagged']}/{tl['n']} ({tl['rate']:.0%})" if tl else ""
    L.append(f"| ECG | {v['n']} PhysioNet 2017 30 s windows (N, A, O) | {v['flagged']} ({v['rate']:.2%}) | {per}{tl_txt} |")
    L += ["", "| task | burst | bursts detected | windows detected by burst seconds inside: " + " · ".join(f"{k}" for k in h["windows_by_burst_seconds_inside"]) + " |",
          "|---|---|---:|---|"]
    for amp in res["amps"]:
        h, e = res["har"][str(amp)], res["ecg"][str(amp)]
        fmt = lambda d: " · ".join(f"{v['flagged']}/{v['n']}" for v in d.values())  # noqa: E731
        L.append(f"| HAR | {amp:g}x std | {h['bursts']['flagged']}/{h['bursts']['n']} ({h['bursts']['rate']:.1%}) | {fmt(h['windows_by_burst_seconds_inside'])} |")
        L.append(f"| ECG | {amp:g}x std | {e['injected']['flagged']}/{e['injected']['n']} windows ({e['injected']['rate']:.1%}) | {fmt(e['windows_by_burst_seconds_inside'])} |")
    L += ["", "A HAR burst is detected when some window flags noise on a span overlapping it (a 3 s burst overlaps 3-4 windows of 2.56 s). "
          "A window that is noise end to end (HAR, >= 2.5 s inside) has no quiet part to compare with and is not flagged. "
          "HAR windows over transitions / unlabelled stretches include real handling of the phone, so part of their flags are true. "
          "The ECG '~' records' artefacts are large but mostly not broadband (see the sweep's row without the roughness gate): "
          "this flag reports bursts of broadband noise; it is not a readability classifier.", ""]
    if res.get("sweep"):
        L += ["## Sweep (train split, 3x bursts; HAR: 3,000 clean windows sampled, ECG: 300 records)", "",
              "| quiet pct | ratio | roughness | min s | HAR FP one activity | HAR FP transition | HAR bursts | HAR windows 1.5-2.5 s inside | ECG FP | ECG '~' flagged | ECG detected |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["sweep"]:
            L.append("| " + " | ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
        L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--ecg-records", type=int, default=0, help="at most this many ECG records (0: all of the split >= 30 s)")
    ap.add_argument("--amps", type=float, nargs="+", default=[3.0, 1.0], help="burst std as a multiple of the channel's (soak: 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", action="store_true", help="also run the threshold grid on the train split")
    ap.add_argument("--out", type=Path, default=RESULTS / "noise_flag.json")
    a = ap.parse_args(argv)
    from edge_tslm.machine import machine

    t0 = time.perf_counter()
    cfg = QualityConfig()
    har, ecg = har_recordings(a.split), ecg_records(a.split, a.ecg_records or None, a.seed)
    res = {"command": "python benchmarks/noise_flag.py " + " ".join(shlex.quote(v) for v in (argv if argv is not None else sys.argv[1:])),
           "machine": machine(), "split": a.split, "config": asdict(cfg), "amps": a.amps,
           "har_recordings": len(har), "ecg_records": len(ecg),
           "har": {str(amp): har_eval(har, cfg, amp, a.seed) for amp in a.amps},
           "ecg": {str(amp): ecg_eval(ecg, cfg, amp, a.seed) for amp in a.amps}}
    if a.sweep:
        res["sweep"] = sweep(a)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    from edge_tslm.results import write_results

    print(write_results(a.out, res, markdown))


if __name__ == "__main__":
    main()
