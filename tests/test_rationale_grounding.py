"""Grounded ECG rationales: the slots hold the numbers the stream measures, in the rationale template's wording,
each is written once where the text reaches it, and a stream's rationale then states the measured numbers (and
passes its own check) where a model's guesses were flagged before."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edge_tslm.data.rationale import ecg_rationale
from edge_tslm.prompts import format_number
from edge_tslm.rationale_check import measured_ecg_numbers, stated_numbers
from edge_tslm.rationale_grounding import RR_IRREGULAR_CV, RR_REGULAR_CV, Grounder, ecg_rationale_slots, rr_regularity
from test_heartbeats import _synthetic_ecg

FS = 300.0


def _ecg(rr: np.ndarray) -> np.ndarray:
    x, _ = _synthetic_ecg(rr, FS)
    return x[: int(30 * FS)].astype(np.float32)


def _write(template: str, grounder: Grounder) -> str:
    """A model that writes `template` piece by piece (a word with its space, a lone space before digits, one digit or
    '.'), asking the grounder after each piece; a forced value replaces the number the model was about to write."""
    pieces = re.findall(r" ?[A-Za-z%]+|\d|\.|[^\w\s.]| |\n", template)
    out, i = "", 0
    while i < len(pieces):
        out += pieces[i]
        i += 1
        value = grounder(out)
        if value is not None:
            out += value
            if value[:1].isdigit():  # the model's own number and the word after it, now written, are skipped
                while i < len(pieces) and re.fullmatch(r"\d|\.", pieces[i]):
                    i += 1
                i += 1
            else:  # a word: the model's own words up to the next mark are skipped
                while i < len(pieces) and re.fullmatch(r" [A-Za-z]+", pieces[i]):
                    i += 1
    return out


def test_slots_hold_the_measured_numbers_in_the_template_s_wording():
    ecg = _ecg(np.random.default_rng(0).uniform(0.5, 1.1, 50))  # irregular: AF-like
    slots = {s.name: s.value for s in ecg_rationale_slots(ecg, FS)}
    measured = measured_ecg_numbers(ecg, FS)
    assert set(slots) == {"duration_s", "beats", "rate_bpm", "rr_cv", "rmssd_ms", "jumps_pct", "regularity"}
    assert slots["rate_bpm"] == format_number(measured["rate_bpm"]) + " bpm"  # the unit closes the number
    assert slots["beats"] == format_number(measured["beats"]) + " heartbeats"
    assert slots["regularity"] == " irregular"
    # the training rationale of the same window states exactly these numbers
    written = ecg_rationale(ecg[None], FS, "atrial fibrillation")
    for name in ("duration_s", "beats", "rate_bpm", "rr_cv", "rmssd_ms", "jumps_pct"):
        assert f" {slots[name]}" in written
    assert rr_regularity(RR_REGULAR_CV - 1e-3) == "regular" and rr_regularity(RR_IRREGULAR_CV) == "irregular"
    assert rr_regularity((RR_REGULAR_CV + RR_IRREGULAR_CV) / 2) == "mildly variable"
    flat = np.zeros(int(30 * FS), np.float32)  # no beats: only the duration and the beat count have values
    assert {s.name for s in ecg_rationale_slots(flat, FS)} == {"duration_s", "beats"}


def test_a_guessing_model_s_rationale_states_the_measured_numbers():
    ecg = _ecg(np.full(40, 0.75))  # 80 bpm, regular
    guess = ("The recording lasts 30 s and 33 heartbeats were detected. The mean heart rate is 97.5 bpm. The RR "
             "intervals are mildly variable: their coefficient of variation is 0.131, the RMSSD is 88 ms, and 12.5 % "
             "of successive intervals change by more than 10 %.\nAnswer: normal")
    g = Grounder(ecg_rationale_slots(ecg, FS))
    text = _write(guess, g)
    measured = measured_ecg_numbers(ecg, FS)
    stated = stated_numbers(text)
    assert stated["rate_bpm"] == pytest.approx(measured["rate_bpm"], rel=2e-3)
    assert stated["beats"] == measured["beats"] and stated["rr_cv"] == pytest.approx(measured["rr_cv"], abs=1e-3)
    assert "The RR intervals are regular:" in text and text.endswith("Answer: normal")  # the answer stays the model's
    assert sorted(g.filled) == sorted(s.name for s in g.slots)  # every slot once
    assert g("The mean heart rate is ") is None  # a filled slot is not written again


def test_a_stream_writes_the_measured_numbers_into_an_ecg_rationale():
    """StreamConfig.ground_numbers (the default): the window's rationale states what the stream measured, passes its
    check, and names the slots it filled; ground_numbers=False keeps the model's guess, flagged as before."""
    from test_runtime_stream import _RationaleBackend, chunks, of, run

    class Guessing(_RationaleBackend):
        def generate(self, text, encoded, max_new_tokens, *, ground=None):
            guess = super().generate(text, encoded, max_new_tokens)
            return guess if ground is None else _write(guess, ground)

    x = _ecg(np.full(60, 0.75))[None]  # 80 bpm
    for grounded in (True, False):
        ev = run(Guessing(98.0, 33), chunks(x, 3000, fs=FS), task="afib", rationale_on="af", ground_numbers=grounded)
        (w,) = of(ev, "window")
        chk = w["rationale_check"]
        assert chk["differs"] == ([] if grounded else ["beats", "rate_bpm"])
        assert ("rationale_numbers_differ" in w["quality"]["flags"]) != grounded
        if grounded:
            assert w["rationale_grounded"] == ["duration_s", "beats", "rate_bpm"]  # the slots this rationale reached
            assert chk["stated"]["rate_bpm"] == pytest.approx(chk["measured"]["rate_bpm"], rel=2e-3)
            assert w["rationale"].endswith("Answer: atrial fibrillation")
        else:
            assert "rationale_grounded" not in w and "98.0 bpm" in w["rationale"]
    # a backend whose generate takes no ground= (the fake of test_runtime_stream) streams as before
    (w,) = of(run(_RationaleBackend(98.0, 33), chunks(x, 3000, fs=FS), task="afib", rationale_on="af"), "window")
    assert "rationale_grounded" not in w and w["rationale_check"]["differs"]
