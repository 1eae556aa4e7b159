"""The input triplet contract: every malformed input is refused with an InputError naming its field."""

from __future__ import annotations

import json
import math
import copy
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_tslm.constants import STD_EPS
from edge_tslm.signals import (
    InputError,
    SignalMeta,
    TSInput,
    from_json,
    resample,
    to_json,
    validate,
    window,
    znormalize,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def good(**overrides) -> dict:
    doc = {"signal": [[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]], "meta": {"fs": 50, "unit": "g"}, "prompt": "What?"}
    doc.update(overrides)
    return doc


def refused(field: str, *args, **kwargs) -> InputError:
    """Call validate/from_json-like args and assert the error names ``field`` in .field and in the message."""
    fn = kwargs.pop("fn", validate)
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    err = info.value
    assert err.field == field, str(err)
    assert str(err).startswith(field + ":")
    assert len(err.message) > 10  # says what to do, not just "bad"
    return err


# --- validate: the happy path ---------------------------------------------------------------


def test_validate_fills_channels_and_casts_float32():
    inp = validate([[1, 2, 3], [4, 5, 6]], {"fs": 25}, "q?")
    assert isinstance(inp, TSInput)
    assert inp.signal.dtype == np.float32 and inp.signal.shape == (2, 3)
    assert inp.signal.flags.c_contiguous
    assert inp.meta.channels == ("ch0", "ch1")
    assert inp.meta.fs == 25.0 and isinstance(inp.meta.fs, float)


def test_validate_copies_caller_buffer():
    x = np.ones((1, 5), dtype=np.float32)
    inp = validate(x, SignalMeta(fs=1.0), "q")
    x[0, 0] = 7
    assert inp.signal[0, 0] == 1


def test_meta_coerces_lists_to_tuples_and_is_hashable():
    m = SignalMeta(fs=50, channels=["x", "y"], mean=[0, 1], std=[1, 2])
    assert m.channels == ("x", "y") and m.mean == (0.0, 1.0) and m.std == (1.0, 2.0)
    hash(m)
    with pytest.raises(AttributeError):
        m.fs = 3  # type: ignore[misc]


# --- validate: refusals -----------------------------------------------------------------------


def test_one_dimensional_signal_gets_reshape_hint():
    err = refused("signal", [1.0, 2.0, 3.0], {"fs": 50}, "q")
    assert "(1, L)" in err.message


@pytest.mark.parametrize(
    "signal, words",
    [
        (5.0, "scalar"),
        (np.zeros((2, 3, 4)), "3-D"),
        ([], "empty"),
        ([[]], "empty"),
        (np.zeros((0, 10)), "empty"),
        ([[1, 2], [3]], "different lengths"),
        ([[True, False]], "booleans"),
        ("1,2,3", "2-D"),
        (None, "2-D"),
        ({"a": 1}, "2-D"),
        ([[1 + 2j, 3]], "dtype"),
    ],
)
def test_bad_signal_shapes_and_types(signal, words):
    err = refused("signal", signal, {"fs": 50}, "q")
    assert words in err.message


def test_non_numeric_element_is_located():
    refused("signal[1][2]", [[1, 2, 3], [4, 5, None]], {"fs": 50}, "q")
    err = refused("signal[0][0]", [["1", "2"]], {"fs": 50}, "q")
    assert "string" in err.message
    refused("signal[0][1]", [[1, 10**400]], {"fs": 50}, "q")


def test_float32_overflow_is_refused_at_its_position():
    refused("signal[0][2]", np.array([[1.0, 2.0, 1e300]]), {"fs": 50}, "q")


@FAST
@given(
    c=st.integers(1, 4),
    length=st.integers(1, 64),
    data=st.data(),
    bad=st.sampled_from([math.nan, math.inf, -math.inf]),
)
def test_first_non_finite_is_located(c, length, data, bad):
    x = np.zeros((c, length))
    positions = data.draw(
        st.lists(st.tuples(st.integers(0, c - 1), st.integers(0, length - 1)), min_size=1, max_size=5, unique=True)
    )
    for ch, i in positions:
        x[ch, i] = bad
    first = min(positions)  # row-major: lowest channel, then lowest sample
    err = refused(f"signal[{first[0]}][{first[1]}]", x, {"fs": 50}, "q")
    assert f"channel {first[0]}, sample {first[1]}" in err.message
    # the JSON path (json.loads admits NaN/Infinity) reports the same place
    doc = json.dumps({"signal": x.tolist(), "meta": {"fs": 50}, "prompt": "q"})
    refused(f"signal[{first[0]}][{first[1]}]", doc, fn=from_json)


@FAST
@given(
    fs=st.one_of(
        st.floats(max_value=0.0, allow_nan=False),
        st.just(math.nan),
        st.just(math.inf),
        st.just(-math.inf),
        st.text(max_size=5),
        st.booleans(),
        st.none(),
        st.lists(st.integers(), max_size=2),
        st.integers(max_value=0),
    )
)
def test_bad_fs_is_refused(fs):
    refused("meta.fs", [[1.0, 2.0]], {"fs": fs}, "q")
    with pytest.raises(InputError) as info:
        SignalMeta(fs=fs)
    assert info.value.field == "meta.fs"


@FAST
@given(shape=st.lists(st.integers(0, 4), min_size=0, max_size=5).filter(lambda s: len(s) != 2 or 0 in s))
def test_random_ranks_and_shapes_are_refused(shape):
    x = np.ones(tuple(shape))
    err = refused("signal", x, {"fs": 10}, "q")
    assert "empty" in err.message or "2-D" in err.message or "(1, L)" in err.message


@FAST
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 40)))
def test_random_valid_shapes_pass(shape):
    inp = validate(np.random.default_rng(0).normal(size=shape), {"fs": 10}, "q")
    assert inp.signal.shape == shape and len(inp.meta.channels) == shape[0]


