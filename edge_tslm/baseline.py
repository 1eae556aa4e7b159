"""Non-LLM baseline: hand-crafted features + gradient boosting, the bar a TSLM must clear.

HAR: per-axis and magnitude statistics, jerk statistics, spectral band energies,
autocorrelation and axis correlations (177 features per 2.56 s window).
ECG: RR-interval rhythm features (CV, RMSSD, pNN50, sample entropy, Poincaré, histogram
entropy), beat morphology (median template, beat-to-template correlation, P-wave and
T-wave energy), atrial activity (4-9 Hz power left after subtracting the template) and
noise statistics (88 features per record).
numpy/scipy/scikit-learn only, no torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from scipy import signal as sps
from scipy import stats

from edge_tslm.heartbeats import RR_STAT_NAMES as _RR_NAMES
from edge_tslm.heartbeats import rr_statistics as _rr_features
from edge_tslm.heartbeats import sample_entropy  # noqa: F401  (part of this module's API)

# ----------------------------------------------------------------------------- HAR features

_STAT_NAMES = ("mean", "std", "min", "max", "median", "q25", "q75", "iqr", "skew", "kurt", "energy", "mad", "range", "zcr")
_BANDS_HZ = (0.3, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 25.0)
_SPEC_NAMES = tuple(f"band{lo:g}-{hi:g}" for lo, hi in zip(_BANDS_HZ[:-1], _BANDS_HZ[1:])) + (
    "dom_freq",
    "dom_share",
    "centroid",
    "entropy",
)


def _stats(x: np.ndarray) -> np.ndarray:
    """(N, L) → (N, 14) distribution statistics along the last axis."""
    mean = x.mean(-1)
    std = x.std(-1)
    q = np.percentile(x, [25, 50, 75], axis=-1)
    c = x - mean[:, None]
    safe = np.maximum(std, 1e-9)
    skew = (c**3).mean(-1) / safe**3
    kurt = (c**4).mean(-1) / safe**4
    zcr = (np.diff(np.signbit(c), axis=-1) != 0).mean(-1)
    return np.stack(
        [mean, std, x.min(-1), x.max(-1), q[1], q[0], q[2], q[2] - q[0], skew, kurt, (x**2).mean(-1),
         np.median(np.abs(x - q[1][:, None]), -1), x.max(-1) - x.min(-1), zcr],
        axis=1,
    )


def _spectral(x: np.ndarray, fs: float) -> np.ndarray:
    """(N, L) → (N, 12): band energy shares, dominant frequency and its share, centroid, entropy."""
    c = x - x.mean(-1, keepdims=True)
    p = np.abs(np.fft.rfft(c * np.hanning(x.shape[-1]), axis=-1)) ** 2
    f = np.fft.rfftfreq(x.shape[-1], 1.0 / fs)
    p[:, 0] = 0.0
    total = np.maximum(p.sum(-1), 1e-12)
    bands = [p[:, (f >= lo) & (f < hi)].sum(-1) / total for lo, hi in zip(_BANDS_HZ[:-1], _BANDS_HZ[1:])]
    k = p.argmax(-1)
    pn = p / total[:, None]
    ent = -(pn * np.log(np.maximum(pn, 1e-12))).sum(-1)
    return np.stack([*bands, f[k], p.max(-1) / total, (pn * f).sum(-1), ent], axis=1)


def _autocorr_peak(x: np.ndarray, lo: int = 10, hi: int = 100) -> np.ndarray:
    """(N, L) → (N, 2): height and lag of the largest autocorrelation between lags lo..hi."""
    c = x - x.mean(-1, keepdims=True)
    n = x.shape[-1]
    spec = np.fft.rfft(c, 2 * n, axis=-1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=-1)[:, :n]
    ac = ac / np.maximum(ac[:, :1], 1e-12)
    hi = min(hi, n - 1)
    seg = ac[:, lo:hi]
    k = seg.argmax(-1)
    return np.stack([seg.max(-1), (k + lo).astype(np.float64)], axis=1)


def har_feature_names(channels: Sequence[str] = ("x", "y", "z")) -> list[str]:
    """Names of the columns `har_features` returns, in order."""
    series = [*channels, "mag"]
    names = [f"{s}_{n}" for s in series for n in _STAT_NAMES]
    names += [f"jerk_{s}_{n}" for s in series for n in _STAT_NAMES]
    names += [f"{s}_{n}" for s in series for n in _SPEC_NAMES]
    names += [f"{s}_{n}" for s in series for n in ("acf_peak", "acf_lag")]
    pairs = [(a, b) for i, a in enumerate(series) for b in series[i + 1 :]]
    names += [f"corr_{a}_{b}" for a, b in pairs]
    names += [f"gravity_angle_{c}" for c in channels]
    return names


def har_features(windows: np.ndarray, fs: float = 50.0) -> np.ndarray:
    """(N, 3, L) accelerometer windows in g → (N, F) float32 features (see har_feature_names)."""
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3:
        raise ValueError(f"windows must be (N, channels, length), got shape {w.shape}")
    mag = np.sqrt((w**2).sum(1))  # (N, L)
    series = [w[:, i] for i in range(w.shape[1])] + [mag]
    feats = [_stats(s) for s in series]
    feats += [_stats(np.diff(s, axis=-1) * fs) for s in series]
    feats += [_spectral(s, fs) for s in series]
    feats += [_autocorr_peak(s) for s in series]
    cols = []
    for i in range(len(series)):
        for j in range(i + 1, len(series)):
            a = series[i] - series[i].mean(-1, keepdims=True)
            b = series[j] - series[j].mean(-1, keepdims=True)
            cols.append((a * b).mean(-1) / np.maximum(a.std(-1) * b.std(-1), 1e-12))
    feats.append(np.stack(cols, axis=1))
    g = w.mean(-1)  # (N, C) gravity estimate
    feats.append(np.arccos(np.clip(g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12), -1, 1)))
    return np.concatenate(feats, axis=1).astype(np.float32)


# ----------------------------------------------------------------------------- ECG features


_MORPH_NAMES = (
    "r_amp_mean", "r_amp_cv", "tmpl_corr_mean", "tmpl_corr_min", "tmpl_corr_std", "tmpl_corr_lt08", "qrs_width",
    "s_depth_rel", "p_range_rel", "p_std_rel", "t_max_rel", "t_min_rel", "st_level_rel", "p_beat_energy_cv",
    *[f"tmpl_{i}" for i in range(20)],
)
_SPECTRUM_NAMES = (
    "pow_0-0.5", "pow_0.5-4", "pow_4-9", "pow_9-15", "pow_15-40", "pow_40+", "resid_4-9_share", "resid_rel_std",
    "resid_dom_freq", "resid_4-9_peakiness", "spec_entropy",
)
_NOISE_NAMES = (
    "duration_s", "sig_std", "sig_kurt", "sig_skew", "abs_max", "sat_frac", "seg_std_cv", "seg_std_max_rel",
    "deriv_zcr", "diff_std_rel", "polarity", "lowfreq_std_rel", "hf_std_rel",
)
ECG_FEATURE_NAMES: tuple[str, ...] = _RR_NAMES + _MORPH_NAMES + _SPECTRUM_NAMES + _NOISE_NAMES


def _beats(x: np.ndarray, peaks: np.ndarray, fs: float) -> tuple[np.ndarray, int]:
    pre, post = int(0.25 * fs), int(0.45 * fs)
    keep = peaks[(peaks >= pre) & (peaks + post < x.size)]
    if keep.size == 0:
        return np.zeros((0, pre + post)), pre
    idx = keep[:, None] + np.arange(-pre, post)[None, :]
    return x[idx], pre


def _morph_features(x: np.ndarray, peaks: np.ndarray, fs: float) -> tuple[list[float], np.ndarray | None]:
    nan = float("nan")
    beats, pre = _beats(x, peaks, fs)
    if beats.shape[0] < 3:
        return [nan] * len(_MORPH_NAMES), None
    beats = beats - np.median(beats[:, : int(0.05 * fs)], axis=1, keepdims=True)  # baseline before P
    tmpl = np.median(beats, axis=0)
    r_amp = beats[:, pre]
    r_ref = tmpl[pre] if abs(tmpl[pre]) > 1e-6 else 1e-6
    bc = beats - beats.mean(1, keepdims=True)
    tc = tmpl - tmpl.mean()
    corr = (bc @ tc) / np.maximum(np.linalg.norm(bc, axis=1) * np.linalg.norm(tc), 1e-12)
    qrs = tmpl[pre - int(0.06 * fs) : pre + int(0.06 * fs)]
    above = np.flatnonzero(np.abs(qrs) > 0.3 * np.abs(qrs).max())
    width = (above[-1] - above[0]) / fs if above.size else nan
    p = tmpl[pre - int(0.22 * fs) : pre - int(0.07 * fs)]
    t = tmpl[pre + int(0.15 * fs) : pre + int(0.42 * fs)]
    st = tmpl[pre + int(0.08 * fs) : pre + int(0.12 * fs)]
    p_beats = beats[:, pre - int(0.22 * fs) : pre - int(0.07 * fs)]
    p_energy = (p_beats - p_beats.mean(1, keepdims=True)).std(1)
    down = tmpl[np.linspace(0, tmpl.size - 1, 20).astype(int)] / abs(r_ref)
    feats = [
        float(np.mean(r_amp)), float(np.std(r_amp) / max(abs(np.mean(r_amp)), 1e-9)), float(corr.mean()),
        float(corr.min()), float(corr.std()), float(np.mean(corr < 0.8)), width,
        float(tmpl[pre : pre + int(0.08 * fs)].min() / abs(r_ref)), float(np.ptp(p) / abs(r_ref)),
        float(p.std() / abs(r_ref)), float(t.max() / abs(r_ref)), float(t.min() / abs(r_ref)),
        float(st.mean() / abs(r_ref)), float(p_energy.std() / max(p_energy.mean(), 1e-9)), *down.tolist(),
    ]
    return feats, tmpl


def _band_share(f: np.ndarray, p: np.ndarray, lo: float, hi: float) -> float:
    return float(p[(f >= lo) & (f < hi)].sum() / max(p.sum(), 1e-20))


def _spectrum_features(x: np.ndarray, peaks: np.ndarray, tmpl: np.ndarray | None, fs: float) -> list[float]:
    f, p = sps.welch(x, fs=fs, nperseg=min(1024, x.size))
    out = [_band_share(f, p, lo, hi) for lo, hi in ((0, 0.5), (0.5, 4), (4, 9), (9, 15), (15, 40), (40, fs / 2 + 1))]
    nan = float("nan")
    if tmpl is not None:
        # Atrial activity: subtract the beat template at each beat, look at what is left.
        pre = int(0.25 * fs)
        resid = x - sps.medfilt(x, int(0.6 * fs) | 1)  # remove baseline wander
        for k in peaks:
            lo, hi = k - pre, k - pre + tmpl.size
            if lo >= 0 and hi <= resid.size:
                resid[lo:hi] -= tmpl
        rf, rp = sps.welch(resid, fs=fs, nperseg=min(1024, resid.size))
        band = (rf >= 4) & (rf < 9)
        share = _band_share(rf, rp, 4, 9)
        dom = float(rf[np.argmax(rp * (rf > 1))])
        peak = float(rp[band].max() / max(rp[band].mean(), 1e-20)) if band.any() else nan
        out += [share, float(resid.std() / max(x.std(), 1e-9)), dom, peak]
    else:
        out += [nan] * 4
    pn = p / max(p.sum(), 1e-20)
    out.append(float(-(pn[pn > 0] * np.log(pn[pn > 0])).sum()))
    return out


def _noise_features(x: np.ndarray, fs: float) -> list[float]:
    seg = int(5 * fs)
    stds = np.array([x[i : i + seg].std() for i in range(0, max(x.size - seg + 1, 1), seg)])
    absmax = float(np.abs(x).max())
    dx = np.diff(x)
    lf = sps.medfilt(x, int(0.6 * fs) | 1)
    b, a = sps.butter(3, 40.0 / (fs / 2), btype="high")
    hf = sps.filtfilt(b, a, x) if x.size > 30 else x
    std = max(x.std(), 1e-9)
    return [
        x.size / fs, float(x.std()), float(stats.kurtosis(x)), float(stats.skew(x)), absmax,
        float(np.mean(np.abs(x) > 0.98 * absmax)), float(stds.std() / max(stds.mean(), 1e-9)),
        float(stds.max() / max(np.median(stds), 1e-9)), float(np.mean(np.diff(np.sign(dx)) != 0)),
        float(dx.std() / std), float(np.sign(x.max() + x.min() - 2 * np.median(x))),
        float(lf.std() / std), float(hf.std() / std),
    ]


def ecg_features(ecg: np.ndarray, fs: float = 300.0) -> np.ndarray:
    """One single-lead ECG (L,) or (1, L) in mV → (F,) float32 features (see ECG_FEATURE_NAMES)."""
    from edge_tslm.data.rationale import detect_r_peaks

    x = np.asarray(ecg, dtype=np.float64).ravel()
    x = x - np.median(x)
    peaks = detect_r_peaks(x, fs)
    rr = np.diff(peaks) / fs
    morph, tmpl = _morph_features(x, peaks, fs)
    feats = _rr_features(rr, x.size / fs) + morph + _spectrum_features(x, peaks, tmpl, fs) + _noise_features(x, fs)
    assert len(feats) == len(ECG_FEATURE_NAMES)
    return np.asarray(feats, dtype=np.float32)


def _ecg_features_fs(args: tuple[np.ndarray, float]) -> np.ndarray:
    return ecg_features(*args)


def ecg_feature_matrix(signals: Sequence[np.ndarray], fs: float = 300.0, workers: int | None = None) -> np.ndarray:
    """(N, F) features for many ECGs, in parallel processes (records are independent)."""
    workers = workers or min(8, os.cpu_count() or 1)
    jobs = [(s, fs) for s in signals]
    if workers <= 1 or len(jobs) < 16:
        return np.stack([_ecg_features_fs(j) for j in jobs]) if jobs else np.zeros((0, len(ECG_FEATURE_NAMES)), np.float32)
    with ProcessPoolExecutor(workers) as ex:
        return np.stack(list(ex.map(_ecg_features_fs, jobs, chunksize=32)))


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class BaselineConfig:
    """HistGradientBoosting settings; saved beside every result so a run can be repeated."""

    max_iter: int = 400
    learning_rate: float = 0.05
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 20
    l2_regularization: float = 0.0
    class_weight: str | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def fit_baseline(X: np.ndarray, y: Sequence[str], config: BaselineConfig = BaselineConfig()):
    """Train a HistGradientBoostingClassifier on features X and string labels y."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(
        max_iter=config.max_iter,
        learning_rate=config.learning_rate,
        max_leaf_nodes=config.max_leaf_nodes,
        min_samples_leaf=config.min_samples_leaf,
        l2_regularization=config.l2_regularization,
        class_weight=config.class_weight,
        early_stopping=False,
        random_state=config.seed,
    )
    clf.fit(np.asarray(X), np.asarray(list(y)))
    return clf


def har_xy(samples: Sequence) -> tuple[np.ndarray, list[str]]:
    """Features and labels of HAR Samples (all at one fs)."""
    if not samples:
        return np.zeros((0, len(har_feature_names())), np.float32), []
    fs = samples[0].meta.fs
    return har_features(np.stack([s.signal for s in samples]), fs), [s.label for s in samples]


def ecg_xy(records: Sequence, workers: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Features and labels of PhysioNet 2017 records (`EcgRecord`s; signals read here)."""
    from edge_tslm.data.physionet2017 import FS

    X = ecg_feature_matrix([r.load() for r in records], FS, workers)
    return X, [r.label for r in records]
