"""Which size of boosted trees over the rhythm vector (encoder.rhythm_trees)? Validation only, so the choice does not
look at test: each size alone and averaged with a CNN stem, and its bytes in the adapter (7 a node).

    python benchmarks/rhythm_tree_sizes.py --stem runs/ecg-stem4 --out benchmarks/results/rhythm_tree_sizes.json

The adapter of an ECG stem model has 54 KB left under the repo's 20 MiB a file, and the trees' projection takes 5 KB.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "training")]

from edge_tslm.machine import machine  # noqa: E402
from edge_tslm.train.tasks import get_task  # noqa: E402
from pretrain_ecg_stem import load_split, predict, scores, split_vectors, stem_from_run  # noqa: E402
from pretrain_rhythm_trees import fit, log_proba  # noqa: E402

SIZES = ((400, 31, 0.05), (100, 15, 0.1), (60, 15, 0.15), (50, 8, 0.2), (100, 8, 0.1), (30, 15, 0.2))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stem", type=Path, required=True, help="a training/pretrain_ecg_stem.py --out directory")
    ap.add_argument("--cache", type=Path, default=Path("runs/rhythm-trees"), help="where vectors_<split>.npz are cached")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    task = get_task("ecg_rhythm")
    a.cache.mkdir(parents=True, exist_ok=True)
    d = {}
    for s in ("train", "val"):
        xs, ys, names = load_split(s, task.fs, task.max_seconds)
        d[s] = (xs, ys, split_vectors(xs, names, task.fs, a.cache / f"vectors_{s}.npz", a.threads))
    stem_p = torch.softmax(torch.from_numpy(predict(stem_from_run(a.stem), d["val"][0], d["val"][2])), -1).numpy()
    rows = []
    for it, leaves, lr in SIZES:
        clf = fit(d["train"][2], d["train"][1], argparse.Namespace(iterations=it, leaves=leaves, lr=lr, seed=0))
        nodes = sum(p.nodes.size for ps in clf._predictors for p in ps)
        p = np.exp(log_proba(clf, d["val"][2]))
        rows.append({"iterations": it, "leaves": leaves, "lr": lr, "nodes": int(nodes), "bytes": 7 * int(nodes),
                     "val_trees": scores(np.log(p), d["val"][1])["challenge_score"],
                     "val_average_with_stem": scores(np.log(0.5 * p + 0.5 * stem_p), d["val"][1])["challenge_score"]})
        print(json.dumps(rows[-1]), flush=True)
    if a.out:
        cmd = "python benchmarks/rhythm_tree_sizes.py " + " ".join(argv if argv is not None else sys.argv[1:])
        a.out.write_text(json.dumps({"command": cmd, "machine": machine(), "split": "val", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
