"""Classification metrics shared by the baseline, evaluation and benchmarks (numpy only).

Written out rather than taken from scikit-learn so the runtime/evaluation side can use
them without that dependency, and so the PhysioNet challenge score is defined once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Counts (n_labels, n_labels): row = true label, column = predicted label.

    Predictions outside `labels` (e.g. an unparseable generation) count in no column, so
    they lower recall for their true class without inventing a class.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    index = {label: i for i, label in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        if t not in index:
            raise ValueError(f"true label {t!r} is not in labels {list(labels)}")
        if p in index:
            cm[index[t], index[p]] += 1
    return cm


def per_class_f1(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """F1 of each label (0.0 where a label is neither predicted nor present)."""
    y_true = list(y_true)
    y_pred = list(y_pred)
    out: dict[str, float] = {}
    for label in labels:
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == label and p == label)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != label and p == label)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == label and p != label)
        denom = 2 * tp + fp + fn
        out[label] = float(2 * tp / denom) if denom else 0.0
    return out


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> float:
    """Unweighted mean of per-class F1 over `labels`."""
    f1 = per_class_f1(y_true, y_pred, labels)
    return float(np.mean([f1[label] for label in labels]))


def accuracy(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Fraction of exact matches."""
    if len(y_true) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float(np.mean([t == p for t, p in zip(y_true, y_pred, strict=True)]))


CHALLENGE_CLASSES = ("normal", "atrial fibrillation", "other rhythm")  # PhysioNet 2017: noisy is not averaged


def challenge_score(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    classes: Sequence[str] = CHALLENGE_CLASSES,
    all_labels: Sequence[str] | None = None,
) -> float:
    """PhysioNet/CinC 2017 score: (F1_N + F1_A + F1_O) / 3 over the four-class problem.

    The noisy class takes part in the confusion (its errors lower the others' F1) but its
    own F1 is not averaged, as in the challenge.
    """
    labels = list(all_labels) if all_labels is not None else sorted(set(y_true) | set(classes))
    f1 = per_class_f1(y_true, y_pred, labels)
    return float(np.mean([f1[c] for c in classes]))


def classification_report(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict:
    """The numbers every benchmark reports, as a JSON-ready dict."""
    return {
        "n": len(y_true),
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, labels),
        "per_class_f1": per_class_f1(y_true, y_pred, labels),
        "labels": list(labels),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels).tolist(),
    }
