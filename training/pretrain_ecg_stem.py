"""Train the ECG stem (`edge_tslm.model.ecg_stem.EcgStem`) as a four-label rhythm classifier on PhysioNet 2017.

    python training/pretrain_ecg_stem.py --out runs/ecg-stem4 --epochs 80 --crop-s 20 --seed 1 --threads 1   # ~4 min

The records are read as the ecg_rhythm task reads them (resampled to 150 Hz, cropped to 60 s) and z-normalised over
their real samples as the encoder does. Training sees random crops of up to `--crop-s` seconds; validation and test
see whole records. The head reads each record's rhythm vector, measured once over the whole record (cached in
`--out`/vectors_<split>.npz), as the encoder measures it over the series it is given. The best epoch by the
validation challenge score is kept (`stem.safetensors`, what `--ecg-stem` loads), and its test-split scores are
written beside it (`metrics.json`, the epochs in `log.jsonl`): what the stem alone knows, before a TSLM reads it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_tslm.data import physionet2017 as p17  # noqa: E402
from edge_tslm.machine import machine  # noqa: E402
from edge_tslm.metrics import challenge_score, classification_report  # noqa: E402
from edge_tslm.model.ecg_stem import EcgStem, EcgStemConfig  # noqa: E402
from edge_tslm.model.encoder import masked_znormalize  # noqa: E402
from edge_tslm.rhythm_vector import rhythm_vector  # noqa: E402
from edge_tslm.signals import resample  # noqa: E402
from edge_tslm.train.tasks import get_task  # noqa: E402

LABELS = tuple(p17.LABEL_NAMES.values())  # the ecg_rhythm task's order: normal, atrial fibrillation, other rhythm, noisy


def load_split(split: str, fs: float, max_seconds: float) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Each record of a split at the task's rate and length (float32), its label index, and its name."""
    xs, ys, names = [], [], []
    for r in p17.split_records(split):
        xs.append(resample(r.load(), p17.FS, fs)[0][: int(max_seconds * fs)].astype(np.float32))
        ys.append(LABELS.index(r.label))
        names.append(r.name)
    return xs, np.asarray(ys, np.int64), names


def _vector(args: tuple[np.ndarray, float]) -> np.ndarray:
    return rhythm_vector(*args)


def split_vectors(xs: list[np.ndarray], names: list[str], fs: float, cache: Path, workers: int) -> np.ndarray:
    """(N, F) rhythm vectors of the records, read from `cache` when it holds the same records at the same rate."""
    if cache.is_file():
        with np.load(cache) as c:
            if "names" in c and c["names"].tolist() == names and float(c["fs"]) == fs:
                return c["vectors"]
    with ProcessPoolExecutor(workers) as pool:
        v = np.stack(list(pool.map(_vector, [(x, fs) for x in xs], chunksize=32)))
    np.savez(cache, vectors=v, names=np.asarray(names), fs=fs)
    return v


