"""Rationales written from features measured on the signal itself.

Every number a rationale states comes from a function in this module applied to that
sample's float32 signal, and is printed with `prompts.format_number`, so a test can parse
the text and recompute each number. Qualitative words ("regular", "still") come from
thresholds on the same measurements, never from the label. The last line is always
`answer_text(label)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_tslm.heartbeats import RhythmFeatures, rhythm_features
from edge_tslm.prompts import answer_text, format_number
from edge_tslm.rationale_grounding import rr_regularity

# ----------------------------------------------------------------------------- HAR


@dataclass(frozen=True)
class HarFeatures:
    """Accelerometer window summary: gravity direction, movement intensity and rhythm."""

    axis_mean: tuple[float, ...]  # per channel, in the signal's unit (g)
    gravity_axis: int  # index of the channel with the largest |mean|
    magnitude_std: float  # std of the vector magnitude (g)
    dominant_freq_hz: float  # strongest non-DC FFT bin of the magnitude


def dominant_frequency(x: np.ndarray, fs: float) -> float:
    """Frequency (Hz) of the largest non-DC bin of the mean-removed series' FFT."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 4:
        return 0.0
    spec = np.abs(np.fft.rfft(x - x.mean()))
    freqs = np.fft.rfftfreq(x.size, d=1.0 / fs)
    k = 1 + int(np.argmax(spec[1:]))
    return float(freqs[k])


def har_features(signal: np.ndarray, fs: float) -> HarFeatures:
    """Measure `HarFeatures` on a (3, L) accelerometer window."""
    x = np.asarray(signal, dtype=np.float64)
    means = tuple(float(v) for v in x.mean(axis=1))
    mag = np.sqrt((x**2).sum(axis=0))
    return HarFeatures(
        axis_mean=means,
        gravity_axis=int(np.argmax(np.abs(means))),
        magnitude_std=float(mag.std()),
        dominant_freq_hz=dominant_frequency(mag, fs),
    )


# Movement thresholds on the magnitude std (g): below STILL the body is at rest.
_HAR_STILL_G = 0.03
_HAR_VIGOROUS_G = 0.25


def har_movement(magnitude_std: float) -> str:
    """The rationale's words for how much the acceleration magnitude varies."""
    if magnitude_std < _HAR_STILL_G:
        return "barely varies"
    return "varies strongly" if magnitude_std >= _HAR_VIGOROUS_G else "varies moderately"


def har_rationale(signal: np.ndarray, fs: float, channels: Sequence[str], unit: str, label: str) -> str:
    """Describe gravity direction, movement intensity and step rhythm, then answer."""
    return har_rationale_text(har_features(signal, fs), channels, unit, label)


def har_rationale_text(f: HarFeatures, channels: Sequence[str], unit: str, label: str) -> str:
    """`har_rationale` from features already measured (the stream drafts rationales from its own measurements)."""
    fn = format_number
    parts = ", ".join(f"{fn(m)} {unit} on {c}" for m, c in zip(f.axis_mean, channels))
    g = f.gravity_axis
    sign = "+" if f.axis_mean[g] >= 0 else "-"
    text = [f"The mean acceleration is {parts}, so gravity lies mostly along {sign}{channels[g]}."]
    moves = har_movement(f.magnitude_std)
    if moves == "barely varies":
        text.append(
            f"The acceleration magnitude {moves} (standard deviation {fn(f.magnitude_std)} {unit}), "
            "so the body is still and the posture is read from the direction of gravity."
        )
    else:
        text.append(
            f"The acceleration magnitude {moves} (standard deviation {fn(f.magnitude_std)} {unit}) "
            f"with its strongest rhythm at {fn(f.dominant_freq_hz)} Hz, which indicates repeated steps."
        )
    text.append(answer_text(label))
    return " ".join(text[:-1]) + "\n" + text[-1]


# ----------------------------------------------------------------------------- ECG


def detect_r_peaks(ecg: np.ndarray, fs: float) -> np.ndarray:
    """R-peak sample indices of a single-lead ECG (sleepecg's fast detector; the feature baseline's input)."""
    import sleepecg

    x = np.asarray(ecg, dtype=np.float64).ravel()
    if x.size < int(2 * fs):
        return np.zeros(0, dtype=np.int64)
    return np.asarray(sleepecg.detect_heartbeats(x, fs), dtype=np.int64)


def ecg_features(signal: np.ndarray, fs: float) -> RhythmFeatures:
    """Measure rhythm features on a (1, L) ECG with the numpy detector the descriptions use (`edge_tslm.heartbeats`)."""
    return rhythm_features(np.asarray(signal, dtype=np.float64)[0], fs)


def ecg_rationale(signal: np.ndarray, fs: float, label: str) -> str:
    """Describe heart rate and RR regularity, then answer."""
    return ecg_rationale_text(ecg_features(signal, fs), label)


def ecg_rationale_text(f: RhythmFeatures, label: str) -> str:
    """`ecg_rationale` from features already measured (the stream's leave out its untrusted samples)."""
    fn = format_number
    text = [f"The recording lasts {fn(f.duration_s)} s and {fn(f.n_beats)} heartbeats were detected."]
    if f.n_beats < 3:
        text.append("Too few beats were found to judge the rhythm, which suggests a poor-quality signal.")
    else:
        text.append(f"The mean heart rate is {fn(f.heart_rate_bpm)} bpm.")
        kind = rr_regularity(f.rr_cv)
        text.append(
            f"The RR intervals are {kind}: their coefficient of variation is {fn(f.rr_cv)}, "
            f"the RMSSD is {fn(f.rmssd_ms)} ms, and {fn(100 * f.rr_jump_frac)} % of successive intervals "
            f"change by more than 10 %."
        )
    return " ".join(text) + "\n" + answer_text(label)


