"""Fit gradient-boosted trees on PhysioNet 2017's rhythm vectors: the second stem an ECG TSLM reads (encoder.rhythm_trees).

    python training/pretrain_rhythm_trees.py --out runs/rhythm-trees --stem runs/ecg-stem4    # ~1 min

The records are read as the ecg_rhythm task reads them (150 Hz, first 60 s) and measured with the encoder's own rhythm
vector (`edge_tslm.rhythm_vector`; cached in `--out`/vectors_<split>.npz). scikit-learn's HistGradientBoostingClassifier
is fitted on the training records; the validation split chose its size among six (training/README.md) under the
committed adapter's 20 MiB cap. Written to `--out`:

- trees.safetensors: the trees as `model.rhythm_trees.RhythmTrees` buffers (its metadata holds their shape), which
  `training/curriculum.py --rhythm-trees DIR` loads;
- folds.safetensors: each training record's out-of-fold log-probabilities (trees fitted without its fold, `--folds`),
  keyed by its rhythm vector: what the TSLM reads while training;
- metrics.json: the trees alone on validation and test, out of fold on train, the torch walk checked against
  scikit-learn, and with `--stem` the average of the trees' and a CNN stem's probabilities (the reason to read both).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from edge_tslm.machine import machine  # noqa: E402
from edge_tslm.model.rhythm_trees import RhythmTrees, trees_from_sklearn  # noqa: E402
from edge_tslm.rhythm_vector import RHYTHM_VECTOR_NAMES  # noqa: E402
from edge_tslm.train.tasks import get_task  # noqa: E402
from pretrain_ecg_stem import LABELS, load_split, predict, scores, split_vectors, stem_from_run  # noqa: E402


def fit(X: np.ndarray, y: np.ndarray, a: argparse.Namespace):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=a.iterations, max_leaf_nodes=a.leaves, learning_rate=a.lr,
                                          early_stopping=False, random_state=a.seed).fit(X, [LABELS[i] for i in y])


def log_proba(clf, X: np.ndarray) -> np.ndarray:
    """(N, F) -> (N, C) log-probabilities in LABELS order."""
    order = [list(clf.classes_).index(lab) for lab in LABELS]
    return np.log(np.clip(clf.predict_proba(X)[:, order], 1e-12, None)).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/rhythm-trees"))
    ap.add_argument("--iterations", type=int, default=50, help="boosting rounds (one tree per label each)")
    ap.add_argument("--leaves", type=int, default=8, help="leaves per tree (at most 64: nodes are int8-indexed)")
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--folds", type=int, default=5, help="folds for the training records' out-of-fold log-probabilities")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stem", type=Path, default=None, help="a training/pretrain_ecg_stem.py --out directory to average with")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    if a.iterations < 1 or not 2 <= a.leaves <= 64 or a.folds < 2 or not a.lr > 0 or a.threads < 1:
        ap.error("--iterations >= 1, --leaves in [2, 64], --folds >= 2, --lr > 0 and --threads >= 1 are needed")
    if a.stem is not None and not (a.stem / "stem.safetensors").is_file():
        ap.error(f"--stem {a.stem} holds no stem.safetensors: train one with training/pretrain_ecg_stem.py --out DIR")
    from sklearn.model_selection import StratifiedKFold

    torch.set_num_threads(a.threads)
    t0 = time.time()
    task = get_task("ecg_rhythm")
    a.out.mkdir(parents=True, exist_ok=True)
    data = {s: load_split(s, task.fs, task.max_seconds) for s in ("train", "val", "test")}
    vecs = {s: split_vectors(data[s][0], data[s][2], task.fs, a.out / f"vectors_{s}.npz", a.threads) for s in data}
    y = {s: data[s][1] for s in data}
    clf = fit(vecs["train"], y["train"], a)
    arrays, shape = trees_from_sklearn(clf, LABELS)
    trees = RhythmTrees(*shape[:3], len(RHYTHM_VECTOR_NAMES), len(LABELS))
    trees.load_arrays(arrays)
    trees.eval()
    res: dict = {"command": "python training/pretrain_rhythm_trees.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "shape": {"trees": shape[0], "nodes": shape[1], "depth": shape[2], "labels": len(LABELS)},
                 "bytes": int(sum(v.nbytes for v in arrays.values())), "args": {k: str(v) for k, v in vars(a).items()}}
    walk_gap = 0.0
    stem = stem_from_run(a.stem) if a.stem is not None else None
    for s in ("val", "test"):
        sk = log_proba(clf, vecs[s])
        with torch.no_grad():
            walked = trees(torch.from_numpy(vecs[s])).numpy()
        walk_gap = max(walk_gap, float(np.abs(np.exp(walked) - np.exp(sk)).max()))
        res[s] = {"trees": scores(walked, y[s])}
        if stem is not None:
            stem_p = torch.softmax(torch.from_numpy(predict(stem, data[s][0], vecs[s])), -1).numpy()
            res[s]["stem"] = scores(np.log(stem_p), y[s])
            res[s]["average"] = scores(np.log(0.5 * stem_p + 0.5 * np.exp(walked)), y[s])
    res["max_abs_prob_gap_torch_vs_sklearn"] = walk_gap  # the buffers' walk is scikit-learn's model
    oof = np.zeros((len(y["train"]), len(LABELS)), np.float32)
    for k, (fit_idx, held) in enumerate(StratifiedKFold(a.folds, shuffle=True, random_state=a.seed).split(vecs["train"], y["train"])):
        oof[held] = log_proba(fit(vecs["train"][fit_idx], y["train"][fit_idx], a), vecs["train"][held])
    res["train_out_of_fold"] = scores(oof, y["train"])
    meta = {"task": "ecg_rhythm", "labels": json.dumps(list(LABELS)), "shape": json.dumps(list(shape) + [len(LABELS)]),
            "features": json.dumps(list(RHYTHM_VECTOR_NAMES)), "fs": str(task.fs)}
    save_file(arrays, str(a.out / "trees.safetensors"), metadata=meta)
    save_file({"vectors": vecs["train"].astype(np.float32), "log_probs": oof}, str(a.out / "folds.safetensors"),
              metadata={**meta, "folds": str(a.folds)})
    res.update(minutes=round((time.time() - t0) / 60, 1), machine=machine())
    (a.out / "metrics.json").write_text(json.dumps(res, indent=2))
    for s in ("val", "test"):
        print(s, {k: round(v["challenge_score"], 4) for k, v in res[s].items()})
    print(f"train out of fold {res['train_out_of_fold']['challenge_score']:.4f}; {shape[0]} trees of {shape[1]} nodes, "
          f"depth {shape[2]}, {res['bytes']:,} bytes; torch walk vs scikit-learn max |dp| {walk_gap:.2e}")


if __name__ == "__main__":
    main()
