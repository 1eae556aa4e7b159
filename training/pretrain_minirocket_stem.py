"""Fit the HAR stem (`edge_tslm.model.minirocket_stem.MiniRocketStem`): MiniRocket features + a ridge classifier.

    python training/pretrain_minirocket_stem.py --out runs/har-mr --seed 0 --threads 2   # ~4 min
    python training/pretrain_minirocket_stem.py --out runs/har-gait-mr1 --seed 1 --task har_gait   # gait frame

Random kernel axes (`--seed`) and biases from training windows, as multivariate MiniRocket draws them; the features
of the HAPT train split standardised and a RidgeClassifierCV (alphas 1e-3..1e3, leave-one-out) fitted on them; the
standardisation folded into the stem's head. Writes `stem.safetensors` (what `--minirocket-stem` loads) and
`metrics.json` with the validation and test-split scores: what the stem alone knows before a TSLM reads it, and
the MiniRocket + ridge figure beside the other classical baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_tslm.data.hapt import ACTIVITIES, hapt_gait_windows, hapt_windows  # noqa: E402
from edge_tslm.machine import machine  # noqa: E402
from edge_tslm.metrics import classification_report  # noqa: E402
from edge_tslm.model.minirocket_stem import MiniRocketConfig, MiniRocketStem  # noqa: E402


def split_arrays(split: str, path: str | None, groups: frozenset[str] | None = None,
                 task: str = "har") -> tuple[torch.Tensor, list[str]]:
    """(N, 3, 128) windows (g; as recorded for "har", in each wearer's gait frame for "har_gait") and their labels
    (of `groups` only, when given)."""
    load = hapt_gait_windows if task == "har_gait" else hapt_windows
    samples = [s for s in load(split, path) if groups is None or s.group in groups]
    if not samples:
        raise SystemExit(f"no HAPT windows in the {split} split{' for ' + ','.join(sorted(groups)) if groups else ''}; "
                         "check --data and --fit-groups (subject-<n> of training subjects)")
    return torch.from_numpy(np.stack([s.signal for s in samples]).astype(np.float32)), [s.label for s in samples]


@torch.no_grad()
def features(stem: MiniRocketStem, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    mask = torch.ones(x.shape[0], x.shape[2], dtype=torch.bool)
    return torch.cat([stem.features(x[i : i + batch], mask[i : i + batch]) for i in range(0, len(x), batch)]).numpy()


def cross_fit(a, X: np.ndarray, y: list[str], order_of) -> dict:
    """K ridge heads, head k fitted without the k-th fold of training subjects (round-robin over the sorted subjects),
    folded as MiniRocketStem.set_ridge folds the full one; written with the subject -> fold map to folds.safetensors.
    Returns the out-of-fold scores on the training windows: what a TSLM trained with --stem-folds reads."""
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.preprocessing import StandardScaler

    load = hapt_gait_windows if a.task == "har_gait" else hapt_windows
    groups = np.array([s.group for s in load("train", a.data)])
    fit = frozenset(g for g in a.fit_groups.split(",") if g) or None
    if fit is not None:
        groups = np.array([g for g in groups if g in fit])
    subjects = sorted(set(groups), key=lambda g: int(g.split("-")[-1]))
    fold_of = {g: i % a.cross_fit for i, g in enumerate(subjects)}
    fold = np.array([fold_of[g] for g in groups])
    weights, biases, pred = [], [], np.empty(len(y), dtype=object)
    for k in range(a.cross_fit):
        tr = fold != k
        sc = StandardScaler().fit(X[tr])
        r = RidgeClassifierCV(alphas=np.logspace(-3, 3, 10)).fit(sc.transform(X[tr]), np.asarray(y)[tr])
        o = order_of(r)
        w = r.coef_[o] / sc.scale_[None, :]  # (labels, F), as set_ridge
        weights.append(w.astype(np.float32))
        biases.append((r.intercept_[o] - w @ sc.mean_).astype(np.float32))
        pred[~tr] = r.predict(sc.transform(X[~tr]))
    save_file({"weight": torch.from_numpy(np.stack(weights)), "bias": torch.from_numpy(np.stack(biases))},
              str(a.out / "folds.safetensors"), metadata={"folds": json.dumps(fold_of), "task": a.task})
    rep = classification_report(list(y), list(pred), ACTIVITIES)
    return {"k": a.cross_fit, "folds": fold_of, "out_of_fold_train": {k: rep[k] for k in ("macro_f1", "accuracy", "per_class_f1")}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", default=None, help="HAPT source (default: DESIGN.md's offline copy)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--task", default="har", choices=["har", "har_gait"],
                    help="har_gait: windows turned into each wearer's gait frame (edge_tslm.gait_frame), for a har_gait TSLM")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cross-fit", type=int, default=0, metavar="K",
                    help="also fit K ridge heads, each without one fold of the training subjects, into folds.safetensors: "
                    "training/curriculum.py --stem-folds then scores each training window with the head that never saw "
                    "its subject")
    ap.add_argument("--fit-groups", default="", help="fit on these training subjects only, e.g. subject-1,subject-6 "
                    "(the others can then train a TSLM on honest, out-of-sample stem scores)")
    a = ap.parse_args(argv)
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.preprocessing import StandardScaler

    torch.set_num_threads(a.threads)
    t0 = time.time()
    fit = frozenset(g for g in a.fit_groups.split(",") if g) or None
    data = {s: split_arrays(s, a.data, fit if s == "train" else None, a.task) for s in ("train", "val", "test")}
    cfg = MiniRocketConfig(channels=3, window=data["train"][0].shape[-1], num_labels=len(ACTIVITIES))
    stem = MiniRocketStem(cfg)
    stem.init_kernels(a.seed)
    stem.fit_biases(data["train"][0], a.seed)
    feats = {s: features(stem, x) for s, (x, _) in data.items()}
    t1 = time.time()
    scaler = StandardScaler().fit(feats["train"])
    ridge = RidgeClassifierCV(alphas=np.logspace(-3, 3, 10)).fit(scaler.transform(feats["train"]), data["train"][1])
    order = [list(ridge.classes_).index(lab) for lab in ACTIVITIES]  # rows in the stem's label order
    stem.set_ridge(scaler.mean_, scaler.scale_, ridge.coef_[order], ridge.intercept_[order])
    res = {"command": "python training/pretrain_minirocket_stem.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "task": a.task, "stem_config": asdict(cfg), "features": stem.num_features, "dilations": stem.dilations,
           "alpha": float(ridge.alpha_), "seconds": {"features": round(t1 - t0, 1), "ridge": round(time.time() - t1, 1)}}
    for split in ("val", "test"):
        x, y = data[split]
        with torch.no_grad():
            scores = stem(x, torch.ones(x.shape[0], x.shape[2], dtype=torch.bool)).numpy()  # (N, labels)
        pred = [ACTIVITIES[i] for i in scores.argmax(1)]
        sk = list(ridge.predict(scaler.transform(feats[split])))
        res[split] = classification_report(y, pred, ACTIVITIES)
        res[split]["agrees_with_sklearn"] = float(np.mean([p == q for p, q in zip(pred, sk)]))
    a.out.mkdir(parents=True, exist_ok=True)
    if a.cross_fit:
        res["cross_fit"] = cross_fit(a, feats["train"], data["train"][1], order_of=lambda r: [list(r.classes_).index(lab) for lab in ACTIVITIES])
    res["machine"] = machine()
    save_file({k: v.contiguous() for k, v in stem.state_dict().items()}, str(a.out / "stem.safetensors"))
    (a.out / "metrics.json").write_text(json.dumps(res, indent=2))
    print(json.dumps({s: {k: res[s][k] for k in ("macro_f1", "accuracy", "agrees_with_sklearn")} for s in ("val", "test")}
                     | {"alpha": res["alpha"], "features": res["features"]}), flush=True)


if __name__ == "__main__":
    main()
