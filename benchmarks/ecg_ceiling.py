"""How far the strongest classifiers we can fit here reach on our PhysioNet 2017 split: the ceiling an ECG TSLM that
reads them (as `models/flamingo-ecg-trees` reads the CNN stem and the rhythm trees) could hope to pass on to its answer.

    python benchmarks/ecg_ceiling.py --stem runs/ecg-stem4 --trees runs/rhythm-trees \
        --out benchmarks/results/ecg_ceiling.json          # ~3 min at 2 workers (features cached in --cache)

Inputs, all measured on the same records (`edge_tslm.data.physionet2017.split_records`):
- the feature baseline's 88 RR / morphology / atrial-activity / noise features (`edge_tslm.baseline.ecg_features`,
  300 Hz, whole record);
- the encoder's 36-number rhythm vector (150 Hz, first 60 s; the stem run's vectors_<split>.npz cache);
- the CNN stem's 4 logits: out of fold on the training records (the stem run's folds.safetensors, from
  `training/pretrain_ecg_stem.py --cross-fit`), the full stem on validation and test;
- the rhythm trees' 4 log-probabilities, out of fold on training (`training/pretrain_rhythm_trees.py`).

Candidates: gradient boosting (scikit-learn HistGradientBoostingClassifier, class_weight balanced as the baseline)
on growing feature sets, and averages of classifiers' probabilities. The validation split picks one; every candidate's
test score is printed beside it with a 95 % bootstrap interval, so read the others as what test noise allows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "training")]

from edge_tslm import baseline as B  # noqa: E402
from edge_tslm.data import physionet2017 as p17  # noqa: E402
from edge_tslm.machine import machine  # noqa: E402
from edge_tslm.model.rhythm_trees import RhythmTrees  # noqa: E402
from edge_tslm.model.vector_cross_fit import vector_key  # noqa: E402
from edge_tslm.score_intervals import interval, prediction_record  # noqa: E402
from edge_tslm.train.tasks import get_task  # noqa: E402
from pretrain_ecg_stem import LABELS, load_split, predict, scores, split_vectors, stem_from_run  # noqa: E402

SPLITS = ("train", "val", "test")
CONFIGS = {  # gradient-boosting settings tried on every feature set (the baseline's sweep, balanced)
    "lr0.05x400": B.BaselineConfig(class_weight="balanced"),
    "lr0.03x800": B.BaselineConfig(max_iter=800, learning_rate=0.03, class_weight="balanced"),
    "lr0.03x600_leaf10": B.BaselineConfig(max_iter=600, learning_rate=0.03, min_samples_leaf=10, class_weight="balanced"),
}


def baseline_features(split: str, cache: Path, workers: int) -> tuple[np.ndarray, list[str]]:
    """(N, F) feature-baseline features of a split's records and their names, cached in `cache`."""
    recs = p17.split_records(split)
    names = [r.name for r in recs]
    if cache.is_file():
        with np.load(cache) as c:
            if c["names"].tolist() == names:
                return c["features"], names
    X = B.ecg_feature_matrix([r.load() for r in recs], p17.FS, workers)
    np.savez(cache, features=X, names=np.asarray(names))
    return X, names


def out_of_fold(folds: Path, key: str, vectors: np.ndarray, width: int) -> np.ndarray:
    """(N, width): the last `width` numbers of each training record's out-of-fold row, looked up by rhythm vector."""
    f = load_file(str(folds))
    table = {vector_key(v): r[-width:] for v, r in zip(f["vectors"], f[key])}
    missing = sum(vector_key(v) not in table for v in vectors)
    if missing:
        raise SystemExit(f"{missing} training records have no out-of-fold row in {folds}: refit it on this split")
    return np.stack([table[vector_key(v)] for v in vectors]).astype(np.float32)


