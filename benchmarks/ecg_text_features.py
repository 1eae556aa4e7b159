"""How much a model could learn from the numbers each `series_features` layout writes into an ECG's text.

A gradient-boosting classifier (scikit-learn) is fit on the PhysioNet 2017 train split with exactly the numbers the
text states, rounded as the text rounds them, and scored on the test split. It is a ceiling for what the text alone
carries, not a TSLM result: the TSLM also sees the waveform, and has to learn to read the numbers through its LM.

    python benchmarks/ecg_text_features.py     # writes benchmarks/results/ecg_text_features.json and .md

Each layout is read at the model's view of a record: resampled to 150 Hz and cropped to 60 s (the ecg_rhythm task).
Three classifier seeds; the mean is reported. The full feature baseline (`benchmarks/baseline.py`, same split) is quoted beside.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from edge_tslm.data import physionet2017 as p17
from edge_tslm.heartbeats import beat_features, detect_r_peaks, rhythm_from_peaks
from edge_tslm.machine import machine
from edge_tslm.metrics import challenge_score, per_class_f1
from edge_tslm.results import write_results
from edge_tslm.rhythm_vector import RHYTHM_VECTOR_NAMES, rhythm_vector
from edge_tslm.signals import resample
from edge_tslm.train.tasks import get_task

RESULTS = Path(__file__).resolve().parent / "results"

# What each layout states, in the text's units (whole bpm, whole percent, whole ms)
TEXT_NUMBERS = ("rate", "rr_cv", "rr_jumps", "rr_min", "rr_max", "beat_match", "odd_beats", "p_wave", "residual", "qrs_ms")
LAYOUTS = {
    "rr": TEXT_NUMBERS[:3],
    "beats": TEXT_NUMBERS,
    # not text: the vector a Flamingo encoder with encoder.rhythm_vector reads (unrounded), alone and beside the rr text
    "rhythm vector": RHYTHM_VECTOR_NAMES,
    "rr + rhythm vector": TEXT_NUMBERS[:3] + RHYTHM_VECTOR_NAMES,
}


def text_numbers(code_and_signal: tuple[str, np.ndarray]) -> tuple[str, list[float]]:
    """The numbers `describe_beats` writes for one record (a superset of `describe_rhythm`'s), rounded alike,
    then the record's `rhythm_vector`."""
    code, sig = code_and_signal
    task = get_task("ecg_rhythm")
    x = resample(sig, p17.FS, task.fs)[0][: int(task.max_seconds * task.fs)].astype(np.float64)
    peaks = detect_r_peaks(x, task.fs)
    r = rhythm_from_peaks(peaks, x.size, task.fs)
    b = beat_features(x, task.fs, peaks)
    nan = float("nan")
    vec = rhythm_vector(x, task.fs).astype(np.float64).tolist()
    if r.n_beats < 3:  # the text says only "N beats detected"
        return code, [nan] * len(TEXT_NUMBERS) + vec
    v = [round(r.heart_rate_bpm), round(100 * r.rr_cv), round(100 * r.rr_jump_frac),
         round(100 * r.rr_min_ratio) if np.isfinite(r.rr_min_ratio) else nan,
         round(100 * r.rr_max_ratio) if np.isfinite(r.rr_max_ratio) else nan]
    shape = [b.beat_match, b.odd_beat_frac, b.p_wave_ratio, b.residual]
    if b.n_beats < 3 or not np.isfinite(b.p_wave_ratio):
        return code, v + [nan] * 5 + vec
    return code, v + [round(100 * s) for s in shape] + [round(b.qrs_ms)] + vec


def _rows(split: str, workers: int) -> tuple[np.ndarray, list[str]]:
    recs = p17.split_records(split)
    with ProcessPoolExecutor(workers) as ex:
        out = list(ex.map(text_numbers, [(r.code, r.load()) for r in recs], chunksize=32))
    return np.array([v for _, v in out], dtype=np.float64), [p17.LABEL_NAMES[c] for c, _ in out]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args(argv)
    from sklearn.ensemble import HistGradientBoostingClassifier

    t0 = time.time()
    x_tr, y_tr = _rows("train", a.workers)
    x_te, y_te = _rows("test", a.workers)
    names = list(TEXT_NUMBERS + RHYTHM_VECTOR_NAMES)
    labels = sorted(set(y_tr))
    rows = {}
    for layout, cols in LAYOUTS.items():
        idx = [names.index(c) for c in cols]
        scores = []
        for seed in range(a.seeds):
            clf = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=seed)
            pred = list(clf.fit(x_tr[:, idx], y_tr).predict(x_te[:, idx]))
            f1 = per_class_f1(y_te, pred, labels)
            scores.append((challenge_score(y_te, pred, all_labels=labels), float(np.mean(list(f1.values()))),
                           f1["atrial fibrillation"], f1["other rhythm"]))
        m = np.mean(scores, axis=0)
        rows[layout] = {"numbers": list(cols), "challenge": round(float(m[0]), 4), "macro_f1": round(float(m[1]), 4),
                        "af_f1": round(float(m[2]), 4), "other_f1": round(float(m[3]), 4)}
    base_path = RESULTS / "baseline_ecg.json"
    base_row = None
    if base_path.exists():  # the full feature baseline on the same split, as benchmarks/baseline.py wrote it
        b = json.loads(base_path.read_text())["result"]
        t = b["test"]
        base_row = {"n_features": b["n_features"], "challenge": round(t["challenge_score"], 4), "macro_f1": round(t["macro_f1"], 4),
                    "af_f1": round(t["per_class_f1"]["atrial fibrillation"], 4), "other_f1": round(t["per_class_f1"]["other rhythm"], 4)}
    result = {
        "what": "gradient boosting on the numbers each series_features layout writes into the ECG text (a ceiling for "
                "the text alone) and on the rhythm vector; PhysioNet 2017 train -> test split",
        "n_train": len(y_tr), "n_test": len(y_te), "seeds": a.seeds, "layouts": rows,
        "baseline_test": base_row,
        "seconds": round(time.time() - t0, 1), "machine": machine(),
        "command": "python benchmarks/ecg_text_features.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
    }
    print(write_results(RESULTS / "ecg_text_features.json", result, markdown))
    return result


def markdown(res: dict) -> str:
    """The table of ecg_text_features.md."""
    lines = ["# What the ECG text layouts carry (gradient boosting on the stated numbers)", "",
             f"`{res['command'].strip()}`: fit on the {res['n_train']} train records, scored on the {res['n_test']} test "
             f"records, mean of {res['seeds']} seeds. A ceiling for the text alone, not a TSLM score.", "",
             "| layout | numbers | challenge | macro-F1 | AF F1 | other F1 |", "|---|---|---:|---:|---:|---:|"]
    for layout, r in res["layouts"].items():
        numbers = ", ".join(r["numbers"]) if len(r["numbers"]) <= 10 else f"{len(r['numbers'])} numbers (`edge_tslm/rhythm_vector.py`)"
        lines.append(f"| {layout} | {numbers} | {r['challenge']:.4f} | {r['macro_f1']:.4f} | "
                     f"{r['af_f1']:.4f} | {r['other_f1']:.4f} |")
    b = res.get("baseline_test")
    if b:
        lines.append(f"| baseline (`benchmarks/results/baseline_ecg.json`) | its {b['n_features']} features | "
                     f"{b['challenge']:.4f} | {b['macro_f1']:.4f} | {b['af_f1']:.4f} | {b['other_f1']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
