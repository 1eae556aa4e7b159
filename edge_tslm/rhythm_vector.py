"""An ECG's measured rhythm and beat shape as one vector, for a Flamingo encoder to read (numpy only).

Why a vector and not text: a frozen LM reads few numbers well. With the rate, RR CV and RR jumps as text Flamingo's
AF F1 (0.57) sits near what gradient boosting gets from those three numbers (0.59), and ten numbers as text did not
help it (benchmarks/results/ecg_text_ablation). Here the feature baseline's 30 RR statistics and the beat-shape numbers
go through a small MLP (`edge_tslm.model.encoder.VectorEmbedding`) into the encoder's patches, as the scale embedding
does with a series' mean and std, and the text stays as it was.

Every number is invariant to the ECG's gain and offset (timing, ratios, correlations), so the vector is the same
for the recorded and the z-normalised signal. The same numpy R-peak detector as the RR text and the RR series
(`edge_tslm.heartbeats`) finds the beats, so training, evaluation and a device measure alike.
"""

from __future__ import annotations

import numpy as np

from edge_tslm.heartbeats import (
    RR_STAT_NAMES,
    beat_features,
    detect_r_peaks,
    rr_statistics,
    trusted_intervals,
    trusted_peaks,
)

__all__ = ["RHYTHM_VECTOR_NAMES", "RHYTHM_VECTOR_SCALES", "rhythm_vector", "series_rhythm_vectors"]

BEAT_NAMES = ("beats_in_window", "beat_match", "odd_beat_frac", "p_wave_ratio", "residual", "qrs_ms")
RHYTHM_VECTOR_NAMES: tuple[str, ...] = tuple(RR_STAT_NAMES) + BEAT_NAMES

# A typical size of each number: the embedding reads asinh(value / scale), linear near the usual range and
# logarithmic beyond it, so 40 beats and a 0.05 RR CV both reach it as numbers near 1.
_SCALES = {
    "n_beats": 60.0, "beats_per_s": 1.5, "rr_mean": 0.8, "rr_std": 0.1, "rr_cv": 0.1, "rr_min": 0.8, "rr_max": 0.8,
    "rr_median": 0.8, "rr_iqr": 0.1, "rr_range": 0.3, "rmssd": 0.1, "sdsd": 0.1, "pnn20": 0.5, "pnn50": 0.5,
    "hr_mean": 75.0, "hr_std": 10.0, "sampen": 1.0, "sd1": 0.1, "sd2": 0.1, "sd1_sd2": 1.0, "drr_mad_rel": 0.1,
    "frac_drr_gt10": 0.5, "rr_hist_entropy": 1.0, "turning_point_ratio": 0.5, "premature_frac": 0.2,
    "rr_long_frac": 0.2, "rr_short_frac": 0.2, "drr_q90_rel": 0.2, "rr_median_abs_dev_rel": 0.1,
    "drr_sign_changes": 0.5, "beats_in_window": 60.0, "beat_match": 1.0, "odd_beat_frac": 0.2, "p_wave_ratio": 0.2,
    "residual": 0.1, "qrs_ms": 100.0,
}
RHYTHM_VECTOR_SCALES: tuple[float, ...] = tuple(_SCALES[n] for n in RHYTHM_VECTOR_NAMES)


def rhythm_vector(ecg: np.ndarray, fs: float, exclude: np.ndarray | None = None) -> np.ndarray:
    """One ECG lead (L,) at `fs` Hz -> (len(RHYTHM_VECTOR_NAMES),) float32, nan where a number is undefined
    (too few beats). `exclude` (L,) bool marks untrusted samples (a stream's filled gaps, NaN runs, noise bursts):
    the beats near them are left out, so an RR interval across a gap does not read as a pause."""
    if not fs > 0:
        raise ValueError(f"rhythm_vector needs a positive sampling rate, got fs={fs}")
    arr = np.asarray(ecg, dtype=np.float64)
    if arr.ndim > 1 and arr.size != arr.shape[-1]:
        raise ValueError(f"rhythm_vector measures one lead, got an array of shape {arr.shape}; pass each lead (L,) on its own")
    x = np.nan_to_num(arr.ravel(), nan=0.0, posinf=0.0, neginf=0.0)
    if exclude is not None and np.size(exclude) != x.size:
        raise ValueError(f"exclude has {np.size(exclude)} flags for an ECG of {x.size} samples; pass one per sample")
    peaks = detect_r_peaks(x, fs) if x.size else np.zeros(0, dtype=np.int64)
    # an interval that touches an untrusted stretch may skip the beats it hid: left out (its neighbours then count as
    # successive in the RMSSD-like numbers, a small error beside reading a gap as a pause)
    rr = (np.diff(peaks.astype(np.float64)) / fs)[trusted_intervals(peaks, fs, exclude)]  # (R,) s
    kept = trusted_peaks(peaks, fs, exclude)
    duration = max(x.size / fs, 1e-9)
    b = beat_features(x, fs, kept)
    out = rr_statistics(rr, duration) + [float(b.n_beats), b.beat_match, b.odd_beat_frac, b.p_wave_ratio, b.residual, b.qrs_ms]
    return np.asarray(out, dtype=np.float32)


def series_rhythm_vectors(series: np.ndarray, mask: np.ndarray, fs: float, exclude: np.ndarray | None = None) -> np.ndarray:
    """series, mask: (K, L) leads (padded) and their real-sample flags -> (K, F) float32, each row's `rhythm_vector`
    over its real samples. exclude (K, L) bool: untrusted samples (see `rhythm_vector`), or None."""
    if series.shape != mask.shape or series.ndim != 2:
        raise ValueError(f"series {series.shape} and mask {mask.shape} must be the same (K, L) shape")
    if exclude is not None and np.shape(exclude) != series.shape:
        raise ValueError(f"exclude {np.shape(exclude)} must have the series' (K, L) shape {series.shape}")
    out = np.empty((series.shape[0], len(RHYTHM_VECTOR_NAMES)), dtype=np.float32)
    for k in range(series.shape[0]):
        real = mask[k].astype(bool)
        out[k] = rhythm_vector(series[k][real], fs, None if exclude is None else np.asarray(exclude[k], bool)[real])
    return out
