"""R peaks and RR-interval rhythm numbers of a single-lead ECG, in numpy only.

The streaming runtime writes these numbers into an ECG window's description, so they must be
computed without scipy (sleepecg, the library we would otherwise use, imports scipy at import
time). Training, evaluation, rationales and the runtime all call this one detector, so the
numbers a model was trained on are the numbers it sees on a device.

Method (Pan-Tompkins energy envelope, vectorised): a zero-phase 5-30 Hz band-pass done in the
frequency domain (the magnitude response of a forward-backward 2nd-order Butterworth pair), the
5-point derivative, squared and integrated over 150 ms; beats are envelope maxima that are the
largest within +-200 ms (the refractory period) and reach 30 % of the second-largest such maximum
within +-2 s (one artefact does not hide the beats around it); an RR gap over 1.66x the median is
searched again at 12 % (Pan-Tompkins' search-back); each beat is moved to the largest band-passed
|amplitude| within +-75 ms. `tests/test_heartbeats.py`
compares it with sleepecg's detector on real PhysioNet 2017 records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["BeatFeatures", "RhythmFeatures", "beat_features", "describe_beats", "describe_rhythm", "detect_r_peaks", "rhythm_features",
           "rhythm_from_peaks", "rr_statistics", "rr_tachogram", "RR_STAT_NAMES", "sample_entropy", "trusted_intervals", "trusted_peaks"]

_BAND_HZ = (5.0, 30.0)
_REFRACTORY_S = 0.2
_CONTEXT_S = 2.0
_RELATIVE_HEIGHT = 0.3
_SEARCHBACK_HEIGHT = 0.12
_SEARCHBACK_GAP = 1.66  # an RR this many times the median RR is searched again at the lower height
_INTEGRATION_S = 0.15
_REFINE_S = 0.075
_MIN_SECONDS = 2.0


def _bandpass(x: np.ndarray, fs: float, band: tuple[float, float] = _BAND_HZ) -> np.ndarray:
    """Zero-phase band-pass: |H_hp(f) H_lp(f)|^2 of 2nd-order Butterworth sections, applied by FFT.

    The signal is mirrored at both ends (1 s) so the circular FFT filter does not ring at the edges."""
    pad = min(int(fs), x.size - 1)
    xp = np.concatenate([x[pad:0:-1], x, x[-2 : -pad - 2 : -1]]) if pad > 0 else x
    n = 1 << int(math.ceil(math.log2(max(xp.size, 2))))
    f = np.fft.rfftfreq(n, 1.0 / fs)
    lo, hi = band
    hi = min(hi, 0.45 * fs)
    r_hp = (f / lo) ** 4
    gain = (r_hp / (1.0 + r_hp)) * (1.0 / (1.0 + (f / hi) ** 4))  # |H|^2 of each 2nd-order section
    y = np.fft.irfft(np.fft.rfft(xp, n) * gain ** 2, n)[: xp.size]  # squared again: forward + backward
    return y[pad : pad + x.size]


def _running_max_is_self(e: np.ndarray, half: int) -> np.ndarray:
    """True where e[i] is the maximum of e[i-half : i+half+1] (the first sample of a flat top)."""
    padded = np.concatenate([np.full(half, -np.inf), e, np.full(half, -np.inf)])
    win = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)  # (L, 2h+1)
    is_max = win.max(axis=1) <= e
    left = np.concatenate([[-np.inf], e[:-1]])
    return is_max & (e > left)  # on a plateau only its first sample counts


def _second_largest(v: np.ndarray) -> float:
    """The reference height: one artefact (the largest) does not raise the threshold around it."""
    return float(np.partition(v, -2)[-2]) if v.size >= 2 else float(v.max())


def _search_back(cand: np.ndarray, height: np.ndarray, ref: np.ndarray, beat: np.ndarray, fs: float) -> np.ndarray:
    """Pan-Tompkins search-back: in an RR gap much longer than the median, take the tallest candidate
    that reaches the lower height (a beat smaller than its neighbours), until no gap changes."""
    refr = int(_REFRACTORY_S * fs)
    for _ in range(8):
        idx = np.flatnonzero(beat)
        if idx.size < 3:
            return beat
        pos = cand[idx]
        rr = np.diff(pos)
        changed = False
        for k in np.flatnonzero(rr > _SEARCHBACK_GAP * np.median(rr)):
            lo, hi = pos[k] + refr, pos[k + 1] - refr
            inside = np.flatnonzero((cand > lo) & (cand < hi) & ~beat & (height >= _SEARCHBACK_HEIGHT * ref))
            if inside.size:
                beat[inside[np.argmax(height[inside])]] = True
                changed = True
        if not changed:
            return beat
    return beat


def detect_r_peaks(ecg: np.ndarray, fs: float) -> np.ndarray:
    """Sample indices (int64, ascending) of the R peaks of a 1-D ECG; empty below 2 s or on a flat line.

    NaNs are treated as zeros (a gap yields no beats, not an exception): callers flag them."""
    x = np.nan_to_num(np.asarray(ecg, dtype=np.float64).ravel(), nan=0.0, posinf=0.0, neginf=0.0)
    if fs <= 0 or x.size < int(_MIN_SECONDS * fs) or np.ptp(x) == 0:
        return np.zeros(0, dtype=np.int64)
    y = _bandpass(x - x.mean(), fs)  # (L,)
    d = np.correlate(y, np.array([-1.0, -2.0, 0.0, 2.0, 1.0]), mode="same")
    w = max(1, int(_INTEGRATION_S * fs))
    env = np.convolve(d * d, np.ones(w) / w, mode="same")  # (L,), centred on the QRS
    if not np.any(env > 0):
        return np.zeros(0, dtype=np.int64)
    cand = np.flatnonzero(_running_max_is_self(env, max(1, int(_REFRACTORY_S * fs))))  # (K,)
    ctx = int(_CONTEXT_S * fs)
    ref = np.array([_second_largest(env[cand[(cand >= i - ctx) & (cand <= i + ctx)]]) for i in cand])  # (K,)
    beat = env[cand] >= _RELATIVE_HEIGHT * ref
    beat = _search_back(cand, env[cand], ref, beat, fs)
    keep = cand[beat]
    r = max(1, int(_REFINE_S * fs))
    ay = np.abs(y)
    peaks = [max(0, i - r) + int(np.argmax(ay[max(0, i - r) : i + r + 1])) for i in keep]
    peaks = np.unique(np.asarray(peaks, dtype=np.int64))
    if peaks.size > 1:  # refinement can pull two candidates closer than the refractory period
        refr = int(_REFRACTORY_S * fs)
        out = [int(peaks[0])]
        for p in peaks[1:]:
            if p - out[-1] >= refr:
                out.append(int(p))
            elif ay[p] > ay[out[-1]]:
                out[-1] = int(p)
        peaks = np.asarray(out, dtype=np.int64)
    return peaks


@dataclass(frozen=True)
class RhythmFeatures:
    """Heart rate and RR variability of one ECG stretch."""

    duration_s: float
    n_beats: int
    heart_rate_bpm: float  # 60 / mean RR; nan with fewer than 2 beats
    rr_cv: float  # std(RR) / mean(RR); nan with fewer than 3 beats
    rmssd_ms: float  # root mean square of successive RR differences; nan with fewer than 3 beats
    rr_jump_frac: float  # share of successive RR intervals that differ by > 10 % of the earlier one; nan below 3 beats
    rr_min_ratio: float = float("nan")  # shortest RR / median RR (a premature beat); nan below 4 beats
    rr_max_ratio: float = float("nan")  # longest RR / median RR (a pause or a missed beat); nan below 4 beats


_JUMP = 0.10
# A beat this close to an untrusted stretch (a filled gap, NaNs, a noise burst) may be misplaced, missed or
# invented by it: the band-pass and the 150 ms envelope smear a stretch over about this much.
_UNTRUSTED_MARGIN_S = 0.25


def rhythm_features(ecg: np.ndarray, fs: float, exclude: np.ndarray | None = None) -> RhythmFeatures:
    """Measure `RhythmFeatures` on a 1-D (or (1, L)) ECG; `exclude` (L,) bool marks untrusted samples."""
    x = np.asarray(ecg, dtype=np.float64).ravel()
    return rhythm_from_peaks(detect_r_peaks(x, fs), x.size, fs, exclude)


def _near_untrusted(pos_lo: np.ndarray, pos_hi: np.ndarray, exclude: np.ndarray | None, fs: float) -> np.ndarray:
    """For spans [pos_lo, pos_hi] of samples: does an untrusted sample lie within the margin of one? (bool)"""
    if exclude is None:
        return np.zeros(pos_lo.shape, dtype=bool)
    ex = np.asarray(exclude, dtype=bool).ravel()
    m = int(round(_UNTRUSTED_MARGIN_S * fs))
    cum = np.concatenate([[0], np.cumsum(ex)])  # (L + 1,) untrusted samples before each index
    lo = np.clip(pos_lo - m, 0, ex.size)
    hi = np.clip(pos_hi + m + 1, 0, ex.size)
    return cum[hi] > cum[lo]


def trusted_peaks(peaks: np.ndarray, fs: float, exclude: np.ndarray | None) -> np.ndarray:
    """The R peaks that lie clear of every untrusted sample (all of them when nothing is excluded)."""
    return peaks[~_near_untrusted(peaks, peaks, exclude, fs)]


def trusted_intervals(peaks: np.ndarray, fs: float, exclude: np.ndarray | None) -> np.ndarray:
    """(R,) bool for the R = len(peaks) - 1 intervals: True where the interval lies clear of every untrusted sample
    (an interval across a filled gap may skip beats the gap hid)."""
    if peaks.size < 2:
        return np.zeros(0, dtype=bool)
    return ~_near_untrusted(peaks[:-1], peaks[1:], exclude, fs)


def rhythm_from_peaks(peaks: np.ndarray, n_samples: int, fs: float, exclude: np.ndarray | None = None) -> RhythmFeatures:
    """`RhythmFeatures` from R-peak sample indices of an ECG `n_samples` long.

    With `exclude` (n_samples,) bool, an RR interval that touches an untrusted stretch is left out, and a
    successive difference only compares two kept intervals that share a beat: a streamed window with a
    filled gap or a noise burst then describes the rhythm of its clean stretches, not the fault."""
    if exclude is not None and np.size(exclude) != n_samples:
        raise ValueError(f"exclude has {np.size(exclude)} flags for an ECG of {n_samples} samples; pass one per sample")
    rr = np.diff(peaks.astype(np.float64)) / fs  # seconds
    keep = trusted_intervals(peaks, fs, exclude)  # (R,)
    pairs = keep[:-1] & keep[1:]  # (R - 1,) successive intervals both kept
    rk = rr[keep]
    drr = np.diff(rr)[pairs]  # successive differences of kept neighbours
    nan = float("nan")
    hr = float(60.0 / rk.mean()) if rk.size >= 1 else nan
    cv = float(rk.std() / rk.mean()) if rk.size >= 2 else nan
    rmssd = float(np.sqrt(np.mean(drr**2)) * 1000.0) if drr.size >= 1 else nan
    # a share, not a spread: one missed or extra beat moves it by one interval's worth, the CV by much more
    jumps = float(np.mean(np.abs(drr) > _JUMP * rr[:-1][pairs])) if drr.size >= 1 else nan
    med = float(np.median(rk)) if rk.size >= 3 else nan
    lo, hi = (float(rk.min()) / med, float(rk.max()) / med) if rk.size >= 3 and med > 0 else (nan, nan)
    n_beats = int(trusted_peaks(peaks, fs, exclude).size)
    return RhythmFeatures(n_samples / fs, n_beats, hr, cv, rmssd, jumps, lo, hi)


TACHOGRAM_HZ = 4.0  # samples per second of `rr_tachogram`: one patch of 4 is one second of rhythm


def rr_tachogram(ecg: np.ndarray, fs: float, exclude: np.ndarray | None = None, rate: float = TACHOGRAM_HZ) -> np.ndarray:
    """The RR interval in progress at each instant, in seconds, sampled at `rate` Hz: (max(4, round(T * rate)),) float32.

    Why a series and not numbers in the text: the encoder reads the rhythm's whole course (an AF run, one premature
    beat, a pause) and the text stays the same from window to window, so a stream reuses its prompt. Sample-and-hold
    on a fixed grid keeps the length a function of the window alone, so even a window with no beat is a series.
    Before the first beat and after the last the nearest interval is held; an interval that touches an untrusted
    stretch (`exclude`, see `rhythm_from_peaks`) is replaced by the median kept interval, so a filled gap does not
    read as a pause. Fewer than 2 beats (or none kept): the window's duration, the longest interval it could hold."""
    if not (fs > 0 and rate > 0):
        raise ValueError(f"rr_tachogram needs a positive sampling rate and tachogram rate, got fs={fs}, rate={rate}")
    x = np.asarray(ecg, dtype=np.float64).ravel()
    if exclude is not None and np.size(exclude) != x.size:
        raise ValueError(f"exclude has {np.size(exclude)} flags for an ECG of {x.size} samples; pass one per sample")
    duration = x.size / fs
    n = max(4, int(round(duration * rate)))
    peaks = detect_r_peaks(x, fs) if x.size else np.zeros(0, dtype=np.int64)
    if peaks.size < 2:
        return np.full(n, duration, dtype=np.float32)
    rr = np.diff(peaks.astype(np.float64)) / fs  # (R,) seconds
    keep = trusted_intervals(peaks, fs, exclude)  # (R,)
    if not keep.any():
        return np.full(n, duration, dtype=np.float32)
    rr = np.where(keep, rr, np.median(rr[keep]))
    t = (np.arange(n) + 0.5) / rate  # (n,) sample times, s
    k = np.clip(np.searchsorted(peaks / fs, t, side="right") - 1, 0, rr.size - 1)  # interval in progress at t
    return rr[k].astype(np.float32)