# ----------------------------------------------------------------------------- TSQA


@dataclass(frozen=True)
class TrendFeatures:
    """Least-squares line through the series and the spread around it."""

    length: int
    slope: float  # per sample
    change: float  # slope * (length - 1): the fitted rise over the series
    resid_std: float
    ratio: float  # |change| / resid_std


def trend_features(x: np.ndarray) -> TrendFeatures:
    x = np.asarray(x, dtype=np.float64).ravel()
    t = np.arange(x.size, dtype=np.float64)
    slope, intercept = np.polyfit(t, x, 1)
    resid = x - (slope * t + intercept)
    rs = float(resid.std())
    change = float(slope * (x.size - 1))
    return TrendFeatures(x.size, float(slope), change, rs, abs(change) / max(rs, 1e-12))


def _detrended(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    from scipy import signal as sps  # lazily: the streaming runtime imports the task specs, not the features

    return sps.detrend(x, type="linear")


@dataclass(frozen=True)
class SeasonFeatures:
    """Strongest periodic component after removing the linear trend."""

    period: float  # samples
    power_share: float  # that bin's share of the non-DC spectral power


def season_features(x: np.ndarray) -> SeasonFeatures:
    d = _detrended(x)
    power = np.abs(np.fft.rfft(d)) ** 2
    power[0] = 0.0
    k = int(np.argmax(power[1:])) + 1
    share = float(power[k] / max(power.sum(), 1e-30))
    return SeasonFeatures(period=float(d.size / k), power_share=share)


def _noise_scale(d: np.ndarray) -> float:
    """Robust noise std from first differences (MAD / sqrt 2): blind to trends, steps and slow waves."""
    diff = np.diff(d)
    return float(1.4826 * np.median(np.abs(diff - np.median(diff))) / np.sqrt(2.0))


@dataclass(frozen=True)
class ShiftFeatures:
    """Largest jump between the medians of adjacent windows (a level shift)."""

    position: int  # sample index where the jump is largest
    jump: float  # median after - median before
    noise: float  # robust noise std
    ratio: float  # |jump| / noise


def shift_features(x: np.ndarray) -> ShiftFeatures:
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    w = max(n // 8, 4)
    best_k, best = w, 0.0
    for k in range(w, n - w + 1):
        j = float(np.median(x[k : k + w]) - np.median(x[k - w : k]))
        if abs(j) > abs(best):
            best_k, best = k, j
    noise = _noise_scale(x)
    return ShiftFeatures(best_k, best, noise, abs(best) / max(noise, 1e-12))


@dataclass(frozen=True)
class SpikeFeatures:
    """Largest outlier against a running median, in robust standard deviations."""

    position: int
    value: float  # the series value there
    score: float  # |x - running median| / robust noise std


def spike_features(x: np.ndarray) -> SpikeFeatures:
    x = np.asarray(x, dtype=np.float64).ravel()
    from scipy import signal as sps

    med = sps.medfilt(x, kernel_size=9)
    r = x - med
    scale = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    z = np.abs(r) / max(scale, 1e-12)
    i = int(np.argmax(z))
    return SpikeFeatures(i, float(x[i]), float(z[i]))


# Decision thresholds shared by the generator (which rejects ambiguous series) and the text.
TREND_RATIO_CLEAR = 3.0  # |change| / resid_std above this: a trend
TREND_RATIO_FLAT = 0.5  # below this: flat
SEASON_SHARE_YES = 0.3
SEASON_SHARE_NO = 0.1
SHIFT_RATIO_YES = 6.0
SHIFT_RATIO_NO = 2.5
SPIKE_SCORE_YES = 10.0
SPIKE_SCORE_NO = 6.0


def tsqa_rationale(x: np.ndarray, question: str, label: str) -> str:
    """Rationale for a synthetic TSQA question ('trend', 'seasonality', 'level shift', 'spike')."""
    fn = format_number
    if question == "trend":
        f = trend_features(x)
        direction = "rises" if f.change >= 0 else "falls"
        text = (
            f"A least-squares line through the {fn(f.length)} samples {direction} by {fn(abs(f.change))} "
            f"(slope {fn(f.slope)} per sample), while the values scatter around it with a standard deviation "
            f"of {fn(f.resid_std)}; the change is {fn(f.ratio)} times that scatter."
        )
    elif question == "seasonality":
        f = season_features(x)
        text = (
            f"After removing the linear trend, the strongest periodic component has a period of "
            f"{fn(f.period)} samples and carries {fn(f.power_share)} of the spectral power."
        )
    elif question == "level shift":
        f = shift_features(x)
        text = (
            f"The largest jump between the medians of adjacent windows is {fn(f.jump)} at sample "
            f"{fn(f.position)}, which is {fn(f.ratio)} times the sample-to-sample noise level of {fn(f.noise)}."
        )
    elif question == "spike":
        f = spike_features(x)
        text = (
            f"The most extreme point is at sample {fn(f.position)} with value {fn(f.value)}, "
            f"{fn(f.score)} robust standard deviations away from the running median."
        )
    else:
        raise ValueError(f"unknown TSQA question {question!r}")
    return text + "\n" + answer_text(label)
