"""Rationale drafts: the window's template rationales are the training template's text, the drafter continues the
output where it occurs in them, and a stream hands the backend a drafter of its window (decided label first).
That drafted decoding writes the undrafted text is tested on a real ONNX artifact in test_runtime_onnx.py."""

from __future__ import annotations

import numpy as np
import pytest

from edge_tslm.data.rationale import ecg_rationale, har_rationale
from edge_tslm.prompts import format_number
from edge_tslm.rationale_drafting import TemplateDrafter, rationale_drafter, template_rationales
from edge_tslm.runtime import StreamConfig
from test_rationale_grounding import FS, _ecg


def test_template_rationales_are_the_training_template_for_each_label():
    ecg = _ecg(np.random.default_rng(0).uniform(0.5, 1.1, 50))
    labels = ("normal", "atrial fibrillation")
    got = template_rationales(True, ecg[None], FS, ("ECG",), "mV", labels)
    assert got == [ecg_rationale(ecg[None], FS, lab) for lab in labels]
    acc = (np.random.default_rng(1).normal(0, 0.2, (3, 128)) + np.array([[0.0], [0.1], [0.9]])).astype(np.float32)
    got = template_rationales(False, acc, 50.0, ("x", "y", "z"), "g", ("walking", "lying"))
    assert got == [har_rationale(acc, 50.0, ("x", "y", "z"), "g", lab) for lab in ("walking", "lying")]
    # untrusted samples are left out of the measurement, as the grounder leaves them out
    hole = np.zeros(ecg.size, bool)
    hole[: ecg.size // 2] = True
    assert template_rationales(True, ecg[None], FS, ("ECG",), "mV", labels, hole) != got


def test_the_drafter_continues_the_longest_tail_it_finds():
    a, b = [1, 2, 3, 4, 5, 6, 7, 8, 9], [7, 3, 4, 20, 21, 22]
    d = TemplateDrafter([a, b], max_tokens=3)
    assert d([]) == [1, 2, 3] and d([1]) == [2, 3, 4]  # before a tail of min_match: a reference it starts
    assert d([9]) == []
    assert d([0, 3, 4]) == [5, 6, 7]  # the first reference where the tail occurs
    assert d([7, 3, 4]) == [20, 21, 22]  # a longer tail wins over an earlier reference
    assert d([5, 8, 9]) == []  # found only at the end of a reference: nothing follows
    assert TemplateDrafter([a], max_tokens=8)([2, 3]) == [4, 5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="max_tokens"):
        TemplateDrafter([a], max_tokens=0)
    with pytest.raises(ValueError, match="draft_tokens"):
        StreamConfig(task="afib", draft_tokens=-1)


def test_rationale_drafter_puts_the_decided_label_first():
    ecg = _ecg(np.full(60, 0.75))
    chars = lambda s: [ord(c) for c in s]  # noqa: E731 - a tokenizer of one id per character
    d = rationale_drafter(chars, True, ecg[None], FS, ("ECG",), "mV", ("normal", "atrial fibrillation"), "atrial fibrillation")
    text = "".join(map(chr, d.references[0]))
    assert text == ecg_rationale(ecg[None], FS, "atrial fibrillation") and text.endswith("Answer: atrial fibrillation")
    assert "".join(map(chr, d.references[1])).endswith("Answer: normal")


def test_a_stream_drafts_its_window_s_template_rationale():
    """A backend whose generate takes draft= gets one per rationale: the window's template text with the stream's
    decision first and the numbers it measured; draft_tokens=0, or a backend without draft=, gets none."""
    from test_runtime_stream import _RationaleBackend, chunks, of, run

    class Drafting(_RationaleBackend):
        @staticmethod
        def encode_text(s):
            return [ord(c) for c in s]

        def __init__(self, *a):
            super().__init__(*a)
            self.drafts = []

        def generate(self, text, encoded, max_new_tokens, *, ground=None, draft=None):
            self.drafts.append(draft)
            return super().generate(text, encoded, max_new_tokens)

    x = _ecg(np.full(60, 0.75))[None]  # 80 bpm
    be = Drafting(98.0, 33)
    (w,) = of(run(be, chunks(x, 3000, fs=FS), task="afib", rationale_on="af"), "window")
    (d,) = be.drafts
    assert d.max_tokens == StreamConfig(task="afib").draft_tokens
    first = "".join(map(chr, d.references[0]))
    beats = format_number(w["rationale_check"]["measured"]["beats"])
    assert first.startswith(f"The recording lasts 30 s and {beats} heartbeats") and first.endswith("Answer: atrial fibrillation")
    be = Drafting(98.0, 33)
    run(be, chunks(x, 3000, fs=FS), task="afib", rationale_on="af", draft_tokens=0)
    assert be.drafts == [None]


def test_certain_tokens_feed_written_text_or_the_choice_then_the_grounders_text_within_the_limit():
    from edge_tslm.rationale_drafting import certain_tokens

    out = [1]
    assert certain_tokens(out, [7, 8, 9], 3, lambda: 99, (), lambda: []) == ([7, 8], 2) and out == [1, 7, 8]
    out, asks = [1], iter([[5, 6], []])
    assert certain_tokens(out, [], 10, lambda: 4, (0,), lambda: next(asks)) == ([4, 5, 6], 2) and out == [1, 4, 5, 6]
    out = [1]
    assert certain_tokens(out, [], 10, lambda: 0, (0,), lambda: [3]) is None and out == [1]  # an end token: nothing fed
