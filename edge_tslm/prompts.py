"""Prompt text and the ``Answer:`` parser, shared by training, evaluation and the runtime (numpy/str only).

"Scale is text": the encoder sees each channel z-normalised; the original mean, std, unit,
sampling rate and duration are written into that channel's description, so nothing the
normalisation removes is lost to the language model.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from edge_tslm.constants import ANSWER_PREFIX, END_CHUNK_TOKEN, TS_TOKEN
from edge_tslm.signals import TSInput, znormalize

__all__ = [
    "format_number",
    "describe_series",
    "ModelInput",
    "build_model_input",
    "answer_text",
    "parse_answer",
    "normalize_label",
]


def format_number(x: float, digits: int = 3) -> str:
    """`digits` significant digits (3: ``1.23e-05``), plain for 1e-3 <= |x| < 1e5; ``float()`` parses it back.

    Short numbers cost few tokens and read the same in every description and rationale.
    """
    x = float(x)
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x == 0:
        return "0"
    sci = f"{x:.{max(1, digits) - 1}e}"  # rounds to `digits` significant digits first, so 99999 -> 1.00e+05 picks the right form
    rounded = Decimal(sci)
    if Decimal("1e-3") <= abs(rounded) < Decimal("1e5"):
        text = format(rounded, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    mantissa, exponent = sci.split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{exponent}"


# "rr" and "beats" write measured numbers into the description; "rr_series" adds the ECG's RR intervals as a second
# series instead (`edge_tslm.heartbeats.rr_tachogram`), so the text holds no numbers (with series_text="none").
SERIES_FEATURES = ("", "rr", "beats", "rr_series")
RR_SERIES_UNIT = "s"
# How each channel is described: "full" says duration, rate, mean and std (3 digits); "short" only mean (3 digits)
# and std (2 digits); "none" only its name (and any measured text): the series then goes to the encoder as recorded and
# the encoder's scale embedding reads its mean and std (EncoderConfig.scale_token). A stream pays for every per-window
# token: HAR's 125 become 72 with "short" and the question first (benchmarks/prompt_tokens.py), fewer still with "none".
SERIES_TEXTS = ("full", "short", "none")


def describe_series(
    name: str, *, mean: float, std: float, unit: str, fs: float, n_samples: int, measured: str = "", text: str = "full"
) -> str:
    """One channel's description: what the z-normalised numbers meant before normalisation, plus any
    `measured` text (e.g. the ECG's heart rate and RR irregularity); `text` is one of SERIES_TEXTS."""
    if text not in SERIES_TEXTS:
        raise ValueError(f"unknown series_text {text!r}; choose one of {SERIES_TEXTS}")
    u = f" {unit}" if unit else ""
    duration = n_samples / fs
    extra = f", {measured}" if measured else ""
    if text == "none":  # the scale goes to the encoder as numbers, not as text
        return f"{name}: {measured}" if measured else f"{name}:"
    if text == "short":  # the window's length and rate are the same every time: the pre-prompt says them
        return f"{name}: mean {format_number(mean)}{u}, std {format_number(std, 2)}{u}{extra}"
    # Kept short: every token here is paid for at every training step and every streamed window.
    return (
        f"{name}: {format_number(duration)} s at {format_number(fs)} Hz, "
        f"mean {format_number(mean)}{u}, std {format_number(std)}{u}{extra}"
    )


def measured_text(row: np.ndarray, fs: float, features: str, exclude: np.ndarray | None = None) -> str:
    """What `features` adds to a channel's description, numpy only: "rr" heart rate and RR irregularity,
    "beats" those plus the RR range and the beats' shape (`edge_tslm.heartbeats.describe_beats`).
    `exclude` (L,) bool marks samples not to measure from (a stream's filled gaps and noise bursts)."""
    if features not in SERIES_FEATURES:
        raise ValueError(f"unknown series_features {features!r}; choose one of {SERIES_FEATURES}")
    if features == "rr":
        from edge_tslm.heartbeats import describe_rhythm

        return describe_rhythm(row, fs, exclude)
    if features == "beats":
        from edge_tslm.heartbeats import describe_beats

        return describe_beats(row, fs, exclude)
    return ""  # "rr_series" is a series, not text: build_model_input adds it


def rr_series_name(channel: str, n_channels: int) -> str:
    """The RR series' name in the text: "RR intervals", or "<channel> RR intervals" beside several leads."""
    return "RR intervals" if n_channels == 1 else f"{channel} RR intervals"


@dataclass(frozen=True)
class ModelInput:
    """What a model consumes: z-normalised series (one 1-D float32 per channel) and the text around them."""

    series: tuple[np.ndarray, ...]
    text: str
    means: tuple[float, ...]
    stds: tuple[float, ...]
    # per series, the samples a measurement must not come from (a stream's filled gaps and noise bursts), or None
    untrusted: tuple[np.ndarray | None, ...] = ()


def build_model_input(
    inp: TSInput, *, pre_prompt: str = "", features: str = "", question_first: bool = False, series_text: str = "full",
    untrusted: np.ndarray | None = None,
) -> ModelInput:
    """Normalise each channel and write its scale into the text; one ``<ts><endofchunk>`` per series.

    If ``meta.mean``/``meta.std`` are given the signal is taken as already normalised and those
    stats are the ones described. ``features`` (a model's ``series_features``) adds measured numbers
    to each channel's description, computed on the signal as given (the model's rate, cropped).
    ``question_first`` puts the question before the series: a stream asks the same question of every
    window, so a runtime can then cache it with the rest of the prompt's head. ``untrusted`` (C, L) bool
    marks samples the measured numbers must not come from (a stream's interpolated holes and noise bursts).
    With ``series_text="none"`` the series are returned as recorded (float32, not normalised): the model's encoder
    normalises them and reads their scale itself (``EncoderConfig.scale_token``).
    """
    meta = inp.meta
    if meta.mean is not None and meta.std is not None:
        normed = np.asarray(inp.signal, dtype=np.float32)
        means, stds = tuple(meta.mean), tuple(meta.std)
    else:
        normed, mean, std = znormalize(inp.signal)
        means, stds = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    n_samples = normed.shape[1]
    parts = [pre_prompt.strip()] if pre_prompt.strip() else []
    if question_first:
        parts.append(inp.prompt.strip())
    raw = np.asarray(inp.signal, dtype=np.float64)
    if untrusted is not None and np.shape(untrusted) != raw.shape:
        raise ValueError(f"untrusted mask has shape {np.shape(untrusted)}, the signal {raw.shape}; pass one flag per sample")
    if series_text == "none":  # as recorded: the encoder normalises and reads the scale itself
        normed = raw if meta.mean is None or meta.std is None else raw * np.asarray(stds)[:, None] + np.asarray(means)[:, None]
    out_series, out_means, out_stds, out_untrusted = [], [], [], []
    for c, (name, m, s, row) in enumerate(zip(meta.channels, means, stds, raw)):
        exclude = None if untrusted is None else np.asarray(untrusted[c], dtype=bool)
        measured = measured_text(row, meta.fs, features, exclude) if features else ""
        desc = describe_series(name, mean=m, std=s, unit=meta.unit, fs=meta.fs, n_samples=n_samples, measured=measured,
                               text=series_text)
        parts.append(f"{desc} {TS_TOKEN}{END_CHUNK_TOKEN}")
        out_series.append(normed[c])
        out_means.append(m)
        out_stds.append(s)
        out_untrusted.append(exclude)
        if features == "rr_series":
            from edge_tslm.heartbeats import TACHOGRAM_HZ, rr_tachogram

            rr = rr_tachogram(row, meta.fs, exclude)  # (T * 4,) seconds
            rr_normed, rr_mean, rr_std = znormalize(rr[None, :])
            rr_m, rr_s = float(rr_mean[0]), float(rr_std[0])
            rr_desc = describe_series(rr_series_name(name, len(meta.channels)), mean=rr_m, std=rr_s, unit=RR_SERIES_UNIT,
                                      fs=TACHOGRAM_HZ, n_samples=rr.size, text=series_text)
            parts.append(f"{rr_desc} {TS_TOKEN}{END_CHUNK_TOKEN}")
            out_series.append(rr if series_text == "none" else rr_normed[0])
            out_means.append(rr_m)
            out_stds.append(rr_s)
            out_untrusted.append(None)  # the tachogram already reads untrusted stretches as the median interval
    if not question_first:
        parts.append(inp.prompt.strip())
    series = tuple(np.ascontiguousarray(row, dtype=np.float32) for row in out_series)
    return ModelInput(series=series, text="\n".join(parts) + "\n", means=tuple(out_means), stds=tuple(out_stds),
                      untrusted=tuple(out_untrusted))


def answer_text(label: str) -> str:
    """The line every generation ends with, e.g. ``Answer: walking``."""
    return f"{ANSWER_PREFIX} {label}"


# Any tag without spaces in angle brackets: <|im_end|>, </s>, <eos>, <endofchunk>, <end_of_turn>, ...
_SPECIAL_TOKEN = re.compile(r"<[^<>\s]{1,40}>")
# "Answer:", "ANSWER :", "answer - x", "Answer — x"; a dash must be followed by space so "answer-based" is not one.
_ANSWER_MARK = re.compile(r"\banswer\s*(?::|[-–—](?=\s|$))", re.IGNORECASE)
_LEAD_IN = re.compile(r"^(?:(?:the|my)\s+)?(?:final\s+)?answer\s+is\s*:?\s+|^it\s+is\s+", re.IGNORECASE)
_STRIP = string.punctuation + string.whitespace + "“”‘’«»„`´·…"


def normalize_label(text: str) -> str:
    """Lowercase, collapse whitespace, strip surrounding punctuation/quotes: the form labels are compared in."""
    return " ".join(text.split()).strip(_STRIP).lower()


def _strip_lead_in(answer: str) -> str:
    """Drop "the answer is" / "it is" before the label, as small models often write it."""
    while True:
        stripped = _LEAD_IN.sub("", answer).strip(_STRIP)
        if stripped == answer:
            return answer
        answer = stripped


def parse_answer(text: str, labels: Sequence[str] | None = None) -> str | None:
    """The label after the LAST ``Answer:``; ``None`` when missing, empty or not one of ``labels``.

    With ``labels`` only an exact match after normalisation counts (never a prefix: "sitting"
    does not match "sitting down"); the canonical label is returned. Without labels the
    normalised answer text is returned. An empty or malformed answer is never right.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_answer expects a string, got {type(text).__name__}")
    cleaned = _SPECIAL_TOKEN.sub("\n", text)  # text after an end-of-turn token is a new line at best
    marks = list(_ANSWER_MARK.finditer(cleaned))
    if not marks:
        return None
    rest = cleaned[marks[-1].end() :]
    line = next((ln for ln in rest.splitlines() if ln.strip(_STRIP)), "")
    answer = _strip_lead_in(normalize_label(line))
    if not answer:
        return None
    if labels is None:
        return answer
    canonical: dict[str, str] = {}
    for label in labels:
        key = normalize_label(label)
        if key in canonical and canonical[key] != label:
            raise ValueError(f"labels {canonical[key]!r} and {label!r} are the same after normalisation")
        canonical[key] = label
    return canonical.get(answer)