def batch(xs: list[np.ndarray], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (or take as given) records to (B, length) + mask, z-normalised over the real samples."""
    x = np.zeros((len(xs), length), np.float32)
    m = np.zeros((len(xs), length), bool)
    for i, s in enumerate(xs):
        x[i, : s.size], m[i, : s.size] = s[:length], True
    xt, mt = torch.from_numpy(x), torch.from_numpy(m)
    normed, _, _ = masked_znormalize(xt, mt)
    return normed, mt


@torch.no_grad()
def predict(model: EcgStem, xs: list[np.ndarray], vs: np.ndarray, bs: int = 64, features: bool = False) -> np.ndarray:
    """Label logits (N, 4) over whole records, batched by length; with `features`, everything the TSLM reads of the
    stem (N, hidden + 4)."""
    model.eval()
    order = np.argsort([s.size for s in xs])
    width = model.cfg.feature_dim if features else model.cfg.num_labels
    out = np.zeros((len(xs), width), np.float32)
    for a in range(0, len(xs), bs):
        idx = order[a : a + bs]
        group = [xs[i] for i in idx]
        x, m = batch(group, max(s.size for s in group))
        out[idx] = model(x, m, torch.from_numpy(vs[idx]))[:, -width:].numpy()
    return out


def scores(logits: np.ndarray, y: np.ndarray) -> dict:
    """The benchmarks' report (edge_tslm.metrics) of the argmax labels, plus the challenge score."""
    true = [LABELS[i] for i in y]
    pred = [LABELS[i] for i in logits.argmax(1)]
    return {"challenge_score": challenge_score(true, pred), **classification_report(true, pred, LABELS)}


def augment(x: torch.Tensor, m: torch.Tensor, flip: float = 0.0) -> torch.Tensor:
    """x, m: (B, L) z-normalised crops and their real-sample flags -> (B, L) with a little noise on the real samples
    and, with probability `flip` per crop, upside down: a lead worn the other way round shows the same rhythm (the
    record's rhythm vector, read beside it, does not change)."""
    x = x + 0.02 * torch.randn_like(x) * m  # (B, L)
    if flip > 0:
        x = x * torch.where(torch.rand(x.shape[0], 1) < flip, -1.0, 1.0)  # (B, L)
    return x


def stem_from_run(run: Path) -> EcgStem:
    """A stem from its pretraining directory, built with the shape its metrics.json records."""
    meta = json.loads((run / "metrics.json").read_text())
    c = meta["stem_config"]
    cfg = EcgStemConfig(channels=tuple(c["channels"]), kernels=tuple(c["kernels"]), hidden=c["hidden"], dropout=0.0,
                        rhythm_vector=c["rhythm_vector"])
    stem = EcgStem(cfg)
    stem.load_state_dict(load_file(str(run / "stem.safetensors")))
    return stem.eval()


def train_stem(cfg: EcgStemConfig, a: argparse.Namespace, xs: list[np.ndarray], ys: np.ndarray, vs: np.ndarray,
               val: tuple, rng: np.random.Generator, log, save_to: Path | None) -> EcgStem:
    """Train one stem on (xs, ys, vs) -> the stem at its best epoch by the validation (val = (xs, ys, vs)) challenge
    score, saved to `save_to` whenever it improves (None: not saved)."""
    crop = int(a.crop_s * get_task("ecg_rhythm").fs)
    model = EcgStem(cfg)
    counts = np.bincount(ys, minlength=len(LABELS))
    weight = torch.tensor(len(ys) / (len(LABELS) * counts), dtype=torch.float32)  # balanced: AF counts as much as normal
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    steps_per_epoch = len(xs) // a.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.epochs * steps_per_epoch, pct_start=0.1)
    best, best_state = -1.0, None
    for epoch in range(a.epochs):
        model.train()
        t1, total = time.time(), 0.0
        for idx in rng.permutation(len(xs))[: steps_per_epoch * a.batch_size].reshape(steps_per_epoch, a.batch_size):
            group = []
            for i in idx:
                s = xs[i]
                start = int(rng.integers(0, max(1, s.size - crop + 1)))
                group.append(s[start : start + crop])
            x, m = batch(group, max(g.size for g in group))
            x = augment(x, m, a.flip)
            loss = torch.nn.functional.cross_entropy(model(x, m, torch.from_numpy(vs[idx]))[:, -cfg.num_labels :], torch.from_numpy(ys[idx]), weight=weight)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach())
        v = scores(predict(model, val[0], val[2]), val[1])
        rec = {"epoch": epoch + 1, "train_loss": round(total / steps_per_epoch, 4), "val": v, "s": round(time.time() - t1, 1)}
        print(json.dumps(rec), flush=True)
        log.write(json.dumps(rec) + "\n")
        log.flush()
        if v["challenge_score"] > best:
            best, best_state = v["challenge_score"], {k: t.detach().clone() for k, t in model.state_dict().items()}
            if save_to is not None:
                save_file(best_state, str(save_to))
    model.load_state_dict(best_state)
    return model.eval()


