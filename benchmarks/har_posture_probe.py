"""How far the posture cue alone separates sitting from standing, per held-out subject.

    python benchmarks/har_posture_probe.py

Sitting vs standing is the HAR gap (both TSLMs and the feature baseline lose most of their macro-F1 there). This
probe fits a logistic regression on six numbers per window (the gravity direction, i.e. the unit mean
acceleration vector, and each axis' std) on the training subjects' sitting/standing windows, and scores it on each
validation and test subject apart. A subject near chance whose own sitting and standing tilts differ is one whose
tilt sits where other subjects' other posture does: a per-wearer offset that no single window shows.
Writes benchmarks/results/har_posture_probe.json/.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edge_tslm.gait_frame import rotation_onto

RESULTS = Path(__file__).resolve().parent / "results"
PAIR = ("sitting", "standing")


def posture_features(signal: np.ndarray) -> np.ndarray:
    """(3, L) accelerometer window in g -> (6,): unit mean vector (gravity direction) and per-axis std."""
    x = signal.astype(np.float64)
    m = x.mean(1)
    return np.concatenate([m / max(np.linalg.norm(m), 1e-9), x.std(1)])


def split_arrays(split: str, calibrate: int = 0, reference: np.ndarray | None = None,
                 gait: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, is-sitting flags and subjects of a split's sitting/standing windows. calibrate > 0: each subject's
    first `calibrate` standing windows are its calibration (left out of the rows) and every window of the subject is
    rotated so that their mean gravity direction becomes `reference`: what a wearer standing still for a few
    seconds at the start of a stream would allow."""
    from edge_tslm.data.hapt import hapt_windows

    rows: list[tuple[str, str, np.ndarray]] = []
    by_subject: dict[str, list] = {}
    for w in hapt_windows(split, gait=gait):  # gait: each recording in its gait frame (edge_tslm.gait_frame)
        by_subject.setdefault(w.group, []).append(w)
    for subject, ws in by_subject.items():
        R, skip = np.eye(3), set()
        if calibrate:
            cal = [w for w in ws if w.label == PAIR[1]][:calibrate]
            m = np.mean([w.signal.astype(np.float64).mean(1) for w in cal], 0)
            R, skip = rotation_onto(m / np.linalg.norm(m), reference), {id(w) for w in cal}
        rows += [(subject, w.label, R @ w.signal.astype(np.float64)) for w in ws if w.label in PAIR and id(w) not in skip]
    return (np.stack([posture_features(x) for _, _, x in rows]), np.array([lab == PAIR[0] for _, lab, _ in rows]),
            np.array([s for s, _, _ in rows]))


def standing_reference() -> np.ndarray:
    """The training subjects' mean standing gravity direction (unit)."""
    from edge_tslm.data.hapt import hapt_windows

    d = [w.signal.astype(np.float64).mean(1) for w in hapt_windows("train") if w.label == PAIR[1]]
    r = np.mean([v / np.linalg.norm(v) for v in d], 0)
    return r / np.linalg.norm(r)


def probe(calibrate: int = 0, gait: bool = False) -> dict:
    from sklearn.linear_model import LogisticRegression

    from edge_tslm.machine import machine

    ref = standing_reference() if calibrate else None
    Xtr, ytr, _ = split_arrays("train", calibrate, ref, gait)
    clf = LogisticRegression(C=10.0, max_iter=2000).fit(Xtr, ytr)
    out: dict = {"features": "unit mean vector (x, y, z) + per-axis std", "classifier": "LogisticRegression(C=10)",
                 "calibrate": calibrate, "gait_frame": gait, "train_windows": int(len(ytr)), "splits": {}}
    for split in ("val", "test"):
        X, y, g = split_arrays(split, calibrate, ref, gait)
        pred = clf.predict(X)
        subjects = {}
        for sub in sorted(set(g), key=lambda s: int(s.split("-")[-1])):
            k = g == sub
            subjects[sub] = {"windows": int(k.sum()), "accuracy": round(float((pred[k] == y[k]).mean()), 4),
                             "mean_x_direction_sitting": round(float(X[k & y, 0].mean()), 4),
                             "mean_x_direction_standing": round(float(X[k & ~y, 0].mean()), 4)}
        out["splits"][split] = {"windows": int(len(y)), "accuracy": round(float((pred == y).mean()), 4), "subjects": subjects}
    out.update(machine=machine(), command="python benchmarks/har_posture_probe.py " + " ".join(sys.argv[1:]))
    return out


def markdown(res: dict) -> str:
    L = ["# Sitting vs standing from the posture cue alone, per held-out subject", "",
         f"`{res['command'].strip()}` — {res['classifier']} on {res['features']}, fitted on {res['train_windows']} "
         f"training-subject windows; machine {res['machine']['cpu']}."
         + (f" Each subject rotated so that its first {res['calibrate']} standing windows (left out of the scores) point "
            "along the training subjects' mean standing direction: a per-wearer calibration." if res.get("calibrate") else "")
         + (" Every recording turned into its gait frame first (edge_tslm.gait_frame: its first ~30 s of walking, no "
            "labels)." if res.get("gait_frame") else ""), ""]
    for split, r in res["splits"].items():
        L += [f"## {split}: accuracy {r['accuracy']:.4f} on {r['windows']} windows", "",
              "| subject | windows | accuracy | mean x direction, sitting | standing |", "|---|---:|---:|---:|---:|"]
        L += [f"| {s} | {v['windows']} | {v['accuracy']:.2f} | {v['mean_x_direction_sitting']:.3f} | {v['mean_x_direction_standing']:.3f} |"
              for s, v in r["subjects"].items()]
        L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calibrate", type=int, default=0, help="standing windows per subject that calibrate its gravity direction (0: none)")
    ap.add_argument("--gait", action="store_true", help="windows in each recording's gait frame (the har_gait task's)")
    ap.add_argument("--out", type=Path, default=RESULTS / "har_posture_probe.json")
    a = ap.parse_args(argv)
    res = probe(a.calibrate, a.gait)
    a.out.write_text(json.dumps(res, indent=1))
    a.out.with_suffix(".md").write_text(markdown(res))
    print(a.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
