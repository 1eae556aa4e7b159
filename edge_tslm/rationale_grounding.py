"""The window's measured numbers written into an ECG rationale while it is generated (numpy only).

A model trained on rationales written from measured features (`edge_tslm.data.rationale.ecg_rationale`) learns
their wording but estimates their numbers from what it reads, and misses (a median 7–10 bpm on the heart rate,
benchmarks/results/rationale_numbers*.md). The stream measures the same numbers on the same window. Grounded
generation lets the model write the rationale and, each time its text reaches a place where the template states a
measurement ("The mean heart rate is "), puts the measured value there instead of the model's guess; the words
around the numbers, and the answer, stay the model's. The RR regularity word is a measurement too (a threshold on
the RR coefficient of variation), so it is filled the same way. The HAR rationale's axis means, gravity
direction, movement words, magnitude spread and step rhythm are filled alike (`har_rationale_slots`).

Used by ``FlamingoTSLM.generate`` / ``OnnxBackend.generate`` (``ground=``) through the Streamer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_tslm.heartbeats import rhythm_features
from edge_tslm.prompts import format_number

__all__ = ["Slot", "Grounder", "rationale_grounder", "ecg_rationale_slots", "har_rationale_slots", "rr_regularity",
           "RR_REGULAR_CV", "RR_IRREGULAR_CV"]

RR_REGULAR_CV = 0.08  # below: "regular" (the rationale template's wording; edge_tslm.data.rationale uses these)
RR_IRREGULAR_CV = 0.15  # from here: "irregular"; between: "mildly variable"


def rr_regularity(rr_cv: float) -> str:
    """The rationale's word for an RR coefficient of variation."""
    return "regular" if rr_cv < RR_REGULAR_CV else "mildly variable" if rr_cv < RR_IRREGULAR_CV else "irregular"


@dataclass(frozen=True)
class Slot:
    """Where the template states one measurement: ``cue`` matches the end of the text generated so far, ``value``
    is the text to write next. A number follows the space the model wrote (the tokenizers we ship write the space
    before digits as a token of its own) and ends with the template's next word, which closes it; a word carries
    its own leading space."""

    name: str
    cue: re.Pattern
    value: str


@dataclass
class Grounder:
    """``grounder(text so far) -> text to force next, or None``; each slot is filled at most once, in any order."""

    slots: list[Slot]
    filled: list[str] = field(default_factory=list)

    def __call__(self, text: str) -> str | None:
        for s in self.slots:
            if s.name not in self.filled and s.cue.search(text):
                self.filled.append(s.name)
                return s.value
        return None


def ecg_rationale_slots(ecg: np.ndarray, fs: float, exclude: np.ndarray | None = None) -> list[Slot]:
    """The slots of `ecg_rationale`'s template for one lead (L,) at `fs` Hz, measured as the stream measures it
    (`exclude` (L,) bool: untrusted samples); a number that is undefined (too few beats) gets no slot."""
    f = rhythm_features(np.asarray(ecg, dtype=np.float64), fs, exclude)
    fn = format_number
    # each number is written with the template's word after it, so the model cannot go on with digits of its own
    slots = [Slot("duration_s", re.compile(r"The recording lasts $"), f"{fn(f.duration_s)} s"),
             Slot("beats", re.compile(r"lasts [\d.]+ s and $"), f"{fn(f.n_beats)} heartbeats")]
    numbers = [("rate_bpm", r"heart rate is $", f.heart_rate_bpm, " bpm"),
               ("rr_cv", r"coefficient of variation is $", f.rr_cv, ","),
               ("rmssd_ms", r"the RMSSD is $", f.rmssd_ms, " ms"),
               ("jumps_pct", r" ms, and $", 100 * f.rr_jump_frac, " %")]
    slots += [Slot(name, re.compile(cue), fn(v) + unit) for name, cue, v, unit in numbers if math.isfinite(v)]
    if math.isfinite(f.rr_cv):
        slots.append(Slot("regularity", re.compile(r"The RR intervals are$"), " " + rr_regularity(f.rr_cv)))
    return slots


def har_rationale_slots(signal: np.ndarray, fs: float, channels: Sequence[str], unit: str = "g") -> list[Slot]:
    """The slots of `har_rationale`'s template for one (C, L) accelerometer window (as the model reads it: in the
    wearer's gait frame for a gait model). A number's sign is the model's first choice after the word before it
    (" -0.99" is one token with its sign), so these slots fire on that word and write the space, sign and value."""
    from edge_tslm.data.rationale import har_features, har_movement  # (that module imports this one)

    f = har_features(signal, fs)
    fn, ch = format_number, list(channels)
    if len(ch) != len(f.axis_mean):
        raise ValueError(f"{len(ch)} channel names for a window of {len(f.axis_mean)} axes; name each axis")
    slots = [Slot(f"mean_{ch[0]}", re.compile(r"The mean acceleration is$"), f" {fn(f.axis_mean[0])} {unit} on {ch[0]}")]
    slots += [Slot(f"mean_{c}", re.compile(rf" on {re.escape(prev)},$"), f" {fn(m)} {unit} on {c}")
              for prev, c, m in zip(ch, ch[1:], f.axis_mean[1:])]
    g = f.gravity_axis
    slots += [Slot("gravity_axis", re.compile(r"gravity lies mostly along$"), f" {'+' if f.axis_mean[g] >= 0 else '-'}{ch[g]}"),
              Slot("movement", re.compile(r"The acceleration magnitude$"), " " + har_movement(f.magnitude_std)),
              Slot("magnitude_std", re.compile(r"standard deviation$"), f" {fn(f.magnitude_std)} {unit}"),
              Slot("dominant_hz", re.compile(r"strongest rhythm at$"), f" {fn(f.dominant_freq_hz)} Hz")]
    return slots


def rationale_grounder(ecg: bool, signal: np.ndarray, fs: float, channels: Sequence[str], unit: str,
                       exclude: np.ndarray | None = None) -> Grounder:
    """A fresh Grounder for one window's rationale: signal (C, L) at `fs` as the model reads it; an ECG rhythm
    model's (its first lead; `exclude` (L,) its untrusted samples) or a HAR model's (C axes named `channels`)."""
    if ecg:
        return Grounder(ecg_rationale_slots(np.asarray(signal)[0], fs, exclude))
    return Grounder(har_rationale_slots(signal, fs, channels, unit))
