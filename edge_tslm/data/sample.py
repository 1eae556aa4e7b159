"""The unit every dataset yields: one signal, its meta, a question, a label and a rationale."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_tslm.signals import SignalMeta


@dataclass(frozen=True)
class TaskSpec:
    """A classification task: its allowed labels and the text around the series.

    `pre_prompt` describes the context (sensor, placement); `question` asks and lists the
    options, so the model (and the classify path that scores each label) sees one wording.
    """

    name: str
    labels: tuple[str, ...]
    pre_prompt: str
    question: str


@dataclass(frozen=True)
class Sample:
    """One training/evaluation example.

    `signal` stays in raw physical units (float32, (C, L)): the model side z-normalises it
    and writes the scale into text. `rationale` is built from features measured on this
    signal and ends with `answer_text(label)`. `group` (subject or record id) is what
    splits are made on, so no person/record leaks between train and test.
    """

    signal: np.ndarray
    meta: SignalMeta
    prompt: str
    label: str
    rationale: str
    task: str
    group: str

    def __post_init__(self) -> None:
        if not isinstance(self.signal, np.ndarray) or self.signal.ndim != 2:
            raise ValueError("Sample.signal must be a 2-D numpy array (channels, length)")
        if self.signal.dtype != np.float32:
            raise ValueError("Sample.signal must be float32; cast with .astype(np.float32)")