def test_min_length_and_max_channels():
    err = refused("signal", np.ones((1, 7)), {"fs": 50}, "q", min_length=8)
    assert "minimum is 8" in err.message
    validate(np.ones((1, 8)), {"fs": 50}, "q", min_length=8)
    err = refused("signal", np.ones((3, 8)), {"fs": 50}, "q", max_channels=2)
    assert "at most 2" in err.message


@pytest.mark.parametrize(
    "meta, field",
    [
        ({"fs": 50, "channels": ["x"]}, "meta.channels"),  # signal has 2 channels
        ({"fs": 50, "channels": ["x", "x"]}, "meta.channels"),
        ({"fs": 50, "channels": ["x", ""]}, "meta.channels[1]"),
        ({"fs": 50, "channels": ["x", 3]}, "meta.channels[1]"),
        ({"fs": 50, "channels": "xy"}, "meta.channels"),
        ({"fs": 50, "mean": [0, 0, 0], "std": [1, 1, 1]}, "meta.mean"),
        ({"fs": 50, "mean": [0, 0], "std": [1]}, "meta.std"),
        ({"fs": 50, "mean": [0, 0], "std": [1, 0]}, "meta.std[1]"),
        ({"fs": 50, "mean": [0, 0], "std": [1, -2]}, "meta.std[1]"),
        ({"fs": 50, "mean": [0, math.nan], "std": [1, 1]}, "meta.mean[1]"),
        ({"fs": 50, "mean": [0, 0]}, "meta.std"),
        ({"fs": 50, "std": [1, 1]}, "meta.mean"),
        ({"fs": 50, "mean": "0,0", "std": [1, 1]}, "meta.mean"),
        ({"fs": 50, "unit": 3}, "meta.unit"),
        ({"fs": 50, "fz": 1}, "meta.fz"),
        ({"unit": "g"}, "meta.fs"),
        ([50], "meta"),
        ("fs=50", "meta"),
    ],
)
def test_bad_meta_names_the_field(meta, field):
    refused(field, [[0.0, 1.0], [2.0, 3.0]], meta, "q")


@pytest.mark.parametrize("prompt", [None, 3, b"bytes", "", "   \n"])
def test_bad_prompt(prompt):
    refused("prompt", [[0.0, 1.0]], {"fs": 1}, prompt)


def test_input_error_copies_and_is_value_error():
    # deepcopy goes through the same __reduce__ protocol that pickling (e.g. multiprocessing) uses
    err = InputError("meta.fs", "must be > 0")
    back = copy.deepcopy(err)
    assert isinstance(back, ValueError) and back.field == "meta.fs" and str(back) == str(err)


# --- JSON form ------------------------------------------------------------------------------


