"""Test doubles for the runtime: a deterministic numpy 'model' reading the scale written into the text.

FakeBackend is not a mock of hardware: it is a tiny classifier with the Backend interface, so the
runtime's logic (windows, quality, smoothing, events) is tested without any model. It labels a
window by the mean of the per-channel stds the runtime wrote into the description text, so it also
checks that the text carries the scale of the *raw* window.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from edge_tslm.runtime.backend import Backend, Encoded
from edge_tslm.runtime.events import SCHEMA, check_event, validate_event
from edge_tslm.signals import SignalMeta

STD = re.compile(r"std (-?[0-9.e+-]+)")


class FakeBackend:
    """labels[0] when the mean described std is >= threshold, labels[1] otherwise."""

    name = "fake"

    def __init__(self, labels=("walking", "sitting"), threshold=0.2, fs=50.0, max_seconds=0.0, min_length=4, task="har", fail_on=None,
                 series_features="", question_first=False, series_text="full"):
        self.labels = tuple(labels)
        self.series_features = series_features
        self.question_first = question_first
        self.series_text = series_text
        self.threshold = threshold
        self.fs = fs
        self.max_seconds = max_seconds
        self.min_length = min_length
        self.task = task
        self.question = ""
        self.fail_on = fail_on  # raise on the n-th classify call (0-based), to test error handling
        self.calls = {"encode": 0, "classify": 0, "generate": 0}
        self.seen_lengths: list[int] = []
        self.texts: list[str] = []

    def encode(self, series):
        self.calls["encode"] += 1
        self.seen_lengths.append(len(series[0]))
        assert all(np.isfinite(s).all() for s in series)
        return Encoded(series, value=np.stack(series).std())

    def classify(self, text, encoded, labels):
        n = self.calls["classify"]
        self.calls["classify"] += 1
        self.texts.append(text)
        if self.fail_on is not None and n == self.fail_on:
            raise RuntimeError("simulated backend failure")
        s = float(np.mean([float(v) for v in STD.findall(text)]))
        hi = 5.0 * (s - self.threshold)
        return {labels[0]: hi, labels[1]: -hi, **{lab: -20.0 for lab in labels[2:]}}

    def generate(self, text, encoded, max_new_tokens):
        self.calls["generate"] += 1
        assert "Explain briefly" in text
        return f"Measured stds {STD.findall(text)}. Answer: {self.labels[0]}"


def af_backend(**kw):
    return FakeBackend(labels=("atrial fibrillation", "normal"), fs=kw.pop("fs", 150.0), task="ecg_rhythm", **kw)


def test_fake_backend_satisfies_protocol():
    assert isinstance(FakeBackend(), Backend)


def test_rr_model_reads_the_measured_rhythm_in_every_window_and_rationale():
    """A model trained with series_features="rr" and question_first sees the window's heart rate and RR
    irregularity, computed on the window at the model's rate, after the question, in the classify text and in
    the rationale's text: the stream lays out the text as training did (train.examples.make_example)."""
    from edge_tslm.heartbeats import describe_rhythm
    from edge_tslm.runtime.stream import StreamConfig, Streamer
    from edge_tslm.signals import resample

    fs_in, fs_model, n = 300.0, 150.0, 30
    t = np.arange(int(2 * n * fs_in)) / fs_in
    x = (np.exp(-0.5 * (((t + 0.3) % 0.8 - 0.4) / 0.01) ** 2)).astype(np.float32)  # 75 bpm spikes
    be = af_backend(fs=fs_model, series_features="rr", question_first=True)
    cfg = StreamConfig(task="afib", window_s=n, hop_s=n, rationale_on="always", channels=("ECG",), unit="mV", check_events=True)
    st = Streamer(be, cfg, fs=fs_in)
    st.feed(x[None])
    st.finish()
    assert be.texts and be.calls["generate"] == len(be.texts)
    first = resample(x[None, : int(n * fs_in)], fs_in, fs_model)[0]
    expected = describe_rhythm(first, fs_model)
    assert expected.startswith("rate 75 bpm, RR CV 0 %, RR jumps 0 %"), expected
    assert all("rate 75 bpm" in text for text in be.texts)
    assert f", {expected} <ts>" in be.texts[0]
    assert be.texts[0].index("What is the heart rhythm?") < be.texts[0].index("ECG: 30 s")

    from edge_tslm.data.physionet2017 import ECG_TASK
    from edge_tslm.data.sample import Sample
    from edge_tslm.train.examples import make_example

    sample = Sample(x[None, : int(n * fs_in)], SignalMeta(fs=fs_in, unit="mV", channels=("ECG",)), ECG_TASK.question,
                    "normal", "Answer: normal", "ecg_rhythm", "r")
    assert make_example(sample, fs=fs_model, features="rr", question_first=True).text == be.texts[0]


