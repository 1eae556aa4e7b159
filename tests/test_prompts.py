"""Prompt text ("scale is text") and the shared Answer: parser."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edge_tslm.constants import ANSWER_PREFIX, END_CHUNK_TOKEN, TS_TOKEN
from edge_tslm.prompts import (
    ModelInput,
    answer_text,
    build_model_input,
    describe_series,
    format_number,
    normalize_label,
    parse_answer,
)
from edge_tslm.signals import SignalMeta, validate

FAST = settings(max_examples=100, deadline=None)

# --- format_number ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, text",
    [
        (0, "0"),
        (-0.0, "0"),
        (50, "50"),
        (50.0, "50"),
        (2.56, "2.56"),
        (0.0123, "0.0123"),
        (0.456, "0.456"),
        (1 / 3, "0.333"),
        (9.996, "10"),
        (12345.6, "12300"),
        (-12345.6, "-12300"),
        (99949, "99900"),
        (99999, "1e+05"),
        (1e5, "1e+05"),
        (1.234e-5, "1.23e-05"),
        (0.001, "0.001"),
        (0.00099996, "0.001"),
        (0.000999, "9.99e-04"),
        (6.02e23, "6.02e+23"),
        (math.nan, "nan"),
        (math.inf, "inf"),
    ],
)
def test_format_number_examples(x, text):
    assert format_number(x) == text


@FAST
@given(st.floats(-1e300, 1e300))  # near float max, rounding up overflows to inf
def test_format_number_parses_back_within_rounding(x):
    text = format_number(x)
    back = float(text)
    assert abs(back - x) <= 5e-3 * abs(x) + 1e-300  # 3 significant digits: half a unit in the 3rd digit
    plain = 1e-3 <= abs(back) < 1e5
    assert ("e" in text) == (not plain and back != 0)
    digits = re.sub(r"e.*$", "", text).lstrip("-").replace(".", "").lstrip("0")
    assert len(digits.rstrip("0")) <= 3


# --- descriptions and model input ------------------------------------------------------------


def test_describe_series_example():
    text = describe_series("x-axis", mean=0.0123, std=0.456, unit="g", fs=50, n_samples=128)
    assert text == "x-axis: 2.56 s at 50 Hz, mean 0.0123 g, std 0.456 g"
    bare = describe_series("ch0", mean=-1.5, std=2, unit="", fs=0.5, n_samples=10)
    assert bare == "ch0: 20 s at 0.5 Hz, mean -1.5, std 2"


def _numbers(text: str) -> list[float]:
    return [float(t) for t in re.findall(r"-?\d+(?:\.\d+)?(?:e[+-]\d+)?", text)]


def test_build_model_input_puts_scale_in_text():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 200)) * np.array([[0.1], [2.0], [30.0]]) + np.array([[9.81], [-1.0], [500.0]])
    inp = validate(x, {"fs": 50, "unit": "g", "channels": ["x", "y", "z"]}, "  What is the person doing?  ")
    mi = build_model_input(inp, pre_prompt="You are a helpful assistant.")
    assert isinstance(mi, ModelInput)
    assert len(mi.series) == 3
    for s in mi.series:
        assert s.dtype == np.float32 and s.ndim == 1 and s.shape == (200,)
        assert abs(float(s.mean())) < 1e-5 and abs(float(s.std()) - 1) < 1e-4
    lines = mi.text.split("\n")
    assert lines[0] == "You are a helpful assistant."
    assert lines[-2] == "What is the person doing?" and lines[-1] == ""
    assert mi.text.count(TS_TOKEN + END_CHUNK_TOKEN) == 3
    for line, name, m, s in zip(lines[1:4], "xyz", mi.means, mi.stds):
        assert line.startswith(f"{name}: ") and line.endswith(TS_TOKEN + END_CHUNK_TOKEN)
        dur, fs, mean_t, std_t = _numbers(line.split(": ", 1)[1])
        assert fs == 50 and dur == 4
        assert math.isclose(mean_t, m, rel_tol=5e-3) and math.isclose(std_t, s, rel_tol=5e-3)
    np.testing.assert_allclose(mi.means, x.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(mi.stds, x.std(axis=1), rtol=1e-4)


def test_build_model_input_respects_given_stats():
    x = np.array([[-1.0, 0.0, 1.0]], dtype=np.float32)
    meta = SignalMeta(fs=100, unit="mV", channels=("II",), mean=(0.25,), std=(0.8,))
    mi = build_model_input(validate(x, meta, "Rhythm?"))
    np.testing.assert_array_equal(mi.series[0], x[0])  # already normalised: not touched
    assert mi.means == (0.25,) and mi.stds == (0.8,)
    assert "mean 0.25 mV, std 0.8 mV" in mi.text
    assert mi.text.startswith("II: ")  # no pre_prompt line


def test_build_model_input_flat_channel_is_zeros():
    inp = validate(np.full((1, 20), 4.2), {"fs": 10}, "q")
    mi = build_model_input(inp)
    assert np.all(mi.series[0] == 0) and "mean 4.2," in mi.text


# --- answers ----------------------------------------------------------------------------------

LABELS = ["walking", "walking upstairs", "sitting", "sitting down", "lying"]


def test_answer_text_parses_back():
    for label in LABELS:
        assert answer_text(label) == f"{ANSWER_PREFIX} {label}"
        assert parse_answer("Some rationale.\n" + answer_text(label), LABELS) == label


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Answer: walking", "walking"),
        ("ANSWER: Walking.", "walking"),
        ("answer - Sitting", "sitting"),
        ("Answer : 'sitting down'", "sitting down"),
        ('Answer: "Lying"!', "lying"),
        ("**Answer:** walking upstairs<|im_end|>", "walking upstairs"),
        ("Answer: the answer is walking.", "walking"),
        ("Answer: The final answer is lying", "lying"),
        ("<s>The data is periodic. Answer: walking</s>", "walking"),
        ("Answer: sitting<eos><pad><pad>", "sitting"),
        ("Answer: lying\nBecause the gravity vector is horizontal.", "lying"),
        ("Answer: walking. Answer: sitting", "sitting"),  # the last one counts
        ("Answer:\n  sitting down  ", "sitting down"),
        ("Answer:   walking   upstairs", "walking upstairs"),
        ("Answer — Lying", "lying"),
    ],
)
def test_parse_answer_tolerances(text, expected):
    assert parse_answer(text, LABELS) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "walking",
        "the answer is walking",  # no Answer: line
        "Answer:",
        "Answer: <|im_end|>",
        "Answer: ...",
        "Answer: sit",  # never a prefix
        "Answer: sitting dow",
        "Answer: walkingg",
        "Answer: running",
        "Answer: walking or sitting",
        "Answer: walking, because the signal is periodic",
        "An answer-based approach says walking",
        "Answer: sitting\nAnswer:",  # last Answer is empty
    ],
)
def test_parse_answer_refusals(text):
    assert parse_answer(text, LABELS) is None


def test_exact_match_beats_prefix_in_both_directions():
    assert parse_answer("Answer: sitting", LABELS) == "sitting"
    assert parse_answer("Answer: sitting down", LABELS) == "sitting down"
    assert parse_answer("Answer: Sitting Down.", ["sitting", "Sitting Down"]) == "Sitting Down"  # canonical form


def test_parse_answer_without_labels_returns_normalised_text():
    assert parse_answer("Answer: Atrial Fibrillation.</s>") == "atrial fibrillation"
    assert parse_answer("Answer:  ") is None
    assert parse_answer("no answer here") is None


def test_colliding_labels_are_an_error():
    with pytest.raises(ValueError):
        parse_answer("Answer: af", ["AF", "af."])


def test_parse_answer_refuses_non_string():
    with pytest.raises(TypeError):
        parse_answer(None)  # type: ignore[arg-type]


label_words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
labels_st = st.lists(st.lists(label_words, min_size=1, max_size=3).map(" ".join), min_size=1, max_size=6, unique=True)
SPECIAL = ["", "<|im_end|>", "</s>", "<eos>", "<endofchunk>", "<|endoftext|>", "<end_of_turn>"]
noise = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="<>"), max_size=30).filter(
    lambda t: not re.search("answer", t, re.IGNORECASE)
)


@FAST
@given(
    labels=labels_st,
    data=st.data(),
    prefix=noise,
    marker=st.sampled_from(["Answer:", "answer:", "ANSWER:", "Answer :", "answer -", "Answer -", "**Answer:**"]),
    quote=st.sampled_from(["", '"', "'", "“", "**", "`"]),
    trail=st.sampled_from(["", ".", "!", ". ", "\n", "?"]),
    before=st.sampled_from(SPECIAL),
    after=st.sampled_from(SPECIAL),
    case=st.sampled_from([str.lower, str.upper, str.title, str.capitalize]),
    lead_in=st.sampled_from(["", "the answer is ", "The answer is "]),
)
def test_embedded_label_always_parses(labels, data, prefix, marker, quote, trail, before, after, case, lead_in):
    label = data.draw(st.sampled_from(labels))
    text = f"{before}{prefix}\n{marker} {lead_in}{quote}{case(label)}{quote}{trail}{after}"
    assert parse_answer(text, labels) == label
    assert parse_answer(text) == label


@FAST
@given(text=st.text(max_size=200), labels=labels_st)
def test_random_text_without_answer_line_is_none(text, labels):
    assume(not re.search("answer", text, re.IGNORECASE))
    assert parse_answer(text, labels) is None
    assert parse_answer(text) is None


@FAST
@given(labels=labels_st, data=st.data(), extra=label_words)
def test_never_prefix_matches(labels, data, extra):
    label = data.draw(st.sampled_from(labels))
    longer = f"{label} {extra}"
    expected = longer if longer in labels else None
    assert parse_answer(f"Answer: {longer}", labels) == expected
    shorter = label.rsplit(" ", 1)[0] if " " in label else label[:-1]
    assume(shorter and shorter not in labels)
    assert parse_answer(f"Answer: {shorter}", labels) is None


def test_normalize_label():
    assert normalize_label('  "Sitting   Down." ') == "sitting down"
    assert normalize_label("**Walking**!") == "walking"
    assert parse_answer("Answer: the answer is: walking") == "walking"


def test_short_series_text_drops_duration_and_rate_and_rounds_std_to_two_digits():
    from edge_tslm.prompts import describe_series, format_number

    full = describe_series("x", mean=0.99312, std=0.022634, unit="g", fs=50.0, n_samples=128)
    short = describe_series("x", mean=0.99312, std=0.022634, unit="g", fs=50.0, n_samples=128, text="short")
    assert full == "x: 2.56 s at 50 Hz, mean 0.993 g, std 0.0226 g"
    assert short == "x: mean 0.993 g, std 0.023 g"
    assert format_number(0.022634, 2) == "0.023" and format_number(123456.0, 2) == "1.2e+05"
    with pytest.raises(ValueError, match="series_text"):
        describe_series("x", mean=0.0, std=1.0, unit="", fs=1.0, n_samples=1, text="tiny")


def test_config_refuses_an_unknown_series_text():
    from edge_tslm.config import TSLMConfig

    assert TSLMConfig().series_text == "full"
    with pytest.raises(ValueError, match="series_text"):
        TSLMConfig(series_text="terse")


def test_none_series_text_writes_only_the_name_and_passes_the_series_as_recorded():
    from edge_tslm.prompts import build_model_input, describe_series
    from edge_tslm.signals import SignalMeta, TSInput

    assert describe_series("x", mean=0.99, std=0.02, unit="g", fs=50.0, n_samples=128, text="none") == "x:"
    assert describe_series("ECG", mean=0.0, std=1.0, unit="mV", fs=300.0, n_samples=9000, text="none",
                           measured="heart rate 72 bpm") == "ECG: heart rate 72 bpm"
    x = np.stack([np.linspace(0.9, 1.1, 64), np.full(64, -0.25)]).astype(np.float32)
    meta = SignalMeta(fs=50.0, unit="g", channels=("x", "y"))
    mi = build_model_input(TSInput(x, meta, "Which?"), series_text="none")
    assert "mean" not in mi.text and "1.1" not in mi.text and mi.text.count("<ts>") == 2
    np.testing.assert_array_equal(np.stack(mi.series), x)
    assert mi.means[1] == pytest.approx(-0.25)
    # already-normalised input with its stats in the meta: the series goes back to its recorded scale
    std = np.maximum(x.std(1, keepdims=True), 1e-6)
    normed = ((x - x.mean(1, keepdims=True)) / std).astype(np.float32)
    meta2 = SignalMeta(fs=50.0, unit="g", channels=("x", "y"), mean=tuple(x.mean(1)), std=tuple(std[:, 0]))
    mi2 = build_model_input(TSInput(normed, meta2, "Which?"), series_text="none")
    np.testing.assert_allclose(np.stack(mi2.series), x, atol=1e-5)