def test_round_trip_to_json_from_json_is_exact():
    rng = np.random.default_rng(1)
    meta = SignalMeta(fs=12.5, unit="mV", channels=("I", "II"), mean=(0.1, -3.0), std=(2.0, 0.5))
    inp = validate(rng.normal(size=(2, 33)), meta, "Is this AF?")
    doc = to_json(inp)
    text = json.dumps(doc, allow_nan=False)  # strictly valid JSON
    for form in (doc, text, text.encode()):
        back = from_json(form)
        np.testing.assert_array_equal(back.signal, inp.signal)
        assert back.meta == inp.meta and back.prompt == inp.prompt


@FAST
@given(
    x=st.lists(st.lists(st.floats(-1e6, 1e6, width=32), min_size=3, max_size=3), min_size=1, max_size=3),
    fs=st.floats(1e-3, 1e5),
    unit=st.text(max_size=4),
)
def test_round_trip_random(x, fs, unit):
    inp = validate(x, {"fs": fs, "unit": unit}, "q")
    back = from_json(json.dumps(to_json(inp)))
    np.testing.assert_array_equal(back.signal, inp.signal)
    assert back.meta == inp.meta


@pytest.mark.parametrize(
    "doc, field",
    [
        ("{not json", "json"),
        (b"\xff\xfe", "json"),
        ("[1, 2]", "json"),
        ("42", "json"),
        ('{"signal": [[1]], "meta": {"fs": 1}}', "prompt"),
        ('{"signal": [[1]], "prompt": "q"}', "meta"),
        ('{"meta": {"fs": 1}, "prompt": "q"}', "signal"),
        ('{"signal": [[1]], "meta": {"fs": 1}, "prompt": "q", "extra": 1}', "extra"),
        ('{"signals": [[1]], "meta": {"fs": 1}, "prompt": "q"}', "signals"),
        ('{"signal": [[1]], "meta": {"fs": "1"}, "prompt": "q"}', "meta.fs"),
        ('{"signal": [[1]], "meta": null, "prompt": "q"}', "meta"),
        ('{"signal": [1, 2], "meta": {"fs": 1}, "prompt": "q"}', "signal"),
        ('{"signal": [[1, "a"]], "meta": {"fs": 1}, "prompt": "q"}', "signal[0][0]"),
        ('{"signal": [[1, null]], "meta": {"fs": 1}, "prompt": "q"}', "signal[0][1]"),
        ('{"signal": [[1, 2]], "meta": {"fs": 1}, "prompt": 7}', "prompt"),
    ],
)
def test_bad_json_names_the_field(doc, field):
    refused(field, doc, fn=from_json)


def test_did_you_mean_for_top_level_typo():
    err = refused("signals", {"signals": [[1]], "meta": {"fs": 1}, "prompt": "q"}, fn=from_json)
    assert "'signal'" in err.message


@FAST
@given(garbage=st.one_of(st.text(max_size=40), st.binary(max_size=40)))
def test_random_garbage_json_is_an_input_error(garbage):
    with pytest.raises(InputError) as info:
        from_json(garbage)
    assert info.value.field in {"json", "signal", "meta", "prompt"}  # never a bare crash


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@FAST
@given(signal=json_values, meta=json_values, prompt=json_values)
def test_random_triplets_either_validate_or_raise_input_error(signal, meta, prompt):
    doc = json.dumps({"signal": signal, "meta": meta, "prompt": prompt})
    try:
        inp = from_json(doc, min_length=1)
    except InputError as err:
        assert err.field.split(".")[0].split("[")[0] in {"signal", "meta", "prompt"}
    else:
        assert inp.signal.ndim == 2 and np.isfinite(inp.signal).all()


# --- znormalize --------------------------------------------------------------------------------


