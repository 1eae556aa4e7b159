"""How far the strongest per-window classifiers we can fit here reach on HAPT's UCI test subjects (3-axis
accelerometer, one 2.56 s window at a time): the ceiling a HAR TSLM that reads them (as `models/flamingo-har-mr` reads
a MiniRocket stem) could hope to pass on to its answer.

    python benchmarks/har_ceiling.py --out benchmarks/results/har_ceiling.json      # 9-10 min at 2 threads

Candidates, all fitted on the training subjects:
- MiniRocket + ridge (the issue's 0.937 classifier; `edge_tslm.model.minirocket_stem`, RidgeClassifierCV over
  standardised features) for three kernel seeds, and over the three seeds' features together;
- the feature baseline (177 hand-crafted features + gradient boosting, `edge_tslm.baseline`);
- ridge over MiniRocket and the hand-crafted features together;
- gradient boosting over the hand-crafted features plus the three ridges' scores, out of fold on the training
  subjects (5 folds of subjects), the full ridges' on validation and test.
The validation split picks one; every candidate's test macro-F1 is printed with a 95 % bootstrap interval.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "training")]

from edge_tslm import baseline as B  # noqa: E402
from edge_tslm.data.hapt import ACTIVITIES, hapt_windows  # noqa: E402
from edge_tslm.machine import machine  # noqa: E402
from edge_tslm.metrics import classification_report  # noqa: E402
from edge_tslm.model.minirocket_stem import MiniRocketConfig, MiniRocketStem  # noqa: E402
from edge_tslm.score_intervals import interval, prediction_record  # noqa: E402
from pretrain_minirocket_stem import features as minirocket_features  # noqa: E402

SPLITS = ("train", "val", "test")
ALPHAS = np.logspace(-3, 3, 10)


def ridge(Xtr: np.ndarray, y: list[str], fit_rows: np.ndarray | None = None):
    """RidgeClassifierCV over standardised training features (the `fit_rows` of them, or all) -> a function from a
    split's (N, F) to its (N, 6) scores in ACTIVITIES order."""
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.preprocessing import StandardScaler

    rows = slice(None) if fit_rows is None else fit_rows
    sc = StandardScaler().fit(Xtr[rows])
    r = RidgeClassifierCV(alphas=ALPHAS).fit(sc.transform(Xtr[rows]), np.asarray(y)[rows])
    order = [list(r.classes_).index(lab) for lab in ACTIVITIES]
    return lambda Z: r.decision_function(sc.transform(Z))[:, order]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="HAPT source (default: DESIGN.md's offline copy)")
    ap.add_argument("--seeds", default="0,1,2", help="MiniRocket kernel seeds")
    ap.add_argument("--folds", type=int, default=5, help="subject folds for the stack's out-of-fold ridge scores")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s]
    except ValueError:
        ap.error(f"--seeds takes comma-separated integers, e.g. 0,1,2; got {a.seeds!r}")
    if not seeds or a.folds < 2 or a.threads < 1:
        ap.error("--seeds needs at least one seed, --folds at least 2 and --threads at least 1")
    torch.set_num_threads(a.threads)
    t0 = time.time()
    samples = {s: hapt_windows(s, a.data) for s in SPLITS}
    x = {s: torch.from_numpy(np.stack([w.signal for w in samples[s]]).astype(np.float32)) for s in SPLITS}  # (N, 3, 128)
    y = {s: [w.label for w in samples[s]] for s in SPLITS}
    groups = np.array([w.group for w in samples["train"]])
    subjects = sorted(set(groups), key=lambda g: int(g.split("-")[-1]))
    fold = np.array([{g: i % a.folds for i, g in enumerate(subjects)}[g] for g in groups])
    hand = {s: B.har_features(x[s].numpy(), samples[s][0].meta.fs) for s in SPLITS}
    mr: dict[int, dict[str, np.ndarray]] = {}
    for seed in seeds:
        stem = MiniRocketStem(MiniRocketConfig(channels=3, window=x["train"].shape[-1], num_labels=len(ACTIVITIES)))
        stem.init_kernels(seed)
        stem.fit_biases(x["train"], seed)
        mr[seed] = {s: minirocket_features(stem, x[s]) for s in SPLITS}
        print(f"MiniRocket seed {seed}: {mr[seed]['train'].shape[1]} features ({time.time() - t0:.0f} s)", flush=True)
    scores: dict[str, dict[str, np.ndarray]] = {}
    oof: dict[int, np.ndarray] = {}
    for seed in seeds:
        f = ridge(mr[seed]["train"], y["train"])
        scores[f"MiniRocket seed {seed} + ridge"] = {s: f(mr[seed][s]) for s in ("train", "val", "test")}
        oof[seed] = np.zeros((len(groups), len(ACTIVITIES)))
        for k in range(a.folds):
            held = fold == k
            oof[seed][held] = ridge(mr[seed]["train"], y["train"], ~held)(mr[seed]["train"][held])
        print(f"ridge seed {seed} and its {a.folds} out-of-fold heads ({time.time() - t0:.0f} s)", flush=True)
    both = {s: np.concatenate([mr[k][s] for k in seeds], 1) for s in SPLITS}
    f = ridge(both["train"], y["train"])
    scores[f"MiniRocket seeds {a.seeds} together + ridge"] = {s: f(both[s]) for s in ("val", "test")}
    clf = B.fit_baseline(hand["train"], y["train"])
    order = [list(clf.classes_).index(lab) for lab in ACTIVITIES]
    scores["hand features + gradient boosting (the baseline)"] = {s: clf.predict_proba(hand[s])[:, order] for s in ("val", "test")}
    joint = {s: np.concatenate([mr[seeds[0]][s], hand[s]], 1) for s in SPLITS}
    f = ridge(joint["train"], y["train"])
    scores[f"MiniRocket seed {seeds[0]} + hand features, ridge"] = {s: f(joint[s]) for s in ("val", "test")}
    stack = {"train": np.concatenate([hand["train"], *[oof[k] for k in seeds]], 1)}
    for s in ("val", "test"):
        stack[s] = np.concatenate([hand[s], *[scores[f"MiniRocket seed {k} + ridge"][s] for k in seeds]], 1)
    clf = B.fit_baseline(stack["train"], y["train"])
    order = [list(clf.classes_).index(lab) for lab in ACTIVITIES]
    scores["gradient boosting over hand features + out-of-fold ridge scores"] = {s: clf.predict_proba(stack[s])[:, order] for s in ("val", "test")}
    print(f"fitted all ({time.time() - t0:.0f} s)", flush=True)
    rows = {}
    for n, sc in scores.items():
        row = {}
        for s in ("val", "test"):
            pred = [ACTIVITIES[i] for i in sc[s].argmax(1)]
            rep = classification_report(y[s], pred, ACTIVITIES)
            row[s] = {"macro_f1": rep["macro_f1"], "accuracy": rep["accuracy"], "per_class_f1": rep["per_class_f1"]}
        rec = prediction_record([str(i) for i in range(len(y["test"]))], y["test"], [ACTIVITIES[i] for i in sc["test"].argmax(1)], ACTIVITIES)
        row["test"]["macro_f1_interval"] = interval(rec, "macro_f1")
        rows[n] = row
    chosen = max(rows, key=lambda n: rows[n]["val"]["macro_f1"])
    res = {"command": "python benchmarks/har_ceiling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": machine(), "n": {s: len(y[s]) for s in SPLITS}, "hand_features": int(hand["val"].shape[1]),
           "chosen_on_val": chosen, "candidates": rows, "minutes": round((time.time() - t0) / 60, 1)}
    for n, r in rows.items():
        ci = r["test"]["macro_f1_interval"]
        print(f"{n:70s} val {r['val']['macro_f1']:.4f} test {ci['score']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]"
              f"{'  <- chosen on val' if n == chosen else ''}")
    if a.out:
        a.out.write_text(json.dumps(res, indent=2))
        a.out.with_suffix(".md").write_text(markdown(res))


def markdown(res: dict) -> str:
    lines = ["# HAPT, one window at a time: how far the classifiers a HAR TSLM can read reach on the UCI test subjects", "",
             f"Command: `{res['command']}`", "", f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores", "",
             f"Windows: {res['n']}; 2.56 s at 50 Hz, 3-axis total acceleration as recorded. The validation split picks one "
             "candidate; the others' test scores show what test noise allows.", "",
             "| candidate | val macro-F1 | test macro-F1 [95 % interval] | test sitting / standing F1 |", "|---|---:|---:|---:|"]
    for n, r in res["candidates"].items():
        ci, pc = r["test"]["macro_f1_interval"], r["test"]["per_class_f1"]
        mark = " (chosen on val)" if n == res["chosen_on_val"] else ""
        lines.append(f"| {n}{mark} | {r['val']['macro_f1']:.4f} | {ci['score']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}] "
                     f"| {pc['sitting']:.3f} / {pc['standing']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
