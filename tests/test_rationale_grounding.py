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
from edge_tslm.rationale_grounding import (RR_IRREGULAR_CV, RR_REGULAR_CV, Grounder, Slot, ecg_rationale_slots,
                                            rr_regularity)
from test_heartbeats import _synthetic_ecg

FS = 300.0


def _ecg(rr: np.ndarray) -> np.ndarray:
    x, _ = _synthetic_ecg(rr, FS)
    return x[: int(30 * FS)].astype(np.float32)


def _write(model_text: str, model_slots, grounder: Grounder) -> str:
    """A model that writes `model_text` (a rationale from its own guessed numbers, whose slots are `model_slots`) piece
    by piece as a tokenizer splits it (a word with its space, a space before digits, one digit or mark), asking the
    grounder after each piece. Where the grounder writes a slot, the model's own text for that slot is skipped."""
    own = {sl.name: sl.value for sl in model_slots}
    out, at = "", 0
    while at < len(model_text):
        piece = re.match(r" ?[-+]?[A-Za-z%]+| -|\d|\.| |\n|.", model_text[at:]).group(0)
        out, at = out + piece, at + len(piece)
        value = grounder(out)
        if value is not None:
            mine = own[grounder.filled[-1]]
            assert model_text.startswith(mine, at), (model_text[at:], mine)  # the model was about to write its own
            out, at = out + value, at + len(mine)
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


def test_a_guessing_model_s_rationale_becomes_the_measured_one():
    """Every number and measured word is a slot: a model that guessed another window's numbers writes, grounded,
    exactly the rationale the data pipeline writes for this window, with its own answer line."""
    ecg = _ecg(np.full(40, 0.75))  # 80 bpm, regular
    other = _ecg(np.random.default_rng(1).uniform(0.45, 1.0, 50))  # what the model "read": irregular, faster
    guess = ecg_rationale(other[None], FS, "atrial fibrillation")
    g = Grounder(ecg_rationale_slots(ecg, FS))
    text = _write(guess, ecg_rationale_slots(other, FS), g)
    assert text == ecg_rationale(ecg[None], FS, "atrial fibrillation")  # the answer stays the model's
    assert "irregular" in guess and "The RR intervals are regular:" in text
    assert sorted(g.filled) == sorted(sl.name for sl in g.slots)  # every slot once
    assert g("The mean heart rate is ") is None  # a filled slot is not written again
    stated, measured = stated_numbers(text), measured_ecg_numbers(ecg, FS)
    assert stated["rate_bpm"] == pytest.approx(measured["rate_bpm"], rel=2e-3) and stated["beats"] == measured["beats"]


def test_a_guessing_har_rationale_becomes_the_measured_one():
    from edge_tslm.data.rationale import har_rationale
    from edge_tslm.rationale_grounding import har_rationale_slots

    rng = np.random.default_rng(2)

    def window(std, gravity):
        return (rng.normal(0, std, (3, 128)) + np.array(gravity)[:, None]).astype(np.float32)

    still, still2 = window(0.01, [0.97, -0.2, 0.05]), window(0.015, [-0.1, 0.1, 0.99])  # sitting / lying-like
    walking, walking2 = window(0.3, [0.1, -0.98, 0.05]), window(0.12, [0.9, 0.3, -0.2])
    axes = ("x", "y", "z")
    for true, read in ((still, still2), (walking, walking2)):  # the same sentence shape: every number is a slot
        guess = har_rationale(read, 50.0, axes, "g", "standing")
        text = _write(guess, har_rationale_slots(read, 50.0, axes), Grounder(har_rationale_slots(true, 50.0, axes)))
        assert text == har_rationale(true, 50.0, axes, "g", "standing") != guess
    # a model that read a walking window writes the still one's words and numbers where it states them; the rest of
    # its sentence stays its own (a real model goes on from "barely varies", this fake does not)
    guess = har_rationale(walking, 50.0, axes, "g", "walking")
    text = _write(guess, har_rationale_slots(walking, 50.0, axes), Grounder(har_rationale_slots(still, 50.0, axes)))
    truth = har_rationale(still, 50.0, axes, "g", "walking")
    assert text.split(" g)")[0] == truth.split(" g)")[0]  # axes, gravity, movement words, spread
    from edge_tslm.data.rationale import har_features
    from edge_tslm.rationale_check import HAR_RATIONALE_NUMBERS

    f = har_features(walking, 50.0)  # the HAR parse (benchmarks/rationale_numbers.py) reads what the template writes
    got = stated_numbers(har_rationale(walking, 50.0, axes, "g", "walking"), HAR_RATIONALE_NUMBERS)
    want = {**{f"mean_{c}": m for c, m in zip(axes, f.axis_mean)}, "magnitude_std": f.magnitude_std, "dominant_hz": f.dominant_freq_hz}
    assert got == {k: float(format_number(v)) for k, v in want.items()}
    with pytest.raises(ValueError, match="channel names"):
        har_rationale_slots(still, 50.0, ("x", "y"))


def test_a_stream_writes_the_measured_numbers_into_an_ecg_rationale():
    """StreamConfig.ground_numbers (the default): the window's rationale states what the stream measured, passes its
    check, and names the slots it filled; ground_numbers=False keeps the model's guess, flagged as before."""
    from test_runtime_stream import _RationaleBackend, chunks, of, run

    class Guessing(_RationaleBackend):
        def generate(self, text, encoded, max_new_tokens, *, ground=None):
            guess = super().generate(text, encoded, max_new_tokens)  # beats, then a heart rate, then its answer
            slots = [Slot("duration_s", re.compile(r"The recording lasts $"), "30 s"),
                     Slot("beats", re.compile(r"lasts [\\d.]+ s and $"), f"{self.beats} heartbeats"),
                     Slot("rate_bpm", re.compile(r"heart rate is $"), f"{self.rate} bpm")]
            return guess if ground is None else _write(guess, slots, ground)

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


def test_a_har_stream_writes_the_window_s_numbers_into_its_rationale():
    from test_runtime_fakes import FakeBackend
    from test_runtime_stream import chunks, har_signal, of, run

    from edge_tslm.data.rationale import har_rationale
    from edge_tslm.rationale_grounding import har_rationale_slots

    guess_window = (np.random.default_rng(3).normal(0, 0.3, (3, 128)) + np.array([[0.9], [0.1], [0.1]])).astype(np.float32)  # along +x

    class Guessing(FakeBackend):
        def generate(self, text, encoded, max_new_tokens, *, ground=None):
            guess = har_rationale(guess_window, 50.0, ("x", "y", "z"), "g", "walking")
            return guess if ground is None else _write(guess, har_rationale_slots(guess_window, 50.0, ("x", "y", "z")), ground)

    x = har_signal([(0.3, 6)])  # gravity along +z
    ev = run(Guessing(), chunks(x), fs=50.0, rationale_on="always")
    w = of(ev, "window")[0]
    assert "rationale_check" not in w  # numbers are checked for ECG rationales only
    assert w["rationale_grounded"][:3] == ["mean_x", "mean_y", "mean_z"] and "gravity lies mostly along +z" in w["rationale"]
    assert "gravity lies mostly along +x" in har_rationale(guess_window, 50.0, ("x", "y", "z"), "g", "walking")
    off = of(run(Guessing(), chunks(x), fs=50.0, rationale_on="always", ground_numbers=False), "window")[0]
    assert "rationale_grounded" not in off and off["rationale"] != w["rationale"]
