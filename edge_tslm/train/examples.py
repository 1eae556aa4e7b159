"""Sample (raw signal + meta + question) -> Example (text with <ts> markers, z-normalised series, target)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_tslm.data.sample import Sample
from edge_tslm.prompts import answer_text, build_model_input
from edge_tslm.signals import SignalMeta, TSInput, resample, validate

RATIONALE_REQUEST = " Explain briefly, then answer."


def layout_kwargs(cfg) -> dict:
    """How a model (a TSLMConfig) wants its inputs laid out: its rate, longest span and text layout."""
    return {"fs": cfg.fs, "max_seconds": cfg.max_seconds, "features": cfg.series_features, "question_first": cfg.question_first,
            "series_text": cfg.series_text}


@dataclass(frozen=True)
class Example:
    text: str
    series: tuple[np.ndarray, ...]
    target: str
    label: str
    rationale: bool = False  # the target is the rationale (ending in the answer), not the answer alone


def prepare_signal(signal: np.ndarray, meta: SignalMeta, fs: float = 0.0, max_seconds: float = 0.0):
    """Resample to the model's rate and crop to its longest span (the start is kept)."""
    if fs and meta.fs != fs:
        signal = resample(signal, meta.fs, fs)
        meta = SignalMeta(fs=fs, unit=meta.unit, channels=meta.channels)
    if max_seconds:
        signal = signal[:, : int(round(max_seconds * meta.fs))]
    return signal, meta


def example_from_input(
    inp: TSInput,
    *,
    pre_prompt: str = "",
    rationale: bool = False,
    fs: float = 0.0,
    max_seconds: float = 0.0,
    features: str = "",
    question_first: bool = False,
    series_text: str = "full",
) -> Example:
    """The text and series a model reads for this input (no target): `layout_kwargs(cfg)` gives the layout."""
    signal, meta = prepare_signal(inp.signal, inp.meta, fs, max_seconds)
    question = inp.prompt + (RATIONALE_REQUEST if rationale else "")
    mi = build_model_input(validate(signal, meta, question), pre_prompt=pre_prompt, features=features,
                           question_first=question_first, series_text=series_text)
    return Example(mi.text, mi.series, "", "")


def make_example(sample: Sample, *, rationale: bool = False, **layout) -> Example:
    """The answer-only target trains the classify path; the rationale target (asked for in the prompt)
    trains the explanation generated on demand. `layout`: example_from_input's keywords."""
    ex = example_from_input(TSInput(sample.signal, sample.meta, sample.prompt), rationale=rationale, **layout)
    target = sample.rationale if rationale else answer_text(sample.label)
    return Example(ex.text, ex.series, target, sample.label, rationale)
