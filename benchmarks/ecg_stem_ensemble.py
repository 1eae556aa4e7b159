"""Score pretrained ECG stems alone and their average on the validation and test splits: does averaging stems lift
the stem's ceiling (and so the TSLM's, which reads one stem)?

    python benchmarks/ecg_stem_ensemble.py runs/ecg-stem2 runs/ecg-stem3 runs/ecg-stem4 runs/ecg-stem6 \
        --out benchmarks/results/ecg_stem_ensemble.json

Each directory is a `training/pretrain_ecg_stem.py --out` (its metrics.json gives the stem's shape, the first one's vectors_*.npz
caches the rhythm vectors). The average is of the stems' softmax probabilities.
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="training/pretrain_ecg_stem.py --out directories")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--splits", default="val,test", help="comma-separated; train scores the stems on the records they "
                    "were fitted on (in sample: how much a TSLM trained on their outputs sees them right)")
    a = ap.parse_args(argv)
    if a.threads < 1:
        ap.error(f"--threads must be at least 1, got {a.threads}")
    missing = [str(r) for r in a.runs if not (r / "stem.safetensors").is_file() or not (r / "metrics.json").is_file()]
    if missing:
        ap.error(f"no stem.safetensors + metrics.json in {missing}: train each with training/pretrain_ecg_stem.py --out DIR")
    torch.set_num_threads(a.threads)
    task = get_task("ecg_rhythm")
    stems = {str(r): stem_from_run(r) for r in a.runs}
    res: dict = {"command": "python benchmarks/ecg_stem_ensemble.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "machine": machine()}
    splits = [x for x in a.splits.split(",") if x]
    if not splits or set(splits) - {"train", "val", "test"}:
        ap.error(f"--splits takes train, val and test, got {a.splits!r}")
    for split in splits:
        xs, ys, names = load_split(split, task.fs, task.max_seconds)
        vs = split_vectors(xs, names, task.fs, a.runs[0] / f"vectors_{split}.npz", a.threads)  # (N, F), cached
        probs, rows = [], {}
        for name, stem in stems.items():
            logits = predict(stem, xs, vs)
            probs.append(torch.softmax(torch.from_numpy(logits), -1).numpy())
            rows[name] = scores(logits, ys)
        rows["average"] = scores(np.log(np.mean(probs, 0)), ys)
        res[split] = rows
        for name, r in rows.items():
            print(f"{split:5s} {name:24s} challenge {r['challenge_score']:.4f}  AF F1 {r['per_class_f1']['atrial fibrillation']:.4f}", flush=True)
    if a.out:
        a.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
