"""The numbers a generated ECG rationale states, set against the ones measured on the same window (numpy only).

A model states the beats, heart rate, RR coefficient of variation and RR-jump share it was trained to write
(`edge_tslm.data.rationale.ecg_rationale`). One that reads them from its text can copy them; one that reads the RR
intervals as a series estimates them, and was measured 8.95 bpm off on the median record
(benchmarks/results/rationale_numbers.md). The runtime has the measured numbers, so a stream reports them beside the
rationale and flags a rationale whose numbers are off, instead of passing a guessed number on as a measurement.
"""

from __future__ import annotations

import math
import re

import numpy as np

from edge_tslm.heartbeats import rhythm_features
from edge_tslm.prompts import format_number

__all__ = ["ECG_RATIONALE_NUMBERS", "HAR_RATIONALE_NUMBERS", "TOLERANCE", "check_ecg_rationale", "measured_ecg_numbers", "stated_numbers"]

ECG_RATIONALE_NUMBERS = {  # what the ECG rationale template states, as edge_tslm.data.rationale writes it
    "beats": re.compile(r"(\d+) heartbeats were detected"),
    "rate_bpm": re.compile(r"heart rate is ([\d.]+) bpm"),
    "rr_cv": re.compile(r"coefficient of variation is ([\d.]+)"),
    "jumps_pct": re.compile(r"([\d.]+) % of successive intervals"),
}
# (absolute, relative): a stated number is off when it differs from the measured one by more than both. The
# relative part covers the 3 significant digits a rationale prints; the absolute part a beat at a window's edge.
TOLERANCE = {"beats": (2.0, 0.05), "rate_bpm": (3.0, 0.03), "rr_cv": (0.02, 0.15), "jumps_pct": (5.0, 0.0)}
_UNITS = {"beats": "beats", "rate_bpm": "bpm", "rr_cv": "RR CV", "jumps_pct": "% RR jumps"}


HAR_RATIONALE_NUMBERS = {  # what edge_tslm.data.rationale.har_rationale states (axes named x, y, z as HAPT's)
    **{f"mean_{c}": re.compile(rf"(-?[\d.]+) g on {c}\b") for c in "xyz"},
    "magnitude_std": re.compile(r"standard deviation (-?[\d.]+) g"),
    "dominant_hz": re.compile(r"strongest rhythm at ([\d.]+) Hz"),
}


def stated_numbers(text: str, patterns: dict[str, re.Pattern] = ECG_RATIONALE_NUMBERS) -> dict[str, float]:
    """The numbers a rationale states (one it does not state is absent); `patterns`: ECG's, or HAR_RATIONALE_NUMBERS."""
    out = {}
    for key, pat in patterns.items():
        m = pat.search(text)
        if m:
            try:
                out[key] = float(m.group(1).rstrip("."))
            except ValueError:
                pass
    return out


def measured_ecg_numbers(ecg: np.ndarray, fs: float, exclude: np.ndarray | None = None) -> dict[str, float]:
    """The same numbers measured on one ECG lead (L,); `exclude` (L,) bool marks untrusted samples. A number that is
    undefined (too few beats) is absent."""
    f = rhythm_features(ecg, fs, exclude)
    out = {"beats": float(f.n_beats), "rate_bpm": f.heart_rate_bpm, "rr_cv": f.rr_cv, "jumps_pct": 100.0 * f.rr_jump_frac}
    return {k: round(float(v), 4) for k, v in out.items() if math.isfinite(v)}


def check_ecg_rationale(text: str, measured: dict[str, float]) -> dict:
    """{"stated", "measured", "differs": keys whose stated number is off, "message": one line saying how, or None}."""
    stated = stated_numbers(text)
    differs = []
    for key, value in stated.items():
        if key not in measured:
            continue
        absolute, relative = TOLERANCE[key]
        if abs(value - measured[key]) > max(absolute, relative * abs(measured[key])):
            differs.append(key)
    message = None
    if differs:
        parts = [f"states {format_number(stated[k])} {_UNITS[k]}, measured {format_number(measured[k])}" for k in differs]
        message = "the rationale's numbers differ from the window's: " + "; ".join(parts)
    return {"stated": stated, "measured": measured, "differs": differs, "message": message}
