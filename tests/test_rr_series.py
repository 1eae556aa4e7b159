"""The RR tachogram as a second series ("rr_series"): its values are the measured RR intervals, the text holds no
numbers, faults do not read as pauses, and the encoder encodes an ECG and its tachogram as if each were alone."""

import numpy as np
import pytest

from edge_tslm.heartbeats import TACHOGRAM_HZ, detect_r_peaks, rr_tachogram
from edge_tslm.length_groups import length_groups
from edge_tslm.prompts import build_model_input
from edge_tslm.signals import SignalMeta, validate
from test_heartbeats import _synthetic_ecg

FS = 150.0


def test_tachogram_holds_the_interval_in_progress_at_each_quarter_second():
    rr = np.random.default_rng(5).uniform(0.4, 1.1, size=30)  # irregular, 55-150 bpm
    x, beats = _synthetic_ecg(rr, FS)
    tach = rr_tachogram(x, FS)
    assert tach.dtype == np.float32 and tach.size == round(x.size / FS * TACHOGRAM_HZ)
    t = (np.arange(tach.size) + 0.5) / TACHOGRAM_HZ
    bt = beats / FS
    inside = (t > bt[0] + 0.05) & (t < bt[-1] - 0.05)  # not within a detection tolerance of the first/last beat
    near_beat = np.abs(t[:, None] - bt[None, :]).min(axis=1) < 0.05  # a beat placed a sample off may flip the index
    k = np.searchsorted(bt, t, side="right") - 1
    want = rr[np.clip(k, 0, rr.size - 1)]
    ok = inside & ~near_beat
    assert ok.sum() > 0.8 * inside.sum()
    np.testing.assert_allclose(tach[ok], want[ok], atol=2.5 / FS)  # beats are placed within a sample or two
    assert tach[t < bt[0]].tolist() == [tach[t >= bt[0]][0]] * int((t < bt[0]).sum())  # before the first beat: held


@pytest.mark.parametrize("x", [np.zeros(4500), np.full(4500, np.nan), np.zeros(10)], ids=["flat", "nan", "short"])
def test_no_beats_gives_the_window_duration_and_at_least_one_patch(x):
    tach = rr_tachogram(x, FS)
    assert tach.size >= 4 and np.allclose(tach, x.size / FS)


def test_a_filled_gap_reads_as_the_median_interval_not_a_pause():
    x, beats = _synthetic_ecg(np.full(30, 0.8), FS)
    a, b = 1000, 1200
    assert ((beats >= a) & (beats < b)).any()
    holed = x.copy()
    holed[a:b] = np.linspace(holed[a - 1], holed[b], b - a)
    assert rr_tachogram(holed, FS).max() > 1.5  # without the mask the hole is a long RR
    exclude = np.zeros(x.size, dtype=bool)
    exclude[a:b] = True
    np.testing.assert_allclose(rr_tachogram(holed, FS, exclude), 0.8, atol=2.5 / FS)
    with pytest.raises(ValueError, match="one per sample"):
        rr_tachogram(holed, FS, exclude[:-1])


def test_rr_series_layout_adds_a_series_and_no_numbers_to_the_text():
    rng = np.random.default_rng(0)
    texts = set()
    for rr in (np.full(36, 0.8), rng.uniform(0.4, 1.0, 50)):
        x, _ = _synthetic_ecg(rr, FS)
        x = x[: int(30 * FS)][None].astype(np.float32)
        inp = validate(x, SignalMeta(fs=FS, unit="mV", channels=("ECG",)), "Which rhythm?")
        mi = build_model_input(inp, features="rr_series", question_first=True, series_text="none")
        assert len(mi.series) == 2 and mi.text.count("<ts>") == 2
        np.testing.assert_array_equal(mi.series[0], x[0])  # as recorded: the encoder normalises
        np.testing.assert_array_equal(mi.series[1], rr_tachogram(x[0], FS))
        assert mi.series[1].size == 120 and mi.means[1] == pytest.approx(float(mi.series[1].mean()), rel=1e-5)
        assert not any(ch.isdigit() for ch in mi.text)
        texts.add(mi.text)
    assert len(texts) == 1  # the same text for every window: a stream reuses it
    full = build_model_input(inp, features="rr_series").text
    assert "RR intervals: 30 s at 4 Hz, mean " in full and full.count(" s, std ") == 1
    assert abs(mi.series[1].std() - 0.0) > 0.05  # the irregular rhythm's tachogram varies


