"""Label offsets: the fit raises the score it is asked to, the metrics agree with edge_tslm.metrics, the config
validates them, both classify paths add them, and `edge-tslm calibrate` stores them with a true manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_tslm.calibration import CalibrationConfig, apply_offsets, f1_per_class, fit_label_offsets, objective_for
from edge_tslm.config import TSLMConfig
from edge_tslm.metrics import challenge_score, per_class_f1

ECG = ("normal", "atrial fibrillation", "other rhythm", "noisy")


def biased_scores(rng, n=400, bias=(0.0, -2.0, -1.5, 0.5), p=(0.55, 0.15, 0.22, 0.08)):
    """(N, 4) log-likelihoods whose argmax is right for most records once a known per-class bias is removed."""
    y = rng.choice(4, size=n, p=list(p))
    s = rng.normal(0, 1.0, (n, 4))
    s[np.arange(n), y] += 2.5
    return s + np.asarray(bias), y


def test_f1_and_objectives_match_the_shared_metrics():
    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    names_y, names_p = [ECG[i] for i in y], [ECG[i] for i in pred]
    ref = per_class_f1(names_y, names_p, ECG)
    assert f1_per_class(y, pred, 4) == pytest.approx([ref[c] for c in ECG])
    assert objective_for(ECG, "ecg_rhythm")(y, pred) == pytest.approx(challenge_score(names_y, names_p, all_labels=list(ECG)))
    assert objective_for(("a", "b", "c"), "har")(y % 3, pred % 3) == pytest.approx(np.mean(f1_per_class(y % 3, pred % 3, 3)))


def test_fit_removes_a_known_bias_and_raises_the_score():
    rng = np.random.default_rng(1)
    scores, y = biased_scores(rng)
    obj = objective_for(ECG, "ecg_rhythm")
    off = fit_label_offsets(scores, y, obj)
    assert off[0] == 0.0  # the first label is the reference
    before, after = obj(y, scores.argmax(1)), obj(y, (scores + off).argmax(1))
    assert after > before + 0.05, (before, after)
    # the offsets push back against the bias that was put in: up for the two classes scored 2 and 1.5 too low
    assert off[1] > 0.5 and off[2] > 0.5, off
    # and they carry over to fresh records drawn the same way (not only the ones they were fitted on)
    fresh, yf = biased_scores(np.random.default_rng(2))
    assert obj(yf, (fresh + off).argmax(1)) > obj(yf, fresh.argmax(1))


def test_fit_on_unbiased_balanced_scores_stays_near_zero():
    rng = np.random.default_rng(3)
    scores, y = biased_scores(rng, n=4000, bias=(0, 0, 0, 0), p=(0.25, 0.25, 0.25, 0.25))
    off = fit_label_offsets(scores, y, objective_for(("a", "b", "c", "d"), "har"), CalibrationConfig(step=0.1))
    assert np.abs(off).max() <= 0.3, off


@pytest.mark.parametrize("bad, msg", [
    (np.full((3, 4), np.nan), "NaN"),
    (np.zeros((3,)), "(N, C)"),
])
def test_fit_refuses_bad_scores(bad, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        fit_label_offsets(bad, np.zeros(3, np.int64), objective_for(ECG, "ecg_rhythm"))


def test_fit_refuses_out_of_range_classes():
    with pytest.raises(ValueError, match="true classes"):
        fit_label_offsets(np.zeros((2, 4)), np.array([0, 4]), objective_for(ECG, "ecg_rhythm"))


@pytest.mark.parametrize("bad", [dict(step=0.0), dict(span=-1.0), dict(coarse_step=-0.5), dict(rounds=0)])
def test_calibration_config_refuses_empty_or_endless_grids(bad):
    with pytest.raises(ValueError, match="CalibrationConfig needs"):
        CalibrationConfig(**bad)


def test_challenge_objective_needs_the_challenge_labels():
    with pytest.raises(ValueError, match="challenge score needs"):
        objective_for(("normal", "abnormal"), "ecg_rhythm")


def test_apply_offsets_by_label_name():
    got = apply_offsets({"noisy": -1.0, "normal": -2.0}, ECG, (0.0, 1.0, 2.0, 3.0))
    assert got == {"noisy": 2.0, "normal": -2.0}
    assert apply_offsets({"normal": -2.0}, ECG, ()) == {"normal": -2.0}


def test_config_validates_and_round_trips_offsets():
    cfg = TSLMConfig(labels=ECG, task="ecg_rhythm", label_offsets=(0.0, 1.5, 0.7, -0.2))
    assert TSLMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="label_offsets has 2 values for 4 labels"):
        TSLMConfig(labels=ECG, task="ecg_rhythm", label_offsets=(0.0, 1.0))


def test_both_classify_paths_add_the_offsets(tmp_path):
    torch = pytest.importorskip("torch")
    from conftest import build_tiny, series_of, ts_text

    model = build_tiny("flamingo", labels=ECG, task="ecg_rhythm")
    series = series_of(np.random.default_rng(0), 64)
    text = ts_text(1)
    with torch.no_grad():
        raw = model.classify(text, series, list(ECG))
        model.cfg = model.cfg.replace(label_offsets=(0.0, 3.0, -1.0, 0.5))
        got = model.classify(text, series, list(ECG))
    assert got == pytest.approx({lab: raw[lab] + o for lab, o in zip(ECG, (0.0, 3.0, -1.0, 0.5))})
    # a subset of labels in another order still gets each label's own offset
    with torch.no_grad():
        sub = model.classify(text, series, ["noisy", "atrial fibrillation"])
    assert sub["noisy"] - got["noisy"] == pytest.approx(0, abs=1e-5)
    assert sub["atrial fibrillation"] - got["atrial fibrillation"] == pytest.approx(0, abs=1e-5)


def test_append_run_replaces_the_run_with_the_same_key(tmp_path):
    from edge_tslm.results import append_run

    path = tmp_path / "r" / "runs.json"
    append_run(path, {"model": "a", "v": 1}, key="model", what="w")
    append_run(path, {"model": "b", "v": 2}, key="model", what="w")
    rows = append_run(path, {"model": "a", "v": 3}, key="model", what="w")
    assert rows == [{"model": "b", "v": 2}, {"model": "a", "v": 3}]
    assert json.loads(path.read_text()) == {"what": "w", "runs": rows}
