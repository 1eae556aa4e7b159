"""Per-label decision offsets fitted on a validation split (numpy only).

The classify path picks the label with the highest log-likelihood of 'Answer: <label>'. Those likelihoods carry the
priors the model was trained with (e.g. `--balance` oversampling of the rare classes) and a bias toward labels with
shorter or more common token sequences, so the argmax is not the decision that maximises the task's own score
(macro-F1; the PhysioNet 2017 challenge score for ECG rhythm). One additive offset per label, fitted on labelled
validation records and stored in the artifact's config (`label_offsets`), moves each decision boundary without
touching a weight. Both backends add the offsets in `classify`, so every consumer (evaluation, the stream, the
pipeline) decides the same way. Fit on a validation split, never on the split you report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_tslm.metrics import CHALLENGE_CLASSES


@dataclass(frozen=True)
class CalibrationConfig:
    """A coarse search over every combination of offsets (when few labels), then coordinate ascent on a fine grid,
    one label at a time; the first label stays at 0 (only differences between labels move a decision)."""

    span: float = 6.0  # offsets searched in [-span, span] nats
    coarse_step: float = 0.5  # the joint search's grid (used when at most `joint_max` labels are free)
    joint_max: int = 3
    step: float = 0.05  # the fine grid
    rounds: int = 8  # fine passes over the labels; stops early when a pass changes nothing

    def __post_init__(self) -> None:
        if not (self.span > 0 and 0 < self.step <= self.span and 0 < self.coarse_step <= self.span):
            raise ValueError(f"CalibrationConfig needs span > 0 and steps in (0, span]; got span={self.span}, "
                             f"step={self.step}, coarse_step={self.coarse_step}")
        if self.rounds < 1 or self.joint_max < 0:
            raise ValueError(f"CalibrationConfig needs rounds >= 1 and joint_max >= 0; got {self.rounds}, {self.joint_max}")


def f1_per_class(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """y, pred: (N,) class indices -> (C,) F1 (0 where a class is neither present nor predicted). pred -1 is an
    answer that is no label: wrong for its record and counted in no label's column (as edge_tslm.metrics does)."""
    y, pred = np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    ok = pred >= 0
    cm = np.bincount(y[ok] * n_classes + pred[ok], minlength=n_classes * n_classes).reshape(n_classes, n_classes)  # (C, C)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + np.bincount(y, minlength=n_classes)  # 2 tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)


def objective_name(task: str) -> str:
    """"challenge_score" for the PhysioNet 2017 rhythm task, "macro_f1" otherwise (what `objective_for` computes)."""
    return "challenge_score" if task.startswith("ecg") or task == "physionet2017" else "macro_f1"


def objective_for(labels: Sequence[str], task: str):
    """The score the offsets maximise: the challenge score for the PhysioNet 2017 labels, macro-F1 otherwise."""
    labels = list(labels)
    if objective_name(task) == "challenge_score":
        missing = [c for c in CHALLENGE_CLASSES if c not in labels]
        if missing:
            raise ValueError(f"the challenge score needs the labels {CHALLENGE_CLASSES}; {missing} are not among {labels}")
        idx = [labels.index(c) for c in CHALLENGE_CLASSES]
        return lambda y, pred: float(f1_per_class(y, pred, len(labels))[idx].mean())
    return lambda y, pred: float(f1_per_class(y, pred, len(labels)).mean())


def fit_label_offsets(scores: np.ndarray, y: np.ndarray, objective, cfg: CalibrationConfig | None = None) -> np.ndarray:
    """scores (N, C) log-likelihoods, y (N,) true class indices -> offsets (C,) that maximise objective(y, argmax).

    Coordinate ascent alone stops at the first local optimum the label order leads it to, so with up to `joint_max`
    free labels it starts from the best point of a coarse joint grid. Among fine grid values that tie for the best
    score the middle one is kept: the boundary sits in the middle of the gap between validation records."""
    cfg = cfg or CalibrationConfig()
    scores = np.asarray(scores, dtype=float)
    y = np.asarray(y, dtype=np.int64)
    if scores.ndim != 2 or len(scores) != len(y) or len(y) == 0:
        raise ValueError(f"scores must be (N, C) with one true class per row; got {scores.shape} scores and {len(y)} classes")
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or infinite log-likelihoods; score the records again before fitting offsets")
    C = scores.shape[1]
    if y.min() < 0 or y.max() >= C:
        raise ValueError(f"true classes must be in 0..{C - 1}; got {y.min()}..{y.max()}")
    off = _joint_start(scores, y, objective, cfg) if 1 <= C - 1 <= cfg.joint_max else np.zeros(C)
    best = objective(y, (scores + off).argmax(1))
    grid = np.round(np.arange(-cfg.span, cfg.span + cfg.step / 2, cfg.step), 6)  # (G,)
    for _ in range(cfg.rounds):
        changed = False
        for c in range(1, C):
            vals = np.empty(len(grid))
            for g, v in enumerate(grid):
                trial = off.copy()
                trial[c] = v
                vals[g] = objective(y, (scores + trial).argmax(1))
            if vals.max() < best - 1e-12:  # the current value is off the fine grid and better: keep it
                continue
            top = np.flatnonzero(vals >= vals.max() - 1e-12)
            pick = grid[top[len(top) // 2]]
            changed = changed or pick != off[c]
            off[c], best = pick, vals.max()
        if not changed:
            break
    return off


def _joint_start(scores: np.ndarray, y: np.ndarray, objective, cfg: CalibrationConfig) -> np.ndarray:
    """The best offsets on a coarse grid over every combination of the free labels' offsets (C - 1 <= joint_max)."""
    import itertools

    C = scores.shape[1]
    coarse = np.arange(-cfg.span, cfg.span + cfg.coarse_step / 2, cfg.coarse_step)
    best, start = -np.inf, np.zeros(C)
    for combo in itertools.product(coarse, repeat=C - 1):
        off = np.concatenate([[0.0], combo])
        v = objective(y, (scores + off).argmax(1))
        if v > best + 1e-12:
            best, start = v, off
    return start


def apply_offsets(logp: dict[str, float], labels: Sequence[str], offsets: Sequence[float]) -> dict[str, float]:
    """Add each label's offset (labels the offsets do not name get 0)."""
    if not offsets:
        return logp
    by = dict(zip(labels, offsets))
    return {lab: s + float(by.get(lab, 0.0)) for lab, s in logp.items()}