def test_znormalize_flat_line_gives_zeros_not_nan():
    x = np.array([[0.1] * 50, [3.0] * 50, list(range(50))], dtype=np.float32)
    normed, mean, std = znormalize(x)
    assert normed.dtype == np.float32 and normed.shape == x.shape
    assert np.all(normed[:2] == 0.0)
    assert std[0] == STD_EPS and std[1] == STD_EPS
    np.testing.assert_allclose(mean[:2], [0.1, 3.0], rtol=1e-6)
    np.testing.assert_allclose(normed[2].mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(normed[2].std(), 1.0, atol=1e-5)


@FAST
@given(
    scale=st.floats(1e-3, 1e4),
    offset=st.floats(-1e4, 1e4),
    seed=st.integers(0, 2**16),
)
def test_znormalize_recovers_stats(scale, offset, seed):
    x = np.random.default_rng(seed).normal(size=(3, 100)) * scale + offset
    normed, mean, std = znormalize(x)
    np.testing.assert_allclose(mean, x.mean(axis=1), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(std, x.std(axis=1), rtol=1e-9)
    np.testing.assert_allclose(normed * std[:, None] + mean[:, None], x, rtol=1e-5, atol=1e-5 * (scale + abs(offset)))


def test_znormalize_refuses_1d():
    with pytest.raises(InputError):
        znormalize(np.ones(5))


# --- resample -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fs_in, fs_out, up, down", [(100, 50, 1, 2), (50, 100, 2, 1), (50, 20, 2, 5), (44100, 48000, 160, 147)])
def test_resample_length(fs_in, fs_out, up, down):
    x = np.random.default_rng(0).normal(size=(2, 441))
    y = resample(x, fs_in, fs_out)
    assert y.dtype == np.float32 and y.shape == (2, math.ceil(441 * up / down))


@pytest.mark.parametrize("fs_in, fs_out, n", [(300, 150, 9000), (50, 100, 441), (50, 20, 441), (44100, 48000, 441), (360, 150, 1000), (1, 3, 7)])
def test_resample_equals_scipy_resample_poly(fs_in, fs_out, n):
    """The numpy port gives scipy's numbers (training data were resampled with scipy), without importing scipy."""
    from fractions import Fraction

    sps = pytest.importorskip("scipy.signal")
    x = np.random.default_rng(1).normal(size=(2, n))
    r = Fraction(fs_out, fs_in)
    ref = sps.resample_poly(x, r.numerator, r.denominator, axis=-1).astype(np.float32)
    np.testing.assert_allclose(resample(x, fs_in, fs_out), ref, rtol=0, atol=2e-6)


def test_resample_preserves_a_sine_at_the_new_rate():
    f, fs_in, fs_out = 3.0, 100.0, 40.0
    t_in = np.arange(400) / fs_in
    x = np.stack([np.sin(2 * np.pi * f * t_in), np.cos(2 * np.pi * f * t_in)])
    y = resample(x, fs_in, fs_out)
    t_out = np.arange(y.shape[1]) / fs_out
    ref = np.stack([np.sin(2 * np.pi * f * t_out), np.cos(2 * np.pi * f * t_out)])
    mid = slice(20, -20)  # edges carry filter transients
    np.testing.assert_allclose(y[:, mid], ref[:, mid], atol=0.02)


def test_resample_identity_and_irrational_ratio():
    x = np.arange(10, dtype=np.float64)[None]
    y = resample(x, 50, 50.0)
    np.testing.assert_array_equal(y, x.astype(np.float32))
    assert y.dtype == np.float32 and not np.shares_memory(y, x)
    z = resample(np.ones((1, 1000)), 1.0, math.pi)  # pi ~ 355/113
    assert z.shape == (1, math.ceil(1000 * 355 / 113))


@pytest.mark.parametrize("fs_in, fs_out, field", [(0, 50, "fs_in"), (50, -1, "fs_out"), (math.nan, 5, "fs_in"), (5, "10", "fs_out")])
def test_resample_bad_rates(fs_in, fs_out, field):
    with pytest.raises(InputError) as info:
        resample(np.ones((1, 10)), fs_in, fs_out)
    assert info.value.field == field


# --- window -------------------------------------------------------------------------------------


@FAST
@given(c=st.integers(1, 3), n=st.integers(0, 60), length=st.integers(1, 20), hop=st.integers(1, 20))
def test_window_shapes_and_content(c, n, length, hop):
    x = np.arange(c * n, dtype=np.float32).reshape(c, n)
    w = window(x, length, hop)
    expected = 0 if n < length else 1 + (n - length) // hop
    assert w.shape == (expected, c, length)
    for k in range(expected):
        np.testing.assert_array_equal(w[k], x[:, k * hop : k * hop + length])


@pytest.mark.parametrize("length, hop", [(0, 1), (4, 0), (-1, 2), (4, -3), (2.5, 1), (True, 1)])
def test_window_bad_args(length, hop):
    with pytest.raises(InputError):
        window(np.ones((1, 10)), length, hop)


def test_modules_do_not_import_torch():
    code = "import sys, edge_tslm.signals, edge_tslm.prompts; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
