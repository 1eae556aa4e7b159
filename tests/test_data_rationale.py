"""Every number a rationale states is recomputed from that sample's signal.

Numbers are parsed out of the text in order and compared, as strings, with
`format_number` of an independent recomputation (plain numpy here from the detected beats, not
the rationale module), so a rationale can state nothing its signal does not show.
"""

import re

import numpy as np
import pytest

from edge_tslm.data import hapt
from edge_tslm.data import physionet2017 as p17
from edge_tslm.data import rationale as R
from edge_tslm.data.synthetic import synthetic_ecg_samples, tsqa_samples
from edge_tslm.prompts import answer_text, format_number

NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?|\bnan\b|\binf\b")


def stated_numbers(rationale: str, label: str) -> list[str]:
    body = rationale
    assert body.endswith(answer_text(label))
    body = body[: -len(answer_text(label))]
    return NUMBER.findall(body)


def expected_har(sig: np.ndarray, fs: float) -> list[float]:
    x = sig.astype(np.float64)
    means = list(x.mean(axis=1))
    mag = np.sqrt((x**2).sum(0))
    std = mag.std()
    out = means + [std]
    if std >= 0.03:  # the text names the rhythm only when the body moves
        spec = np.abs(np.fft.rfft(mag - mag.mean()))
        out.append(np.fft.rfftfreq(mag.size, 1 / fs)[1 + np.argmax(spec[1:])])
    return out


def expected_ecg(sig: np.ndarray, fs: float) -> list[float]:
    from edge_tslm.heartbeats import detect_r_peaks  # the beats; the numbers from them are recomputed here

    x = sig[0].astype(np.float64)
    peaks = detect_r_peaks(x, fs)
    out = [x.size / fs, len(peaks)]
    if len(peaks) >= 3:
        rr = np.diff(peaks) / fs
        jumps = 100 * np.mean(np.abs(np.diff(rr)) > 0.1 * rr[:-1])
        out += [60 / rr.mean(), rr.std() / rr.mean(), 1000 * np.sqrt(np.mean(np.diff(rr) ** 2)), jumps, 10]
    return out


def expected_tsqa(sig: np.ndarray, task: str) -> list[float]:
    x = sig[0].astype(np.float64)
    if task == "tsqa_trend":
        t = np.arange(x.size)
        slope, icpt = np.polyfit(t, x, 1)
        rs = (x - slope * t - icpt).std()
        change = slope * (x.size - 1)
        return [x.size, abs(change), slope, rs, abs(change) / rs]
    if task == "tsqa_seasonality":
        d = x - np.polyval(np.polyfit(np.arange(x.size), x, 1), np.arange(x.size))
        p = np.abs(np.fft.rfft(d)) ** 2
        p[0] = 0
        k = 1 + np.argmax(p[1:])
        return [x.size / k, p[k] / p.sum()]
    if task == "tsqa_level_shift":
        f = R.shift_features(x)
        w = x.size // 8
        jump = np.median(x[f.position : f.position + w]) - np.median(x[f.position - w : f.position])
        diff = np.diff(x)
        noise = 1.4826 * np.median(np.abs(diff - np.median(diff))) / np.sqrt(2)
        return [jump, f.position, abs(jump) / noise, noise]
    if task == "tsqa_spike":
        f = R.spike_features(x)
        return [f.position, x[f.position], f.score]
    raise AssertionError(task)


def check(rationale: str, label: str, expected: list[float]) -> None:
    assert stated_numbers(rationale, label) == [format_number(float(v)) for v in expected], rationale


def test_tsqa_rationale_numbers():
    for s in tsqa_samples(40, seed=5):
        check(s.rationale, s.label, expected_tsqa(s.signal, s.task))


def test_synthetic_ecg_rationale_numbers():
    for s in synthetic_ecg_samples(6, seed=2, duration_s=15.0):
        check(s.rationale, s.label, expected_ecg(s.signal, s.meta.fs))


@pytest.mark.skipif(hapt.find_hapt_pickle() is None, reason="HAPT.pkl.gz not installed")
def test_hapt_rationale_numbers():
    windows = hapt.hapt_windows("test")
    for s in windows[:: max(1, len(windows) // 60)]:
        check(s.rationale, s.label, expected_har(s.signal, s.meta.fs))


@pytest.mark.skipif(p17.default_path() is None, reason="PhysioNet 2017 data not found")
def test_physionet_rationale_numbers():
    for rec in p17.split_records("test")[:15]:
        s = rec.sample()
        check(s.rationale, s.label, expected_ecg(s.signal, s.meta.fs))


def test_uci_har_fixture_rationale(tmp_path):
    # A still window: no rhythm stated.
    sig = np.tile(np.array([[0.1], [0.2], [0.97]], dtype=np.float32), (1, 128))
    text = R.har_rationale(sig, 50.0, ("x", "y", "z"), "g", "lying")
    check(text, "lying", expected_har(sig, 50.0))
    assert "+z" in text
