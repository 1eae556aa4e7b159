"""evaluate(): invalid generations count wrong (never right), the metric keys of both paths, the ECG score."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import build_tiny  # noqa: E402
from edge_tslm.data.physionet2017 import ECG_TASK  # noqa: E402
from edge_tslm.data.sample import Sample  # noqa: E402
from edge_tslm.evaluate import evaluate, predict  # noqa: E402
from edge_tslm.signals import SignalMeta  # noqa: E402

LABELS = ECG_TASK.labels  # normal, atrial fibrillation, other rhythm, noisy
TRUTH = ["normal", "normal", "atrial fibrillation", "other rhythm", "noisy", "normal"]


def samples(truth=TRUTH, length: int = 96) -> list[Sample]:
    rng = np.random.default_rng(7)
    meta = SignalMeta(fs=300.0, unit="mV", channels=("ECG",))
    return [
        Sample(rng.standard_normal((1, length)).astype(np.float32), meta, ECG_TASK.question, lab, f"Answer: {lab}", "ecg_rhythm", f"r{i}")
        for i, lab in enumerate(truth)
    ]


@pytest.fixture(scope="module")
def model():
    return build_tiny("flamingo", labels=LABELS, task="ecg_rhythm", pre_prompt=ECG_TASK.pre_prompt)


def with_generate(model, monkeypatch, fn):
    monkeypatch.setattr(model, "generate", lambda text, series, **kw: fn(text))
    return model


@pytest.mark.parametrize("garbage", ["", "normal", "I think it is normal.", "Answer:", "Answer: sinus-ish", "Answer: normally"])
def test_garbage_generation_is_invalid_and_wrong(model, monkeypatch, garbage):
    with_generate(model, monkeypatch, lambda text: garbage)
    pred, scores, text = predict(model, samples()[0], LABELS, mode="generate")
    assert pred is None and scores == {} and text == garbage
    rep = evaluate(model, samples(), LABELS, mode="generate", task="ecg_rhythm")
    assert rep["n"] == len(TRUTH) and rep["n_invalid"] == len(TRUTH)
    assert rep["accuracy"] == 0.0 and rep["macro_f1"] == 0.0
    assert all(v == 0.0 for v in rep["per_class_f1"].values())
    assert np.asarray(rep["confusion"]).sum() == 0  # an invalid answer lands in no column, never the true one
    assert rep["challenge_score"] == 0.0


def test_valid_generations_are_scored_and_invalid_ones_only_lower_the_score(model, monkeypatch):
    answers = iter(["Answer: normal", "garbage", "Answer: atrial fibrillation", "Answer: normal", "", "Answer: Normal."])
    with_generate(model, monkeypatch, lambda text: next(answers))
    rep = evaluate(model, samples(), LABELS, mode="generate", task="ecg_rhythm")
    # truth:  normal  normal   AF  other   noisy  normal
    # pred:   normal  <inv>    AF  normal  <inv>  normal
    assert rep["n_invalid"] == 2
    assert rep["accuracy"] == pytest.approx(3 / 6)
    cm = np.asarray(rep["confusion"])
    assert cm.shape == (4, 4) and cm.sum() == 4
    assert cm[0, 0] == 2 and cm[1, 1] == 1 and cm[2, 0] == 1
    f1 = rep["per_class_f1"]
    assert f1["normal"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert f1["atrial fibrillation"] == 1.0 and f1["other rhythm"] == 0.0 and f1["noisy"] == 0.0
    assert rep["challenge_score"] == pytest.approx((f1["normal"] + 1.0 + 0.0) / 3)
    assert "predictions" not in rep  # kept only when asked (the CLI's --json stays the metrics)


def test_kept_predictions_give_the_report_s_scores(model, monkeypatch):
    from edge_tslm.score_intervals import score

    answers = iter(["Answer: normal", "garbage", "Answer: atrial fibrillation", "Answer: normal", "", "Answer: Normal."])
    with_generate(model, monkeypatch, lambda text: next(answers))
    rep = evaluate(model, samples(), LABELS, mode="generate", task="ecg_rhythm", keep_predictions=True)
    pred = rep["predictions"]
    assert pred["ids"] == [f"r{i}" for i in range(6)] and pred["labels"] == list(LABELS)
    assert pred["pred"] == [0, -1, 1, 0, -1, 0]  # an invalid answer is -1, never a label
    assert score(pred, "challenge") == pytest.approx(rep["challenge_score"])
    assert score(pred, "macro_f1") == pytest.approx(rep["macro_f1"])
    assert score(pred, "accuracy") == pytest.approx(rep["accuracy"])


def test_classify_metrics_keys_for_ecg_rhythm(model):
    rep = evaluate(model, iter(samples()), LABELS, mode="classify", task="ecg_rhythm", limit=5)  # any iterable
    for key in ("macro_f1", "accuracy", "per_class_f1", "confusion", "challenge_score", "n_invalid", "n", "labels"):
        assert key in rep, key
    assert rep["mode"] == "classify" and rep["n"] == 5 and rep["n_invalid"] == 0
    assert set(rep["per_class_f1"]) == set(LABELS)
    cm = np.asarray(rep["confusion"])
    assert cm.shape == (4, 4) and cm.sum() == 5  # the classify path always names an allowed label
    assert 0.0 <= rep["macro_f1"] <= 1.0 and 0.0 <= rep["challenge_score"] <= 1.0
    assert rep["accuracy"] == pytest.approx(np.trace(cm) / 5)


def test_classify_predicts_the_most_likely_label(model):
    s = samples()[2]
    pred, scores, text = predict(model, s, LABELS, mode="classify")
    assert set(scores) == set(LABELS) and text == ""
    assert pred == max(scores, key=scores.get)
    assert all(np.isfinite(v) and v <= 0 for v in scores.values())  # log-likelihoods


def test_no_challenge_score_outside_ecg(model):
    rep = evaluate(model, samples()[:2], LABELS, mode="classify", task="har")
    assert "challenge_score" not in rep


def test_unknown_mode_is_refused(model):
    with pytest.raises(ValueError, match="mode"):
        evaluate(model, samples()[:1], LABELS, mode="beam")