def describe_rhythm(ecg: np.ndarray, fs: float, exclude: np.ndarray | None = None) -> str:
    """The measured rhythm as description text: ``rate 74 bpm, RR CV 4 %, RR jumps 45 %``.

    Whole numbers on purpose: each digit is a token that every streamed window pays for. "RR jumps"
    is `rr_jump_frac`; with fewer than 3 beats the text says how many were found. `exclude` marks
    untrusted samples (see `rhythm_from_peaks`)."""
    return _describe(rhythm_features(ecg, fs, exclude))


def _describe(f: RhythmFeatures) -> str:
    if f.n_beats < 3:
        return f"{f.n_beats} beats detected"
    return f"rate {round(f.heart_rate_bpm)} bpm, RR CV {round(100 * f.rr_cv)} %, RR jumps {round(100 * f.rr_jump_frac)} %"


# ----------------------------------------------------------------------------- beat morphology

_MORPH_BAND_HZ = (0.5, 40.0)  # keeps P and T waves, drops baseline wander and mains hum
_BEAT_S = (0.25, 0.45)  # a beat's window: this long before and after its R peak
_P_REGION_S = (0.25, 0.08)  # where the P wave sits: from 250 ms to 80 ms before R
_QRS_HALF_S = 0.06
_ODD_CORR = 0.8
_QRS_SEARCH_S = 0.1
_QRS_SLOPE = 0.2


