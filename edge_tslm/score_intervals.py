"""How far a test score can be trusted: bootstrap intervals over the test records, and paired differences.

A challenge score on 1,199 records (100 of them AF) moves by about 0.01 when a handful of records change side, so
two models 0.004 apart are not told apart by their scores alone. An evaluation keeps its per-record predictions
(`prediction_record`); `interval` resamples the records with replacement and reports the score's percentile
interval, and `difference` resamples the records once for two models scored on the same records (paired), so the
records both get right or both get wrong do not widen the interval of their difference. scipy.stats.bootstrap does
the resampling.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from edge_tslm.calibration import f1_per_class
from edge_tslm.metrics import CHALLENGE_CLASSES

__all__ = ["METRICS", "prediction_record", "score", "interval", "difference", "check_paired"]

METRICS = ("challenge", "af_f1", "macro_f1", "accuracy")


def prediction_record(ids: Sequence[str], y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict:
    """Per-record predictions as an evaluation JSON keeps them: label indices, -1 for an answer that is not a label
    (wrong for its record, counted in no label's column, as edge_tslm.metrics does). ``fingerprint`` names the
    records and their true labels in order, so only evaluations of the same records are paired."""
    if not len(ids) == len(y_true) == len(y_pred):
        raise ValueError(f"ids, y_true and y_pred must be the same length, got {len(ids)}, {len(y_true)}, {len(y_pred)}")
    index = {lab: i for i, lab in enumerate(labels)}
    missing = sorted({t for t in y_true if t not in index})
    if missing:
        raise ValueError(f"true labels {missing} are not among the labels {list(labels)}")
    true = [index[t] for t in y_true]
    key = hashlib.sha1(("\n".join(f"{i}\t{t}" for i, t in zip(ids, true))).encode()).hexdigest()[:16]
    return {"labels": list(labels), "ids": [str(i) for i in ids], "true": true,
            "pred": [index.get(p, -1) for p in y_pred], "fingerprint": key}


def score(record: dict, metric: str, rows: np.ndarray | None = None) -> float:
    """The metric over the record's rows (all, or the resampled indices ``rows``); the same numbers as
    edge_tslm.metrics on the label strings."""
    labels = record["labels"]
    true, pred = np.asarray(record["true"]), np.asarray(record["pred"])
    if rows is not None:
        true, pred = true[rows], pred[rows]
    if metric == "accuracy":
        return float(np.mean(true == pred))
    f1 = f1_per_class(true, pred, len(labels))  # (C,); an invalid answer (-1) is wrong and in no column
    if metric == "macro_f1":
        return float(f1.mean())
    if metric == "challenge":
        missing = [k for k in CHALLENGE_CLASSES if k not in labels]
        if missing:
            raise ValueError(f"the challenge score needs the labels {list(CHALLENGE_CLASSES)}; this record lacks {missing}")
        return float(np.mean([f1[labels.index(k)] for k in CHALLENGE_CLASSES]))
    if metric == "af_f1":
        if "atrial fibrillation" not in labels:
            raise ValueError("af_f1 needs the label 'atrial fibrillation'")
        return float(f1[labels.index("atrial fibrillation")])
    raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")


def check_paired(a: dict, b: dict) -> None:
    """Refuse to pair evaluations of different records (or the same records in another order)."""
    if a["fingerprint"] != b["fingerprint"] or a["labels"] != b["labels"]:
        raise ValueError("these evaluations are not of the same records in the same order (their fingerprints or "
                         "label lists differ); score both on the same split, or compare their intervals unpaired")


def _bootstrap(stat, n: int, n_resamples: int, seed: int, level: float):
    from scipy.stats import bootstrap

    return bootstrap((np.arange(n),), stat, vectorized=False, paired=False, n_resamples=n_resamples,
                     confidence_level=level, method="percentile", random_state=np.random.default_rng(seed))


def interval(record: dict, metric: str, n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """-> {"score", "low", "high"}: the score on all records and its bootstrap percentile interval."""
    n = len(record["true"])
    res = _bootstrap(lambda rows: score(record, metric, rows), n, n_resamples, seed, level)
    ci = res.confidence_interval
    return {"score": score(record, metric), "low": float(ci.low), "high": float(ci.high)}


def difference(a: dict, b: dict, metric: str, n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """b's score minus a's on the same records -> {"difference", "low", "high", "b_above_share"}: the paired
    bootstrap interval, and the share of resamples in which b scores above a."""
    check_paired(a, b)
    n = len(a["true"])
    res = _bootstrap(lambda rows: score(b, metric, rows) - score(a, metric, rows), n, n_resamples, seed, level)
    ci = res.confidence_interval
    return {"difference": score(b, metric) - score(a, metric), "low": float(ci.low), "high": float(ci.high),
            "b_above_share": float(np.mean(res.bootstrap_distribution > 0))}