def test_rr_series_per_lead_is_named_by_its_lead():
    x, _ = _synthetic_ecg(np.full(20, 0.8), FS)
    sig = np.stack([x, -x]).astype(np.float32)
    mi = build_model_input(validate(sig, SignalMeta(fs=FS, unit="mV", channels=("I", "II")), "Which?"),
                           features="rr_series", series_text="none")
    assert len(mi.series) == 4 and "I RR intervals:" in mi.text and "II RR intervals:" in mi.text
    assert [s.size for s in mi.series] == [x.size, mi.series[1].size, x.size, mi.series[3].size]
    assert detect_r_peaks(x, FS).size == 21


def test_length_groups():
    assert length_groups([4500, 120]) == [[1], [0]]
    assert length_groups([128, 128, 128]) == [[0, 1, 2]]
    assert length_groups([128, 100, 61]) == [[2], [0, 1]]
    assert length_groups([]) == []
    with pytest.raises(ValueError, match="ratio"):
        length_groups([1], ratio=0.5)


def test_encoder_gives_each_series_what_it_gives_it_alone():
    """Grouping by length is only a speed-up: an ECG and its tachogram in one batch give each one's own latents."""
    torch = pytest.importorskip("torch")
    from conftest import build_tiny

    model = build_tiny("flamingo", "tiny-llama", fs=FS)
    x, _ = _synthetic_ecg(np.random.default_rng(2).uniform(0.5, 1.0, 40), FS)
    ecg = x[: int(30 * FS)].astype(np.float32)
    series = [ecg, rr_tachogram(ecg, FS)]
    text = "ECG: <ts><endofchunk>\nRR intervals: <ts><endofchunk>\nWhich?\n"
    with torch.no_grad():
        b = model._batch(text, series)
        both = model.encode_media(b.series, b.series_mask)  # (1, 2N, D)
        n = model.cfg.resampler.num_latents
        for k, s in enumerate(series):
            one = model.series_encoder(torch.from_numpy(s)[None], torch.ones(1, s.size, dtype=torch.bool),
                                       torch.tensor([k]))  # (1, N, D)
            assert torch.allclose(both[0, k * n : (k + 1) * n], one[0], atol=1e-5)


def test_bad_rates_and_non_ecg_tasks_are_refused():
    from edge_tslm.config import TSLMConfig

    with pytest.raises(ValueError, match="positive sampling rate"):
        rr_tachogram(np.zeros(100), 0.0)
    with pytest.raises(ValueError, match="positive sampling rate"):
        rr_tachogram(np.zeros(100), FS, rate=-1.0)
    with pytest.raises(ValueError, match="RR intervals of an ECG"):
        TSLMConfig(task="har", series_features="rr_series")
    assert TSLMConfig(task="ecg_rhythm", series_features="rr_series").series_features == "rr_series"


def test_encoder_trims_to_the_last_real_sample_of_any_mask():
    """A mask with a hole is trimmed at its last real sample, not at its count of real samples."""
    torch = pytest.importorskip("torch")
    from conftest import build_tiny

    model = build_tiny("flamingo", "tiny-llama", fs=FS)
    x = torch.randn(1, 1, 64)
    holed = torch.ones(1, 1, 64, dtype=torch.bool)
    holed[0, 0, 8:40] = False  # 32 real samples, the last at index 63
    with torch.no_grad():
        got = model.encode_media(x, holed)
        ref = model.series_encoder(x[0], holed[0], torch.tensor([0]))  # (1, N, D)
    assert torch.allclose(got[0], ref[0], atol=1e-5)
