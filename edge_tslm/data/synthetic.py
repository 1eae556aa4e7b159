"""Synthetic data that needs no download: stage-1 TSQA series and a sinus-vs-AF ECG.

Deterministic by seed: sample i is drawn from `np.random.default_rng([seed, i])`, so the
first k samples are the same whatever n is asked for. Each TSQA series is generated for its
label and then measured; a series whose measurement is ambiguous (e.g. a trend too weak
to see against the noise) is redrawn, so the rationale — written from the measurement —
always supports the label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_tslm.data import rationale as R
from edge_tslm.data.sample import Sample, TaskSpec
from edge_tslm.signals import SignalMeta

# ----------------------------------------------------------------------------- TSQA

_TSQA_PRE = "You are given a univariate time series sampled at regular steps."
TSQA_TASKS: dict[str, TaskSpec] = {
    "trend": TaskSpec(
        "tsqa_trend",
        ("increasing", "decreasing", "flat"),
        _TSQA_PRE,
        "What is the overall trend of the series? Options: increasing, decreasing, flat.",
    ),
    "seasonality": TaskSpec(
        "tsqa_seasonality", ("yes", "no"), _TSQA_PRE, "Does the series show a repeating seasonal pattern? Options: yes, no."
    ),
    "level shift": TaskSpec(
        "tsqa_level_shift", ("yes", "no"), _TSQA_PRE, "Is there a sudden level shift in the series? Options: yes, no."
    ),
    "spike": TaskSpec("tsqa_spike", ("yes", "no"), _TSQA_PRE, "Does the series contain a spike (an isolated outlier)? Options: yes, no."),
}
TSQA_QUESTIONS: tuple[str, ...] = tuple(TSQA_TASKS)


def _tsqa_series(rng: np.random.Generator, length: int, want: dict[str, object]) -> np.ndarray:
    """One series with the components in `want` forced and the others drawn at random.

    want: {"trend": "increasing"|"decreasing"|"flat"|None, "seasonality": bool|None, ...};
    None means "random" (present with probability 0.3).
    """
    t = np.arange(length, dtype=np.float64)
    sigma = 1.0
    x = rng.normal(0.0, sigma, length)

    trend = want.get("trend")
    if trend is None:
        trend = rng.choice(["increasing", "decreasing", "flat"], p=[0.15, 0.15, 0.7])
    if trend != "flat":
        change = rng.uniform(5.0, 15.0) * sigma * (1 if trend == "increasing" else -1)
        x += change * t / (length - 1)

    season = want.get("seasonality")
    if season is None:
        season = rng.random() < 0.3
    if season:
        period = rng.uniform(8.0, length / 4)
        x += rng.uniform(2.0, 4.0) * sigma * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))

    shift = want.get("level shift")
    if shift is None:
        shift = rng.random() < 0.3
    if shift:
        pos = int(rng.integers(length // 4, 3 * length // 4))
        x[pos:] += rng.uniform(8.0, 15.0) * sigma * rng.choice([-1.0, 1.0])

    spike = want.get("spike")
    if spike is None:
        spike = rng.random() < 0.3
    if spike:
        for _ in range(int(rng.integers(1, 3))):
            x[int(rng.integers(0, length))] += rng.uniform(14.0, 25.0) * sigma * rng.choice([-1.0, 1.0])

    scale = 10 ** rng.uniform(-1.0, 2.0)  # the model must read scale from the text
    return (rng.uniform(-50.0, 50.0) + scale * x).astype(np.float32)


def _tsqa_consistent(x: np.ndarray, question: str, label: str) -> bool:
    """True when the measurement the rationale states clearly supports `label`."""
    if question == "trend":
        f = R.trend_features(x)
        if label == "flat":
            return f.ratio < R.TREND_RATIO_FLAT
        return f.ratio > R.TREND_RATIO_CLEAR and (f.change > 0) == (label == "increasing")
    if question == "seasonality":
        s = R.season_features(x).power_share
        return s > R.SEASON_SHARE_YES if label == "yes" else s < R.SEASON_SHARE_NO
    if question == "level shift":
        r = R.shift_features(x).ratio
        return r > R.SHIFT_RATIO_YES if label == "yes" else r < R.SHIFT_RATIO_NO
    if question == "spike":
        z = R.spike_features(x).score
        return z > R.SPIKE_SCORE_YES if label == "yes" else z < R.SPIKE_SCORE_NO
    raise ValueError(f"unknown TSQA question {question!r}")


def tsqa_sample(index: int, seed: int = 0, length: int = 256, questions: Sequence[str] = TSQA_QUESTIONS) -> Sample:
    """The `index`-th TSQA sample for `seed` (questions cycle, labels drawn uniformly)."""
    rng = np.random.default_rng([seed, index])
    question = questions[index % len(questions)]
    spec = TSQA_TASKS[question]
    label = str(rng.choice(spec.labels))
    value: object = label if question == "trend" else (label == "yes")
    for _ in range(500):
        # Keep confounders away from the asked component so "no"/"flat" stays learnable.
        want: dict[str, object] = {question: value}
        if question in ("trend", "level shift"):
            want.setdefault("level shift", False)
            want.setdefault("trend", "flat" if question == "level shift" else None)
        if question == "seasonality":
            want["trend"] = None
        x = _tsqa_series(rng, length, want)
        if _tsqa_consistent(x, question, label):
            break
    else:  # pragma: no cover - thresholds leave wide margins
        raise RuntimeError(f"could not draw a consistent {question!r}={label!r} series")
    return Sample(
        signal=x[None, :],
        meta=SignalMeta(fs=1.0, unit="", channels=("series",)),
        prompt=spec.question,
        label=label,
        rationale=R.tsqa_rationale(x, question, label),
        task=spec.name,
        group=f"tsqa-{seed}-{index}",
    )


def tsqa_samples(n: int, seed: int = 0, length: int = 256, questions: Sequence[str] = TSQA_QUESTIONS) -> list[Sample]:
    """`n` stage-1 TSQA samples (trend, seasonality, level shift, spike questions in turn)."""
    return [tsqa_sample(i, seed, length, questions) for i in range(n)]


# ----------------------------------------------------------------------------- ECG

SYNTH_ECG_TASK = TaskSpec(
    "ecg_rhythm_synthetic",
    ("normal", "atrial fibrillation"),
    "You are given a single-lead ECG recording in millivolts.",
    "What is the heart rhythm? Options: normal, atrial fibrillation.",
)


def _gauss(t: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - center) / width) ** 2)


def synthetic_ecg(rhythm: str, fs: float = 300.0, duration_s: float = 30.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """One single-lead ECG in mV, shape (L,).

    normal: sinus rhythm, 55-100 bpm, small respiratory RR modulation, P-QRS-T beats.
    atrial fibrillation: irregularly irregular RR (log-normal, CV ~ 0.2-0.3), no P waves,
    4-9 Hz fibrillatory waves. Both get baseline wander and white noise.
    """
    if rhythm not in SYNTH_ECG_TASK.labels:
        raise ValueError(f"rhythm must be one of {SYNTH_ECG_TASK.labels}, got {rhythm!r}")
    rng = rng if rng is not None else np.random.default_rng()
    n = int(round(duration_s * fs))
    t = np.arange(n) / fs
    af = rhythm == "atrial fibrillation"
    hr = rng.uniform(75, 140) if af else rng.uniform(55, 100)
    rr0 = 60.0 / hr
    # Beat times, starting a little before 0 so the first beat may be partial.
    beats: list[float] = []
    tb = -rng.uniform(0, rr0)
    while tb < duration_s + 1.0:
        beats.append(tb)
        if af:
            rr = rr0 * np.exp(rng.normal(0.0, rng.uniform(0.18, 0.3)))
        else:
            rr = rr0 * (1 + 0.04 * np.sin(2 * np.pi * 0.25 * tb) + rng.normal(0, 0.01))
        tb += max(rr, 0.28)
    r_amp = rng.uniform(0.6, 1.6)
    x = np.zeros(n)
    for b in beats:
        lo, hi = max(0, int((b - 0.4) * fs)), min(n, int((b + 0.6) * fs))
        if hi <= lo:
            continue
        tt = t[lo:hi]
        wave = (
            -0.1 * r_amp * _gauss(tt, b - 0.03, 0.01)
            + r_amp * _gauss(tt, b, 0.011)
            - 0.25 * r_amp * _gauss(tt, b + 0.03, 0.012)
            + 0.25 * r_amp * _gauss(tt, b + 0.25 * np.sqrt(rr0), 0.05)
        )
        if not af:
            wave += 0.12 * r_amp * _gauss(tt, b - 0.18, 0.025)
        x[lo:hi] += wave
    if af:
        f0 = rng.uniform(4.0, 9.0)
        drift = np.cumsum(rng.normal(0, 0.02, n)) / np.sqrt(fs)  # slow frequency wander
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.tanh(drift))) / fs
        x += rng.uniform(0.03, 0.12) * (np.sin(phase) + 0.3 * np.sin(2 * phase + rng.uniform(0, 6.28)))
    x += rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(0.15, 0.4) * t + rng.uniform(0, 6.28))
    x += rng.normal(0, rng.uniform(0.005, 0.03), n)
    return x


def synthetic_ecg_sample(index: int, seed: int = 0, fs: float = 300.0, duration_s: float = 30.0) -> Sample:
    """The `index`-th synthetic ECG sample (labels alternate normal / atrial fibrillation)."""
    rng = np.random.default_rng([seed, index, 7])
    label = SYNTH_ECG_TASK.labels[index % 2]
    sig = synthetic_ecg(label, fs, duration_s, rng).astype(np.float32)[None, :]
    return Sample(
        signal=sig,
        meta=SignalMeta(fs=fs, unit="mV", channels=("ECG",)),
        prompt=SYNTH_ECG_TASK.question,
        label=label,
        rationale=R.ecg_rationale(sig, fs, label),
        task=SYNTH_ECG_TASK.name,
        group=f"synthetic-ecg-{seed}-{index}",
    )


def synthetic_ecg_samples(n: int, seed: int = 0, fs: float = 300.0, duration_s: float = 30.0) -> list[Sample]:
    """`n` synthetic ECG samples, half sinus rhythm, half AF."""
    return [synthetic_ecg_sample(i, seed, fs, duration_s) for i in range(n)]