@dataclass(frozen=True)
class BeatFeatures:
    """How alike the beats are and what the median beat holds: what separates 'other rhythm' (ectopic
    beats), atrial fibrillation (no P wave, fibrillatory baseline) and noise, beyond RR timing."""

    n_beats: int  # beats whose whole window lies inside the signal
    beat_match: float  # median Pearson correlation of a beat with the median beat; nan below 3 beats
    odd_beat_frac: float  # share of beats correlating < 0.8 with the median beat (ectopic, or noise)
    p_wave_ratio: float  # peak-to-peak of the median beat 250-80 ms before R / that of its QRS
    residual: float  # median |beat - median beat| / QRS peak-to-peak (noise, fibrillatory waves)
    qrs_ms: float  # QRS width of the median beat: where its slope exceeds 20 % of its steepest, within +-100 ms of R


def beat_features(ecg: np.ndarray, fs: float, peaks: np.ndarray | None = None) -> BeatFeatures:
    """Measure `BeatFeatures` on a 1-D (or (1, L)) ECG; `peaks` from `detect_r_peaks` if not given."""
    x = np.nan_to_num(np.asarray(ecg, dtype=np.float64).ravel(), nan=0.0, posinf=0.0, neginf=0.0)
    if peaks is None:
        peaks = detect_r_peaks(x, fs)
    nan = float("nan")
    before, after = int(round(_BEAT_S[0] * fs)), int(round(_BEAT_S[1] * fs))
    inside = peaks[(peaks >= before) & (peaks + after < x.size)]
    if inside.size < 3:
        return BeatFeatures(int(inside.size), nan, nan, nan, nan, nan)
    y = _bandpass(x - x.mean(), fs, _MORPH_BAND_HZ)
    beats = y[inside[:, None] + np.arange(-before, after)[None, :]]  # (B, W)
    template = np.median(beats, axis=0)  # (W,)
    bc = beats - beats.mean(axis=1, keepdims=True)
    tc = template - template.mean()
    denom = np.sqrt((bc * bc).sum(axis=1) * (tc * tc).sum())
    corr = np.where(denom > 0, (bc @ tc) / np.maximum(denom, 1e-300), 0.0)  # (B,)
    q = int(round(_QRS_HALF_S * fs))
    qrs = float(np.ptp(template[before - q : before + q + 1]))
    p_lo, p_hi = before - int(round(_P_REGION_S[0] * fs)), before - int(round(_P_REGION_S[1] * fs))
    match, odd = float(np.median(corr)), float(np.mean(corr < _ODD_CORR))
    if qrs <= 0:
        return BeatFeatures(int(inside.size), match, odd, nan, nan, nan)
    p_ratio = float(np.ptp(template[max(0, p_lo) : max(p_hi, 1)])) / qrs
    residual = float(np.median(np.abs(beats - template[None, :]))) / qrs
    s = min(int(round(_QRS_SEARCH_S * fs)), before, after - 1)
    slope = np.abs(np.diff(template[before - s : before + s + 1]))  # (2s,)
    steep = np.flatnonzero(slope > _QRS_SLOPE * slope.max())
    qrs_ms = float(1000.0 * (steep[-1] - steep[0] + 1) / fs)
    return BeatFeatures(int(inside.size), match, odd, p_ratio, residual, qrs_ms)


