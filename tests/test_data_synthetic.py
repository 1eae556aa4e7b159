"""Synthetic TSQA and ECG: deterministic by seed, labels as asked, rationales consistent."""

import numpy as np

from edge_tslm.data import rationale as R
from edge_tslm.data.synthetic import (
    SYNTH_ECG_TASK,
    TSQA_TASKS,
    synthetic_ecg_samples,
    tsqa_sample,
    tsqa_samples,
)
from edge_tslm.prompts import answer_text


def test_tsqa_deterministic_and_prefix_stable():
    a = tsqa_samples(12, seed=3)
    b = tsqa_samples(20, seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.signal, y.signal)
        assert x.rationale == y.rationale and x.label == y.label
    c = tsqa_samples(12, seed=4)
    assert not all(np.array_equal(x.signal, y.signal) for x, y in zip(a, c))


def test_tsqa_labels_and_tasks():
    samples = tsqa_samples(80, seed=0)
    tasks = {s.task for s in samples}
    assert tasks == {t.name for t in TSQA_TASKS.values()}
    for s in samples:
        spec = next(t for t in TSQA_TASKS.values() if t.name == s.task)
        assert s.label in spec.labels and s.prompt == spec.question
        assert s.signal.shape == (1, 256) and s.signal.dtype == np.float32
        assert s.rationale.endswith(answer_text(s.label))
    trend = [s for s in samples if s.task == "tsqa_trend"]
    for s in trend:
        f = R.trend_features(s.signal[0])
        if s.label == "increasing":
            assert f.change > 0 and f.ratio > R.TREND_RATIO_CLEAR
        elif s.label == "decreasing":
            assert f.change < 0 and f.ratio > R.TREND_RATIO_CLEAR
        else:
            assert f.ratio < R.TREND_RATIO_FLAT


def test_tsqa_custom_length_and_questions():
    s = tsqa_sample(0, seed=0, length=128, questions=("spike",))
    assert s.signal.shape == (1, 128) and s.task == "tsqa_spike"


def test_synthetic_ecg_rhythms():
    samples = synthetic_ecg_samples(8, seed=0, fs=250.0, duration_s=20.0)
    assert [s.label for s in samples[:2]] == list(SYNTH_ECG_TASK.labels)
    for s in samples:
        assert s.signal.shape == (1, 5000) and s.meta.fs == 250.0
    cv = {lab: [R.ecg_features(s.signal, 250.0).rr_cv for s in samples if s.label == lab] for lab in SYNTH_ECG_TASK.labels}
    assert max(cv["normal"]) < 0.08 < min(cv["atrial fibrillation"])
    np.testing.assert_array_equal(samples[3].signal, synthetic_ecg_samples(4, seed=0, fs=250.0, duration_s=20.0)[3].signal)


def test_synthetic_af_has_fwaves_and_no_p_waves():
    from edge_tslm.baseline import ECG_FEATURE_NAMES, ecg_features

    s = synthetic_ecg_samples(10, seed=1)
    i = ECG_FEATURE_NAMES.index("resid_4-9_share")
    share = {lab: np.mean([ecg_features(x.signal, 300.0)[i] for x in s if x.label == lab]) for lab in SYNTH_ECG_TASK.labels}
    assert share["atrial fibrillation"] > share["normal"]
