"""Baseline features, the classifier wrapper and the shared metrics."""

import numpy as np
import pytest

from edge_tslm import baseline as B
from edge_tslm.data.synthetic import synthetic_ecg_samples
from edge_tslm.metrics import accuracy, challenge_score, classification_report, confusion_matrix, macro_f1, per_class_f1


def test_metrics_match_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c", "d"]
    y = list(rng.choice(labels, 200))
    p = list(rng.choice(labels, 200))
    assert macro_f1(y, p, labels) == pytest.approx(sk.f1_score(y, p, labels=labels, average="macro"))
    f1 = per_class_f1(y, p, labels)
    np.testing.assert_allclose([f1[k] for k in labels], sk.f1_score(y, p, labels=labels, average=None))
    np.testing.assert_array_equal(confusion_matrix(y, p, labels), sk.confusion_matrix(y, p, labels=labels))
    assert accuracy(y, p) == pytest.approx(sk.accuracy_score(y, p))


def test_challenge_score_ignores_noisy_f1_but_counts_its_errors():
    labels = ["normal", "atrial fibrillation", "other rhythm", "noisy"]
    y = ["normal", "atrial fibrillation", "other rhythm", "noisy"]
    assert challenge_score(y, y, all_labels=labels) == 1.0
    p = ["normal", "atrial fibrillation", "other rhythm", "normal"]  # noisy called normal
    assert challenge_score(y, p, all_labels=labels) == pytest.approx((2 / 3 + 1 + 1) / 3)
    rep = classification_report(y, p, labels)
    assert rep["n"] == 4 and rep["confusion_matrix"][3][0] == 1
    # an unparseable prediction lowers recall and belongs to no column
    assert confusion_matrix(["normal"], ["???"], labels).sum() == 0


def test_har_features_shape_and_names():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 3, 128)).astype(np.float32) * 0.1 + np.array([1.0, 0, 0])[:, None]
    X = B.har_features(w, 50.0)
    assert X.shape == (5, len(B.har_feature_names())) and np.isfinite(X).all()
    # a 2 Hz oscillation on x is found as the dominant frequency
    t = np.arange(128) / 50.0
    w2 = np.zeros((1, 3, 128))
    w2[0, 0] = 1 + 0.3 * np.sin(2 * np.pi * 2.0 * t)
    i = B.har_feature_names().index("x_dom_freq")
    assert abs(B.har_features(w2)[0, i] - 2.0) < 0.4


def test_ecg_features_separate_synthetic_rhythms():
    samples = synthetic_ecg_samples(6, seed=0, duration_s=20.0)
    X = B.ecg_feature_matrix([s.signal for s in samples], 300.0, workers=1)
    assert X.shape == (6, len(B.ECG_FEATURE_NAMES))
    cv = X[:, B.ECG_FEATURE_NAMES.index("rr_cv")]
    is_af = np.array([s.label == "atrial fibrillation" for s in samples])
    assert cv[is_af].min() > cv[~is_af].max()
    hr = X[:, B.ECG_FEATURE_NAMES.index("hr_mean")]
    assert ((hr > 40) & (hr < 200)).all()
    assert np.isfinite(B.ecg_features(np.zeros(100), 300.0)[0])  # too short: no crash, NaN features


def test_fit_baseline_learns_synthetic_rhythm():
    train = synthetic_ecg_samples(16, seed=1, duration_s=15.0)
    test = synthetic_ecg_samples(8, seed=2, duration_s=15.0)
    Xtr = B.ecg_feature_matrix([s.signal for s in train], 300.0, workers=1)
    Xte = B.ecg_feature_matrix([s.signal for s in test], 300.0, workers=1)
    clf = B.fit_baseline(Xtr, [s.label for s in train], B.BaselineConfig(max_iter=30, min_samples_leaf=2))
    pred = list(clf.predict(Xte))
    assert accuracy([s.label for s in test], pred) >= 0.875


def test_sample_entropy():
    assert np.isnan(B.sample_entropy(np.ones(3)))
    rng = np.random.default_rng(0)
    regular = np.tile([0.8, 0.82], 30)
    assert B.sample_entropy(rng.normal(size=60)) > B.sample_entropy(regular + rng.normal(0, 1e-3, 60))