def describe_beats(ecg: np.ndarray, fs: float, exclude: np.ndarray | None = None) -> str:
    """The measured rhythm and beat shape as description text: ``rate 74 bpm, RR CV 4 %, RR jumps 45 %,
    RR 88-108 %, beat match 97 %, odd beats 2 %, P wave 14 %, residual 5 %, QRS 60 ms``.

    `describe_rhythm`, the shortest and longest RR as % of the median, then `BeatFeatures` (see there
    for what each means). On the PhysioNet 2017 split these numbers raise a gradient-boosting classifier's
    challenge score from 0.65 (the rhythm numbers alone) to 0.75 (`benchmarks/ecg_text_features.py`).
    `exclude` marks untrusted samples: their RR intervals and the beats near them are left out."""
    x = np.asarray(ecg, dtype=np.float64).ravel()
    peaks = detect_r_peaks(x, fs)
    r = rhythm_from_peaks(peaks, x.size, fs, exclude)
    text = _describe(r)
    if math.isfinite(r.rr_min_ratio):
        text += f", RR {round(100 * r.rr_min_ratio)}-{round(100 * r.rr_max_ratio)} %"
    b = beat_features(x, fs, trusted_peaks(peaks, fs, exclude))
    if b.n_beats < 3 or not math.isfinite(b.p_wave_ratio):
        return text
    return (f"{text}, beat match {round(100 * b.beat_match)} %, odd beats {round(100 * b.odd_beat_frac)} %, "
            f"P wave {round(100 * b.p_wave_ratio)} %, residual {round(100 * b.residual)} %, QRS {round(b.qrs_ms)} ms")


