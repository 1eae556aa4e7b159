"""Bootstrap intervals of test scores: the scores equal edge_tslm.metrics', intervals hold the score and narrow with
more records, paired differences see a real improvement, and evaluations of other records are never paired."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_tslm.metrics import accuracy, challenge_score, macro_f1, per_class_f1
from edge_tslm.score_intervals import check_paired, difference, interval, prediction_record, score

LABELS = ["normal", "atrial fibrillation", "other rhythm", "noisy"]


def _fake(n: int, right: float, seed: int = 0, invalid: float = 0.0):
    rng = np.random.default_rng(seed)
    true = [LABELS[i] for i in rng.choice(4, n, p=[0.6, 0.1, 0.25, 0.05])]
    pred = []
    for t in true:
        u = rng.random()
        pred.append("<invalid>" if u < invalid else t if u < invalid + right else LABELS[rng.integers(4)])
    return [f"A{i:05d}" for i in range(n)], true, pred


def test_scores_are_the_metrics_module_s():
    ids, true, pred = _fake(400, 0.7, invalid=0.05)
    rec = prediction_record(ids, true, pred, LABELS)
    assert score(rec, "challenge") == pytest.approx(challenge_score(true, pred, all_labels=LABELS + ["<invalid>"]))
    assert score(rec, "macro_f1") == pytest.approx(macro_f1(true, pred, LABELS))
    assert score(rec, "af_f1") == pytest.approx(per_class_f1(true, pred, LABELS)["atrial fibrillation"])
    assert score(rec, "accuracy") == pytest.approx(accuracy(true, pred))
    with pytest.raises(ValueError, match="unknown metric"):
        score(rec, "f2")
    har = prediction_record(["s1"], ["walking"], ["walking"], ["walking", "sitting"])
    with pytest.raises(ValueError, match="challenge score needs"):
        score(har, "challenge")


def test_interval_holds_the_score_and_narrows_with_more_records():
    small = prediction_record(*_fake(150, 0.75, seed=1), LABELS)
    large = prediction_record(*_fake(3000, 0.75, seed=1), LABELS)
    a, b = interval(small, "accuracy", n_resamples=400), interval(large, "accuracy", n_resamples=400)
    assert a["low"] <= a["score"] <= a["high"] and b["low"] <= b["score"] <= b["high"]
    assert b["high"] - b["low"] < 0.5 * (a["high"] - a["low"])  # ~ 1 / sqrt(n): 20x the records, ~4.5x narrower
    assert interval(small, "accuracy", n_resamples=400) == a  # seeded


def test_paired_difference_sees_a_fix_the_unpaired_intervals_overlap_on():
    ids, true, pred = _fake(600, 0.7, seed=2)
    wrong = [i for i, (t, p) in enumerate(zip(true, pred)) if t != p]
    better = list(pred)
    for i in wrong[:25]:  # b fixes 25 of a's errors and changes nothing else
        better[i] = true[i]
    a, b = prediction_record(ids, true, pred, LABELS), prediction_record(ids, true, better, LABELS)
    ia, ib = interval(a, "accuracy", n_resamples=500), interval(b, "accuracy", n_resamples=500)
    assert ib["low"] < ia["high"]  # unpaired, the two intervals overlap
    d = difference(a, b, "accuracy", n_resamples=500)
    assert d["difference"] == pytest.approx(25 / 600)
    assert d["low"] > 0 and d["b_above_share"] == 1.0  # paired, the fix is never undone by a resample
    same = difference(a, a, "challenge", n_resamples=200)
    assert same["difference"] == same["low"] == same["high"] == 0.0 and same["b_above_share"] == 0.0


def test_other_records_are_never_paired():
    ids, true, pred = _fake(50, 0.8, seed=3)
    a = prediction_record(ids, true, pred, LABELS)
    shuffled = prediction_record(ids[::-1], true[::-1], pred[::-1], LABELS)  # the same records in another order
    with pytest.raises(ValueError, match="not of the same records"):
        check_paired(a, shuffled)
    with pytest.raises(ValueError, match="not of the same records"):
        difference(a, prediction_record(*_fake(50, 0.8, seed=4), LABELS), "accuracy")
    with pytest.raises(ValueError, match="not among the labels"):
        prediction_record(["x"], ["sinus"], ["normal"], LABELS)
    with pytest.raises(ValueError, match="same length"):
        prediction_record(["x", "y"], ["normal"], ["normal"], LABELS)


def _script():
    from conftest import load_script

    return load_script("benchmarks/score_intervals.py")


def test_benchmark_groups_results_by_records_and_states_the_goals(tmp_path):
    ids, true, pred = _fake(300, 0.9, seed=5)
    tslm = {"task": "ecg_rhythm", "split": "test", "predictions": prediction_record(ids, true, pred, LABELS)}
    base = {"result": {"task": "ecg", "test": {"predictions": prediction_record(ids, true, true, LABELS)}}}
    (tmp_path / "tslm.json").write_text(json.dumps(tslm))
    (tmp_path / "baseline.json").write_text(json.dumps(base))
    out = tmp_path / "ci.json"
    _script().main([str(tmp_path / "tslm.json"), str(tmp_path / "baseline.json"), "--resamples", "200", "--out", str(out)])
    res = json.loads(out.read_text())
    (g,) = res["groups"]
    assert g["task"] == "ecg_rhythm" and g["n"] == 300 and set(g["models"]) == {"tslm", "baseline"}
    assert g["models"]["baseline"]["challenge"]["score"] == 1.0
    (pair,) = g["pairs"]
    assert pair["challenge"]["difference"] > 0 and pair["challenge"]["b_above_share"] == 1.0  # baseline − tslm
    md = out.with_suffix(".md").read_text()
    assert "| baseline | ecg_rhythm | 1.0000 [1.0000, 1.0000] | met |" in md
    _script().main([f"named={tmp_path / 'tslm.json'}", "--resamples", "200", "--out", str(out)])
    assert set(json.loads(out.read_text())["groups"][0]["models"]) == {"named"}
    with pytest.raises(SystemExit, match="name them apart"):
        _script().main([str(tmp_path / "tslm.json"), str(tmp_path / "tslm.json"), "--resamples", "200", "--out", str(out)])
    with pytest.raises(SystemExit, match="no such results file"):
        _script().main([str(tmp_path / "absent.json")])
    (tmp_path / "old.json").write_text(json.dumps({"metrics": {}, "command": "python benchmarks/eval_tslm.py --model m"}))
    with pytest.raises(SystemExit, match="eval_tslm.py --model m"):
        _script().main([str(tmp_path / "old.json")])
    with pytest.raises(SystemExit):
        _script().main([str(tmp_path / "tslm.json"), "--resamples", "10"])
