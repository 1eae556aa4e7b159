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

RESULTS = Path(__file__).resolve().parent / "results"
PAIR = ("sitting", "standing")


def posture_features(signal: np.ndarray) -> np.ndarray:
    """(3, L) accelerometer window in g -> (6,): unit mean vector (gravity direction) and per-axis std."""
    x = signal.astype(np.float64)
    m = x.mean(1)
    return np.concatenate([m / max(np.linalg.norm(m), 1e-9), x.std(1)])


def split_arrays(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from edge_tslm.data.hapt import hapt_windows

    s = [w for w in hapt_windows(split) if w.label in PAIR]
    return (np.stack([posture_features(w.signal) for w in s]), np.array([w.label == PAIR[0] for w in s]),
            np.array([w.group for w in s]))


def probe() -> dict:
    from sklearn.linear_model import LogisticRegression

    from edge_tslm.machine import machine

    Xtr, ytr, _ = split_arrays("train")
    clf = LogisticRegression(C=10.0, max_iter=2000).fit(Xtr, ytr)
    out: dict = {"features": "unit mean vector (x, y, z) + per-axis std", "classifier": "LogisticRegression(C=10)",
                 "train_windows": int(len(ytr)), "splits": {}}
    for split in ("val", "test"):
        X, y, g = split_arrays(split)
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
         f"training-subject windows; machine {res['machine']['cpu']}.", ""]
    for split, r in res["splits"].items():
        L += [f"## {split}: accuracy {r['accuracy']:.4f} on {r['windows']} windows", "",
              "| subject | windows | accuracy | mean x direction, sitting | standing |", "|---|---:|---:|---:|---:|"]
        L += [f"| {s} | {v['windows']} | {v['accuracy']:.2f} | {v['mean_x_direction_sitting']:.3f} | {v['mean_x_direction_standing']:.3f} |"
              for s, v in r["subjects"].items()]
        L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=RESULTS / "har_posture_probe.json")
    a = ap.parse_args(argv)
    res = probe()
    a.out.write_text(json.dumps(res, indent=1))
    a.out.with_suffix(".md").write_text(markdown(res))
    print(a.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