# ----------------------------------------------------------------------------- RR-interval statistics
# The feature baseline's RR statistics (edge_tslm.baseline) and the rhythm vector a Flamingo encoder reads
# (edge_tslm.rhythm_vector) are this one function.


def sample_entropy(x: np.ndarray, m: int = 2, r: float | None = None) -> float:
    """Sample entropy of a short series (RR intervals); nan when undefined."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n < m + 3:
        return float("nan")
    r = 0.2 * x.std() if r is None else r
    if r <= 0:
        return 0.0

    def count(mm: int) -> int:
        emb = np.lib.stride_tricks.sliding_window_view(x, mm)[: n - m]
        d = np.abs(emb[:, None, :] - emb[None, :, :]).max(-1)
        return int(((d <= r).sum() - len(emb)) // 2)

    b, a = count(m), count(m + 1)
    return float(-np.log(a / b)) if a > 0 and b > 0 else float("nan")


RR_STAT_NAMES = (
    "n_beats", "beats_per_s", "rr_mean", "rr_std", "rr_cv", "rr_min", "rr_max", "rr_median", "rr_iqr", "rr_range",
    "rmssd", "sdsd", "pnn20", "pnn50", "hr_mean", "hr_std", "sampen", "sd1", "sd2", "sd1_sd2", "drr_mad_rel",
    "frac_drr_gt10", "rr_hist_entropy", "turning_point_ratio", "premature_frac", "rr_long_frac", "rr_short_frac",
    "drr_q90_rel", "rr_median_abs_dev_rel", "drr_sign_changes",
)


def rr_statistics(rr: np.ndarray, duration: float) -> list[float]:
    """RR_STAT_NAMES of the RR intervals `rr` (s) of an ECG `duration` s long; nan where too few beats."""
    nan = float("nan")
    n = rr.size + 1 if rr.size else 0
    if rr.size < 3:
        return [float(n), n / duration] + [nan] * (len(RR_STAT_NAMES) - 2)
    d = np.diff(rr)
    mean = rr.mean()
    med = np.median(rr)
    q25, q75 = np.percentile(rr, [25, 75])
    hist, _ = np.histogram(rr / med, bins=16, range=(0.4, 2.0))
    pr = hist / max(hist.sum(), 1)
    tp = np.mean((rr[1:-1] > rr[:-2]) & (rr[1:-1] > rr[2:]) | (rr[1:-1] < rr[:-2]) & (rr[1:-1] < rr[2:]))
    sd1 = np.sqrt(0.5) * d.std()
    sd2 = np.sqrt(max(2 * rr.std() ** 2 - 0.5 * d.std() ** 2, 0.0))
    hr = 60.0 / rr
    return [
        float(n), n / duration, mean, rr.std(), rr.std() / mean, rr.min(), rr.max(), med, q75 - q25, rr.max() - rr.min(),
        np.sqrt(np.mean(d**2)), d.std(), np.mean(np.abs(d) > 0.02), np.mean(np.abs(d) > 0.05), hr.mean(), hr.std(),
        sample_entropy(rr), sd1, sd2, sd1 / max(sd2, 1e-9), np.median(np.abs(d)) / med, np.mean(np.abs(d) > 0.1 * rr[:-1]),
        float(-(pr[pr > 0] * np.log(pr[pr > 0])).sum()), float(tp), np.mean(rr[:-1] < 0.85 * med),
        np.mean(rr > 1.15 * med), np.mean(rr < 0.85 * med), np.percentile(np.abs(d), 90) / med,
        np.median(np.abs(rr - med)) / med, np.mean(np.diff(np.sign(d)) != 0) if d.size > 1 else nan,
    ]