def test_a_filled_hole_does_not_reach_the_rr_text():
    """A window with a short NaN hole is interpolated and flagged; its RR text is measured around the hole,
    so a regular rhythm still reads as regular (the interpolated line hides a beat: a long RR and a jump)."""
    from edge_tslm.runtime.stream import StreamConfig, Streamer

    fs, n = 150.0, 30
    t = np.arange(int(n * fs)) / fs
    x = (np.exp(-0.5 * (((t + 0.3) % 0.8 - 0.4) / 0.01) ** 2)).astype(np.float32)  # 75 bpm spikes
    x[1440:1500] = np.nan  # 0.4 s with the beat at 9.7 s inside, within the 0.5 s the stream interpolates
    be = af_backend(fs=fs, series_features="rr")
    st = Streamer(be, StreamConfig(task="afib", window_s=n, hop_s=n, channels=("ECG",), unit="mV", check_events=True), fs=fs)
    (ev,) = [e for e in st.feed(x[None]) + st.finish() if e["type"] == "window"]
    assert {"nan", "interpolated"} <= set(ev["quality"]["flags"]) and ev["answer"] is not None
    assert "rate 75 bpm, RR CV 0 %, RR jumps 0 %" in be.texts[0], be.texts[0]


class VectorBackend(FakeBackend):
    """A backend whose encoder measures a rhythm vector (OnnxBackend.reads_untrusted): records the flags it gets."""

    reads_untrusted = True

    def __init__(self, **kw):
        super().__init__(**kw)
        self.flags: list = []

    def encode(self, series, untrusted=None):
        self.flags.append(untrusted)
        return super().encode(series)


def test_a_filled_hole_reaches_a_vector_reading_backend_as_untrusted_samples():
    """The stream hands the window's untrusted flags (at the model's rate) to a backend that measures from the series."""
    from edge_tslm.runtime.stream import StreamConfig, Streamer

    fs, n = 150.0, 30
    t = np.arange(int(2 * n * fs)) / fs
    x = (np.exp(-0.5 * (((t + 0.3) % 0.8 - 0.4) / 0.01) ** 2)).astype(np.float32)
    x[1440:1500] = np.nan  # a 0.4 s hole in the first window, interpolated by the stream
    be = VectorBackend(labels=("atrial fibrillation", "normal"), fs=fs, task="ecg_rhythm")
    st = Streamer(be, StreamConfig(task="afib", window_s=n, hop_s=n, channels=("ECG",), unit="mV", check_events=True), fs=fs)
    wins = [e for e in st.feed(x[None]) + st.finish() if e["type"] == "window"]
    assert len(wins) == 2 and len(be.flags) == 2
    (first,), second = be.flags
    assert first.shape == (int(n * fs),) and first[1440:1500].all() and first.sum() < 200
    assert second is None  # a clean window: nothing to leave out


def test_schema_validator_accepts_and_rejects():
    good = {
        "type": "window", "index": 0, "start_s": 0.0, "end_s": 2.56, "answer": None, "scores": {}, "rationale": None,
        "quality": {"flags": ["unusable"], "usable": False, "missing_fraction": 0.5, "messages": ["x"]},
        "latency_ms": {"prepare": 0.1, "encode": 0.0, "classify": 0.0, "rationale": 0.0, "total": 0.1},
    }
    assert check_event(good) is good
    assert validate_event({**good, "index": 1.5})
    assert validate_event({**good, "scores": {"a": "high"}})
    assert validate_event({**good, "start_s": float("nan")})
    assert validate_event({k: v for k, v in good.items() if k != "latency_ms"})
    assert validate_event({**good, "latency_ms": {"total": 1.0}})
    assert validate_event({"type": "nope"})
    assert validate_event({**good, "answer": np.float32(1)})
    with pytest.raises(ValueError, match="index"):
        check_event({**good, "index": "0"})
    assert set(SCHEMA) >= {"start", "window", "segment", "episode", "burden", "warning", "source_issue", "error", "summary"}


class ScriptedBackend(FakeBackend):
    """Answers a fixed sequence of labels, one per classified window (for smoothing/episode logic)."""

    def __init__(self, script, labels=("atrial fibrillation", "normal"), **kw):
        kw.setdefault("fs", 0.0)
        kw.setdefault("task", "ecg_rhythm")
        super().__init__(labels=labels, **kw)
        self.script = list(script)

    def classify(self, text, encoded, labels):
        n = self.calls["classify"]
        self.calls["classify"] += 1
        want = self.script[n]
        return {lab: (0.0 if lab == want else -3.0) for lab in labels}


def test_short_text_model_reads_the_short_descriptions_it_was_trained_on():
    """A HAR model trained with series_text="short" and question_first: the stream's window text is
    make_example's text with that layout (no per-axis duration and rate, the question in the cached head)."""
    from edge_tslm.data.hapt import HAR_TASK
    from edge_tslm.data.sample import Sample
    from edge_tslm.runtime.stream import StreamConfig, Streamer
    from edge_tslm.train.examples import make_example

    fs, n = 50.0, 128
    x = (0.3 * np.sin(np.arange(4 * n) / 3.0)[None, :] + np.array([[1.0], [0.1], [-0.2]])).astype(np.float32)
    be = FakeBackend(labels=HAR_TASK.labels, fs=fs, question_first=True, series_text="short")
    cfg = StreamConfig(task="har", window_s=n / fs, hop_s=n / fs, channels=("x", "y", "z"), unit="g")
    st = Streamer(be, cfg, fs=fs)
    st.feed(x)
    st.finish()
    assert be.texts
    text = be.texts[0]
    assert text.startswith(HAR_TASK.question) and "x: mean 1" in text and " s at " not in text
    sample = Sample(x[:, :n], SignalMeta(fs=fs, unit="g", channels=("x", "y", "z")), HAR_TASK.question, "walking",
                    "Answer: walking", "har", "r")
    assert make_example(sample, fs=fs, question_first=True, series_text="short").text == text