def cross_fit(cfg: EcgStemConfig, a: argparse.Namespace, data: dict, vecs: dict, rng: np.random.Generator) -> dict:
    """K stems, each trained as the main one but without one fold of the training records -> folds.safetensors: every
    training record's stem features (hidden + logits) from the stem that did not see it, keyed by its rhythm vector
    (what training/curriculum.py --stem-folds reads), and the out-of-fold scores."""
    from sklearn.model_selection import StratifiedKFold
    from safetensors.numpy import save_file as save_numpy

    xs, ys, _ = data["train"]
    oof = np.zeros((len(xs), cfg.feature_dim), np.float32)
    with (a.out / "folds_log.jsonl").open("w") as log:
        for k, (fit_idx, held) in enumerate(StratifiedKFold(a.cross_fit, shuffle=True, random_state=a.seed).split(vecs["train"], ys)):
            print(f"fold {k + 1}/{a.cross_fit}: {len(fit_idx)} records", flush=True)
            stem = train_stem(cfg, a, [xs[i] for i in fit_idx], ys[fit_idx], vecs["train"][fit_idx],
                              (data["val"][0], data["val"][1], vecs["val"]), rng, log, None)
            oof[held] = predict(stem, [xs[i] for i in held], vecs["train"][held], features=True)
    save_numpy({"vectors": vecs["train"].astype(np.float32), "features": oof}, str(a.out / "folds.safetensors"),
               metadata={"task": "ecg_rhythm", "folds": str(a.cross_fit), "stem_config": json.dumps(asdict(cfg))})
    return {"k": a.cross_fit, "out_of_fold_train": scores(oof[:, -cfg.num_labels :], ys)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/ecg-stem"))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-2)
    ap.add_argument("--crop-s", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--no-rhythm-vector", action="store_true", help="ablation: the head reads the CNN's features only "
                    "(such a stem does not fit encoder.ecg_stem, whose stem reads the vector)")
    ap.add_argument("--channels", default=",".join(map(str, EcgStemConfig.channels)),
                    help="the conv layers' widths, comma-separated. A stem-only experiment: the TSLM's encoder.ecg_stem "
                    "builds the default shape, and load_stem refuses another")
    ap.add_argument("--kernels", default=",".join(map(str, EcgStemConfig.kernels)), help="the conv layers' kernel sizes (odd)")
    ap.add_argument("--hidden", type=int, default=EcgStemConfig.hidden, help="the head's hidden width")
    ap.add_argument("--flip", type=float, default=0.0, metavar="P",
                    help="turn each training crop upside down with probability P (PhysioNet 2017 has records taken with "
                    "the device held the other way round); 0: off, as for the stems before session 23")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cross-fit", type=int, default=0, metavar="K",
                    help="instead of the stem: K stems with the same flags, each without one fold of the training records, "
                    "and every training record's features from the one that did not see it (--out/folds.safetensors, "
                    "for training/curriculum.py --stem-folds beside the stem they stand in for)")
    a = ap.parse_args(argv)
    if a.cross_fit == 1 or a.cross_fit < 0:
        ap.error(f"--cross-fit K needs K >= 2 folds, got {a.cross_fit}")
    for name, value in (("--epochs", a.epochs), ("--batch-size", a.batch_size), ("--threads", a.threads)):
        if value < 1:
            ap.error(f"{name} must be at least 1, got {value}")
    if not 0 <= a.flip <= 1:
        ap.error(f"--flip is a probability in [0, 1], got {a.flip}")
    if not a.crop_s > 0 or not a.lr > 0 or not 0 <= a.dropout < 1:
        ap.error(f"--crop-s and --lr must be positive and --dropout in [0, 1); got {a.crop_s}, {a.lr}, {a.dropout}")
    try:
        cfg = EcgStemConfig(channels=tuple(int(c) for c in a.channels.split(",")), kernels=tuple(int(k) for k in a.kernels.split(",")),
                            hidden=a.hidden, dropout=a.dropout, rhythm_vector=not a.no_rhythm_vector)
    except ValueError as e:
        ap.error(f"--channels / --kernels / --hidden: {e}")  # before minutes of loading
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    task = get_task("ecg_rhythm")
    t0 = time.time()
    data = {s: load_split(s, task.fs, task.max_seconds) for s in ("train", "val", "test")}
    a.out.mkdir(parents=True, exist_ok=True)
    vecs = {s: split_vectors(data[s][0], data[s][2], task.fs, a.out / f"vectors_{s}.npz", a.threads) for s in data}
    print(f"loaded {', '.join(f'{s} {len(v[0])}' for s, v in data.items())} records in {time.time() - t0:.0f} s", flush=True)
    xs, ys, _ = data["train"]
    if len(xs) < a.batch_size:
        ap.error(f"--batch-size {a.batch_size} is larger than the {len(xs)} training records")
    if a.cross_fit:
        res = {"command": "python training/pretrain_ecg_stem.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "stem_config": asdict(cfg), "cross_fit": cross_fit(cfg, a, data, vecs, rng),
               "minutes": round((time.time() - t0) / 60, 1), "machine": machine()}
        (a.out / "folds_metrics.json").write_text(json.dumps(res, indent=2))
        print(json.dumps(res["cross_fit"]), flush=True)
        return
    with (a.out / "log.jsonl").open("w") as log:
        model = train_stem(cfg, a, xs, ys, vecs["train"], (data["val"][0], data["val"][1], vecs["val"]), rng, log,
                           a.out / "stem.safetensors")
    test = scores(predict(model, data["test"][0], vecs["test"]), data["test"][1])
    val = scores(predict(model, data["val"][0], vecs["val"]), data["val"][1])
    n_params = sum(p.numel() for p in model.parameters())
    res = {"command": "python training/pretrain_ecg_stem.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "stem_config": asdict(cfg), "parameters": n_params, "best_val": val, "test": test, "args": {k: str(v) for k, v in vars(a).items()},
           "minutes": round((time.time() - t0) / 60, 1), "machine": machine()}
    (a.out / "metrics.json").write_text(json.dumps(res, indent=2))
    print(json.dumps({"test": test, "val": val, "parameters": n_params}), flush=True)


if __name__ == "__main__":
    main()
