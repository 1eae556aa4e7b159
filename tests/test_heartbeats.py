"""The numpy R-peak detector against sleepecg on real records, its edge cases, and the description text."""

import re

import numpy as np
import pytest

from edge_tslm.data import physionet2017 as p17
from edge_tslm.heartbeats import beat_features, describe_beats, describe_rhythm, detect_r_peaks, rhythm_features
from edge_tslm.prompts import build_model_input
from edge_tslm.signals import SignalMeta, resample, validate


def _beat_f1(ref: np.ndarray, got: np.ndarray, tol: int) -> float:
    if ref.size == 0 or got.size == 0:
        return float(ref.size == got.size)
    tp = int((np.abs(ref[:, None] - got[None, :]).min(axis=1) <= tol).sum())
    return 2 * tp / (ref.size + got.size)


def _synthetic_ecg(rr_s: np.ndarray, fs: float, noise: float = 0.02, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian QRS spikes at the given RR intervals (first beat at 0.5 s) + small T waves + noise."""
    beats = np.round((0.5 + np.concatenate([[0.0], np.cumsum(rr_s)])) * fs).astype(int)
    n = int(beats[-1] + fs)
    t = np.arange(n)
    x = np.zeros(n)
    for b in beats:
        x += np.exp(-0.5 * ((t - b) / (0.012 * fs)) ** 2) + 0.25 * np.exp(-0.5 * ((t - b - 0.25 * fs) / (0.05 * fs)) ** 2)
    x += noise * np.random.default_rng(seed).standard_normal(n)
    return x, beats


def test_finds_every_beat_of_a_synthetic_ecg_at_several_rates():
    rng = np.random.default_rng(1)
    for fs in (150.0, 300.0, 500.0):
        rr = rng.uniform(0.35, 1.2, size=40)  # 50-170 bpm, irregular
        x, beats = _synthetic_ecg(rr, fs)
        got = detect_r_peaks(x, fs)
        assert _beat_f1(beats, got, int(0.03 * fs)) == 1.0, fs
        f = rhythm_features(x, fs)
        rr_true = np.diff(beats) / fs
        assert f.n_beats == beats.size
        assert abs(f.heart_rate_bpm - 60 / rr_true.mean()) < 0.5
        assert abs(f.rr_cv - rr_true.std() / rr_true.mean()) < 0.01


def test_inverted_lead_gives_the_same_beats():
    x, beats = _synthetic_ecg(np.full(20, 0.8), 300.0)
    assert _beat_f1(beats, detect_r_peaks(-x, 300.0), 9) == 1.0


def test_regular_vs_irregular_rhythm_numbers():
    fs = 150.0
    reg = rhythm_features(_synthetic_ecg(np.full(30, 0.8), fs)[0], fs)
    irr = rhythm_features(_synthetic_ecg(np.random.default_rng(3).uniform(0.4, 1.0, 30), fs)[0], fs)
    assert reg.rr_cv < 0.02 and reg.rr_jump_frac == 0.0
    assert irr.rr_cv > 0.15 and irr.rr_jump_frac > 0.5


@pytest.mark.parametrize(
    "x",
    [np.zeros(3000), np.full(3000, 0.7), np.random.default_rng(0).standard_normal(100), np.full(3000, np.nan)],
    ids=["zeros", "flat", "too_short", "all_nan"],
)
def test_no_beats_without_an_ecg_and_no_exception(x):
    assert detect_r_peaks(x, 150.0).size == 0
    assert describe_rhythm(x, 150.0) == "0 beats detected"


def test_nan_gap_inside_a_window_is_survived():
    x, beats = _synthetic_ecg(np.full(30, 0.8), 150.0)
    x[600:900] = np.nan
    got = detect_r_peaks(x, 150.0)
    outside = beats[(beats < 590) | (beats > 910)]
    assert _beat_f1(outside, got[(got < 590) | (got > 910)], 5) == 1.0


def test_description_text_states_the_measured_numbers():
    fs = 150.0
    x, _ = _synthetic_ecg(np.random.default_rng(4).uniform(0.5, 1.0, 30), fs)
    f = rhythm_features(x, fs)
    text = describe_rhythm(x, fs)
    m = re.fullmatch(r"rate (\d+) bpm, RR CV (\d+) %, RR jumps (\d+) %", text)
    assert m, text
    assert [int(v) for v in m.groups()] == [round(f.heart_rate_bpm), round(100 * f.rr_cv), round(100 * f.rr_jump_frac)]
    mi = build_model_input(validate(x[None].astype(np.float32), SignalMeta(fs=fs, unit="mV", channels=("ECG",)), "Rhythm?"), features="rr")
    assert f", {text} <ts>" in mi.text
    plain = build_model_input(validate(x[None].astype(np.float32), SignalMeta(fs=fs, unit="mV", channels=("ECG",)), "Rhythm?"))
    assert "bpm" not in plain.text
    with pytest.raises(ValueError, match="series_features"):
        build_model_input(validate(x[None].astype(np.float32), SignalMeta(fs=fs, unit="mV", channels=("ECG",)), "R?"), features="qt")


@pytest.mark.skipif(p17.default_path() is None, reason="PhysioNet 2017 data not found (../shared/data/physionet2017)")
def test_agrees_with_sleepecg_on_real_normal_records_at_the_model_rate():
    sleepecg = pytest.importorskip("sleepecg")
    recs = [r for r in p17.split_records("test") if r.code == "N"][:12]
    scores = []
    for r in recs:
        x = r.load()
        ref = sleepecg.detect_heartbeats(x[0].astype(np.float64), p17.FS)
        got = detect_r_peaks(resample(x, p17.FS, 150.0)[0], 150.0) * 2  # the model's rate, back to 300 Hz samples
        scores.append(_beat_f1(ref, got, int(0.05 * p17.FS)))
    assert np.median(scores) >= 0.98, scores
    assert min(scores) >= 0.8, scores


def test_unknown_series_features_in_a_config_is_refused_on_load():
    from edge_tslm.config import TSLMConfig

    with pytest.raises(ValueError, match="series_features 'RR' is unknown"):
        TSLMConfig.from_dict({"series_features": "RR"})
    assert TSLMConfig.from_dict({"series_features": "rr"}).series_features == "rr"


def _shaped_ecg(n_beats: int, fs: float, *, p_amp: float = 0.15, qrs_sigma_s: float = 0.012, odd_every: int = 0,
                rr_s: float = 0.8, noise: float = 0.005, seed: int = 0) -> np.ndarray:
    """Regular beats with a P wave 160 ms before R, a QRS of the given width and a T wave; every `odd_every`-th
    beat is an ectopic one (wide, inverted, no P wave)."""
    n = int((n_beats * rr_s + 1.0) * fs)
    t = np.arange(n) / fs
    x = np.zeros(n)
    for k in range(n_beats):
        r = 0.5 + k * rr_s
        g = lambda c, s: np.exp(-0.5 * ((t - c) / s) ** 2)  # noqa: E731
        if odd_every and k % odd_every == odd_every - 1:
            x += -1.5 * g(r, 0.025)
        else:
            x += p_amp * g(r - 0.16, 0.02) + g(r, qrs_sigma_s) + 0.25 * g(r + 0.25, 0.05)
    return x + noise * np.random.default_rng(seed).standard_normal(n)


def test_beat_features_see_the_p_wave_ectopic_beats_and_qrs_width():
    fs = 150.0
    normal = beat_features(_shaped_ecg(30, fs), fs)
    assert normal.n_beats >= 28
    assert normal.beat_match > 0.99 and normal.odd_beat_frac == 0.0
    assert 0.10 < normal.p_wave_ratio < 0.20  # the P wave is 15 % of the QRS
    assert normal.residual < 0.02
    no_p = beat_features(_shaped_ecg(30, fs, p_amp=0.0), fs)
    assert no_p.p_wave_ratio < 0.04 < normal.p_wave_ratio
    ectopic = beat_features(_shaped_ecg(30, fs, odd_every=5), fs)
    assert 0.15 <= ectopic.odd_beat_frac <= 0.25  # 1 beat in 5
    wide = beat_features(_shaped_ecg(30, fs, qrs_sigma_s=0.03), fs)
    assert 40 <= normal.qrs_ms <= 80 and wide.qrs_ms > normal.qrs_ms + 50


def test_rr_range_flags_a_premature_beat():
    fs = 150.0
    rr = np.full(30, 0.8)
    rr[10], rr[11] = 0.45, 1.15  # a premature beat, then the compensatory pause
    f = rhythm_features(_synthetic_ecg(rr, fs)[0], fs)
    assert abs(f.rr_min_ratio - 0.45 / 0.8) < 0.03 and abs(f.rr_max_ratio - 1.15 / 0.8) < 0.03
    reg = rhythm_features(_synthetic_ecg(np.full(30, 0.8), fs)[0], fs)
    assert abs(reg.rr_min_ratio - 1.0) < 0.03 and abs(reg.rr_max_ratio - 1.0) < 0.03


def test_describe_beats_states_the_measured_numbers():
    fs = 150.0
    x = _shaped_ecg(30, fs, odd_every=5)
    text = describe_beats(x, fs)
    m = re.fullmatch(r"rate (\d+) bpm, RR CV (\d+) %, RR jumps (\d+) %, RR (\d+)-(\d+) %, beat match (\d+) %, "
                     r"odd beats (\d+) %, P wave (\d+) %, residual (\d+) %, QRS (\d+) ms", text)
    assert m, text
    r, b = rhythm_features(x, fs), beat_features(x, fs)
    assert text.startswith(describe_rhythm(x, fs))
    assert int(m[4]) == round(100 * r.rr_min_ratio) and int(m[5]) == round(100 * r.rr_max_ratio)
    assert [int(m[i]) for i in (6, 7, 8, 9, 10)] == [round(100 * b.beat_match), round(100 * b.odd_beat_frac),
                                                      round(100 * b.p_wave_ratio), round(100 * b.residual), round(b.qrs_ms)]
    assert describe_beats(np.zeros(int(10 * fs)), fs) == "0 beats detected"  # a flat line: no shape numbers


def test_beats_layout_goes_into_the_model_text():
    fs = 150.0
    x = _shaped_ecg(20, fs)[None, :].astype(np.float32)
    inp = validate(x, SignalMeta(fs=fs, unit="mV", channels=("ECG",)), "What is the rhythm?")
    assert describe_beats(x[0], fs) in build_model_input(inp, features="beats").text
    with pytest.raises(ValueError, match="series_features"):
        build_model_input(inp, features="morphology")


def test_untrusted_stretch_is_left_out_of_the_rr_numbers():
    """A filled gap (a straight line where beats were) makes one long RR and a jump; excluding the
    stretch gives back the clean rhythm's numbers, and nothing changes where nothing is excluded."""
    fs = 150.0
    x, beats = _synthetic_ecg(np.full(30, 0.8), fs)
    clean = rhythm_features(x, fs)
    holed = x.copy()
    a, b = 1000, 1200  # 1.3 s: at least one beat inside
    assert ((beats >= a) & (beats < b)).any()
    holed[a:b] = np.linspace(holed[a - 1], holed[b], b - a)  # what the stream's interpolation writes
    broken = rhythm_features(holed, fs)
    assert broken.rr_jump_frac > 0 and broken.rr_cv > 0.1  # the hole reads as an irregular rhythm
    exclude = np.zeros(holed.size, dtype=bool)
    exclude[a:b] = True
    fixed = rhythm_features(holed, fs, exclude)
    assert fixed.rr_jump_frac == 0.0 and fixed.rr_cv < 0.02
    assert abs(fixed.heart_rate_bpm - clean.heart_rate_bpm) < 0.5
    assert fixed.n_beats < clean.n_beats  # beats in and beside the hole are not counted
    assert rhythm_features(x, fs, np.zeros(x.size, dtype=bool)) == clean
    assert describe_rhythm(holed, fs, exclude) == describe_rhythm(x, fs)
    assert describe_beats(holed, fs, exclude).startswith(describe_rhythm(x, fs))
    with pytest.raises(ValueError, match="one per sample"):
        rhythm_features(holed, fs, exclude[:-1])


def test_untrusted_mask_reaches_the_model_text():
    fs = 150.0
    x, _ = _synthetic_ecg(np.full(30, 0.8), fs)
    x[1000:1200] = np.linspace(x[999], x[1200], 200)
    inp = validate(x[None].astype(np.float32), SignalMeta(fs=fs, unit="mV", channels=("ECG",)), "Which rhythm?")
    mask = np.zeros((1, x.size), dtype=bool)
    mask[0, 1000:1200] = True
    plain = build_model_input(inp, features="rr").text
    masked = build_model_input(inp, features="rr", untrusted=mask).text
    assert "RR jumps 0 %" in masked and "RR jumps 0 %" not in plain
    with pytest.raises(ValueError, match="one flag per sample"):
        build_model_input(inp, features="rr", untrusted=mask[:, :-1])