def trees_log_probs(run: Path, vectors: np.ndarray) -> np.ndarray:
    """(N, 4) log-probabilities of the committed-size rhythm trees (the TSLM's own walk of them)."""
    with safe_open(str(run / "trees.safetensors"), "np") as f:
        shape = json.loads(f.metadata()["shape"])  # trees, nodes, depth, labels
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    trees = RhythmTrees(*shape[:3], vectors.shape[1], shape[3])
    trees.load_arrays(arrays)
    trees.eval()
    with torch.no_grad():
        return trees(torch.from_numpy(vectors)).numpy()


def probs_of(clf, X: np.ndarray) -> np.ndarray:
    """(N, 4) class probabilities in LABELS order."""
    order = [list(clf.classes_).index(lab) for lab in LABELS]
    return clf.predict_proba(X)[:, order]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stem", type=Path, default=Path("runs/ecg-stem4"), help="pretrain_ecg_stem.py --out with --cross-fit folds")
    ap.add_argument("--trees", type=Path, default=Path("runs/rhythm-trees"), help="pretrain_rhythm_trees.py --out")
    ap.add_argument("--cache", type=Path, default=Path("runs/ecg-ceiling"), help="where the baseline features are cached")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    for need in (a.stem / "stem.safetensors", a.stem / "folds.safetensors", a.trees / "trees.safetensors", a.trees / "folds.safetensors"):
        if not need.is_file():
            ap.error(f"{need} is missing: train the stem with training/pretrain_ecg_stem.py --cross-fit 5 and the trees "
                     "with training/pretrain_rhythm_trees.py (training/README.md has both commands)")
    if a.workers < 1:
        ap.error(f"--workers must be at least 1, got {a.workers}")
    torch.set_num_threads(a.workers)
    t0 = time.time()
    a.cache.mkdir(parents=True, exist_ok=True)
    task = get_task("ecg_rhythm")
    feats, vecs, stem_logits, tree_lp, y, names = {}, {}, {}, {}, {}, {}
    stem = stem_from_run(a.stem)
    for s in SPLITS:
        feats[s], names[s] = baseline_features(s, a.cache / f"features_{s}.npz", a.workers)
        xs, y[s], tslm_names = load_split(s, task.fs, task.max_seconds)
        if tslm_names != names[s]:
            raise SystemExit(f"the {s} split's records differ between the baseline and the TSLM readers")
        vecs[s] = split_vectors(xs, names[s], task.fs, a.stem / f"vectors_{s}.npz", a.workers)
        if s == "train":
            stem_logits[s] = out_of_fold(a.stem / "folds.safetensors", "features", vecs[s], len(LABELS))
            tree_lp[s] = out_of_fold(a.trees / "folds.safetensors", "log_probs", vecs[s], len(LABELS))
        else:
            stem_logits[s] = predict(stem, xs, vecs[s])
            tree_lp[s] = trees_log_probs(a.trees, vecs[s])
        print(f"{s}: {len(names[s])} records read ({time.time() - t0:.0f} s)", flush=True)
    sets = {
        "features": lambda s: feats[s],
        "features+vector": lambda s: np.concatenate([feats[s], vecs[s]], 1),
        "features+vector+stem": lambda s: np.concatenate([feats[s], vecs[s], stem_logits[s]], 1),
        "features+vector+stem+trees": lambda s: np.concatenate([feats[s], vecs[s], stem_logits[s], tree_lp[s]], 1),
    }
    ytr = [LABELS[i] for i in y["train"]]
    probs: dict[str, dict[str, np.ndarray]] = {}
    for set_name, X in sets.items():
        for cfg_name, cfg in CONFIGS.items():
            clf = B.fit_baseline(X("train"), ytr, cfg)
            probs[f"GB({set_name}) {cfg_name}"] = {s: probs_of(clf, X(s)) for s in ("val", "test")}
            print(f"fitted GB({set_name}) {cfg_name} ({time.time() - t0:.0f} s)", flush=True)
    soft = {s: torch.softmax(torch.from_numpy(stem_logits[s]), -1).numpy() for s in ("val", "test")}
    trees_p = {s: np.exp(tree_lp[s]) for s in ("val", "test")}
    probs["stem"] = soft
    probs["trees"] = trees_p
    probs["average(stem, trees)"] = {s: (soft[s] + trees_p[s]) / 2 for s in ("val", "test")}
    best_gb = {k: max((n for n in probs if n.startswith(f"GB({k})")), key=lambda n: scores(np.log(probs[n]["val"]), y["val"])["challenge_score"])
               for k in ("features", "features+vector+stem+trees")}
    for k, n in best_gb.items():
        probs[f"average({n}, stem)"] = {s: (probs[n][s] + soft[s]) / 2 for s in ("val", "test")}
        probs[f"average({n}, stem, trees)"] = {s: (probs[n][s] + soft[s] + trees_p[s]) / 3 for s in ("val", "test")}
    rows = {}
    for n, p in probs.items():
        row = {}
        for s in ("val", "test"):
            r = scores(np.log(np.clip(p[s], 1e-12, None)), y[s])
            row[s] = {"challenge_score": r["challenge_score"], "macro_f1": r["macro_f1"],
                      "af_f1": r["per_class_f1"]["atrial fibrillation"], "per_class_f1": r["per_class_f1"]}
        rec = prediction_record(names["test"], [LABELS[i] for i in y["test"]], [LABELS[i] for i in p["test"].argmax(1)], LABELS)
        row["test"]["challenge_interval"] = interval(rec, "challenge")
        row["test"]["af_f1_interval"] = interval(rec, "af_f1")
        rows[n] = row
    chosen = max(rows, key=lambda n: rows[n]["val"]["challenge_score"])
    res = {"command": "python benchmarks/ecg_ceiling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": machine(), "n": {s: len(names[s]) for s in SPLITS}, "n_features": {k: int(X("val").shape[1]) for k, X in sets.items()},
           "configs": {k: c.to_dict() for k, c in CONFIGS.items()}, "chosen_on_val": chosen, "candidates": rows,
           "minutes": round((time.time() - t0) / 60, 1)}
    print(f"{'candidate':64s} {'val':>7s} {'test':>7s}  test 95% interval  AF F1 test")
    for n, r in rows.items():
        ci = r["test"]["challenge_interval"]
        print(f"{n:64s} {r['val']['challenge_score']:7.4f} {r['test']['challenge_score']:7.4f}  [{ci['low']:.4f}, {ci['high']:.4f}]"
              f"  {r['test']['af_f1']:.4f}{'  <- chosen on val' if n == chosen else ''}")
    if a.out:
        a.out.write_text(json.dumps(res, indent=2))
        a.out.with_suffix(".md").write_text(markdown(res))


def markdown(res: dict) -> str:
    lines = ["# PhysioNet 2017: how far the classifiers a TSLM can read reach on our split", "",
             f"Command: `{res['command']}`", "", f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores", "",
             f"Records: {res['n']}; feature counts {res['n_features']}. Gradient boosting is scikit-learn's "
             "HistGradientBoostingClassifier (class_weight balanced); the stem and trees are out of fold on the training "
             "records. The validation split picks one candidate; the others' test scores show what test noise allows.", "",
             "| candidate | val challenge | test challenge [95 % interval] | test AF F1 [95 % interval] |", "|---|---:|---:|---:|"]
    for n, r in res["candidates"].items():
        ci, af = r["test"]["challenge_interval"], r["test"]["af_f1_interval"]
        mark = " (chosen on val)" if n == res["chosen_on_val"] else ""
        lines.append(f"| {n}{mark} | {r['val']['challenge_score']:.4f} | {ci['score']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}] "
                     f"| {af['score']:.4f} [{af['low']:.4f}, {af['high']:.4f}] |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
