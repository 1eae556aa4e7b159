"""The input triplet: signal (C, L) + meta + prompt — validate, normalise, resample, window.

Numpy only: the runtime on a device imports this without torch. Every refusal is an
``InputError`` that names the offending field and says how to fix it, because the same JSON
form reaches us from the Python API, the CLI and the runtime, and its authors need to know
exactly what to change.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from edge_tslm.constants import STD_EPS

__all__ = [
    "InputError",
    "SignalMeta",
    "TSInput",
    "validate",
    "from_json",
    "to_json",
    "znormalize",
    "resample",
    "window",
]

_META_KEYS = ("fs", "unit", "channels", "mean", "std")
_TOP_KEYS = ("signal", "meta", "prompt")


class InputError(ValueError):
    """Bad user input. ``field`` names where (``"meta.fs"``, ``"signal[1][5]"``); the message says the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self):  # keep pickling (multiprocessing workers) working with two args
        return (type(self), (self.field, self.message))


def _short(x: Any) -> str:
    r = repr(x)
    return r if len(r) <= 40 else r[:37] + "..."


def _type_name(x: Any) -> str:
    return "null" if x is None else type(x).__name__


def _is_real(x: Any) -> bool:
    """A real number that is not a bool (True is an int in Python, never a sampling rate)."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _finite_float(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except OverflowError:  # int too large for a float
        return False


def _check_fs(fs: Any, field: str) -> float:
    if not _is_real(fs):
        raise InputError(field, f"expected a number in Hz (e.g. 50), got {_type_name(fs)} {_short(fs)}")
    value = float(fs) if _finite_float(fs) else math.nan
    if not math.isfinite(value) or value <= 0:
        raise InputError(field, f"sampling rate must be a finite number > 0 Hz (e.g. 50), got {_short(fs)}")
    return value


def _float_tuple(values: Any, field: str) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise InputError(field, f"expected a list of numbers (one per channel), got {_type_name(values)}")
    out = []
    for i, v in enumerate(values):
        if not _is_real(v) or not _finite_float(v):
            raise InputError(f"{field}[{i}]", f"expected a finite number, got {_type_name(v)} {_short(v)}")
        out.append(float(v))
    return tuple(out)


@dataclass(frozen=True)
class SignalMeta:
    """What the numbers mean: sampling rate, unit, channel names, and original stats if pre-normalised.

    Checked on construction (types, fs > 0, names, std > 0) so an instance is always sane;
    checks that need the signal (counts per channel) happen in ``validate``.
    """

    fs: float
    unit: str = ""
    channels: tuple[str, ...] = ()
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: coerce lists to tuples once, here
        set_(self, "fs", _check_fs(self.fs, "meta.fs"))
        if not isinstance(self.unit, str):
            raise InputError("meta.unit", f"expected a string such as 'g' or 'mV', got {_type_name(self.unit)}")
        chans = self.channels
        if isinstance(chans, (str, bytes)) or not isinstance(chans, (Sequence, np.ndarray)):
            raise InputError(
                "meta.channels", f"expected a list of channel names such as ['x', 'y', 'z'], got {_type_name(chans)}"
            )
        for i, name in enumerate(chans):
            if not isinstance(name, str) or not name.strip():
                raise InputError(f"meta.channels[{i}]", f"channel names must be non-empty strings, got {name!r}")
        seen: dict[str, int] = {}
        for i, name in enumerate(chans):
            if name in seen:
                raise InputError(
                    "meta.channels", f"duplicate channel name {name!r} (positions {seen[name]} and {i}); make names unique"
                )
            seen[name] = i
        set_(self, "channels", tuple(chans))
        if self.mean is not None:
            set_(self, "mean", _float_tuple(self.mean, "meta.mean"))
        if self.std is not None:
            std = _float_tuple(self.std, "meta.std")
            for i, s in enumerate(std):
                if s <= 0:
                    raise InputError(f"meta.std[{i}]", f"std must be > 0, got {s!r}; omit mean/std if unknown")
            set_(self, "std", std)
        if (self.mean is None) != (self.std is None):
            missing = "meta.std" if self.std is None else "meta.mean"
            raise InputError(missing, "give both mean and std (the signal is then taken as already normalised) or neither")
        if self.mean is not None and len(self.mean) != len(self.std):  # type: ignore[arg-type]
            raise InputError("meta.std", f"has {len(self.std)} values but meta.mean has {len(self.mean)}; give one per channel")  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (lists, not tuples)."""
        return {
            "fs": self.fs,
            "unit": self.unit,
            "channels": list(self.channels),
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
        }

    @classmethod
    def from_dict(cls, d: Any) -> SignalMeta:
        """Build from the JSON ``meta`` object; unknown keys are refused so typos do not pass silently."""
        if not isinstance(d, Mapping):
            raise InputError("meta", f"expected an object like {{\"fs\": 50, \"unit\": \"g\"}}, got {_type_name(d)}")
        for key in d:
            if key not in _META_KEYS:
                raise InputError(f"meta.{key}", f"unknown key{_did_you_mean(key, _META_KEYS)}; allowed keys: {', '.join(_META_KEYS)}")
        if "fs" not in d:
            raise InputError("meta.fs", "missing; give the sampling rate in Hz, e.g. \"fs\": 50")
        kwargs = dict(d)
        for key in ("unit", "channels"):
            if kwargs.get(key, 0) is None:  # JSON null means "not given"
                del kwargs[key]
        return cls(**kwargs)


def _did_you_mean(key: Any, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(key), options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class TSInput:
    """A validated triplet: float32 finite (C, L) signal, meta with C channel names, non-empty prompt."""

    signal: np.ndarray
    meta: SignalMeta
    prompt: str


def _as_signal_array(signal: Any) -> np.ndarray:
    """Convert to a float32 array, or say which element or shape is wrong."""
    if isinstance(signal, (str, bytes, Mapping)) or signal is None:
        raise InputError("signal", f"expected a 2-D list/array of numbers (channels, length), got {_type_name(signal)}")
    try:
        arr = np.asarray(signal)
    except (ValueError, TypeError):
        lengths = _row_lengths(signal)
        hint = f" (channel lengths {lengths})" if lengths else ""
        raise InputError(
            "signal", f"channels have different lengths{hint}; every channel needs the same length — trim or resample them"
        ) from None
    if arr.dtype.kind == "b":
        raise InputError("signal", "got booleans; give numbers (cast with .astype(float))")
    if arr.dtype.kind not in "iuf":
        if arr.dtype.kind == "O" and arr.ndim == 2:
            for idx in np.ndindex(arr.shape):
                v = arr[idx]
                if not _is_real(v):
                    raise InputError(_where(idx), f"expected a number, got {_type_name(v)} {_short(v)}")
                if not _finite_float(v):
                    raise InputError(_where(idx), f"{_short(v)} is not a finite float32 number; rescale the signal")
            with np.errstate(over="ignore"):
                return arr.astype(np.float32)  # e.g. mixed huge ints that all fit
        if arr.dtype.kind in "US" and arr.ndim == 2 and arr.size:
            raise InputError(_where((0, 0)), f"is a string {_short(arr[0, 0].item())}; give numbers, not text")
        raise InputError("signal", f"expected real numbers, got dtype {arr.dtype}; give a float array of shape (C, L)")
    with np.errstate(over="ignore"):
        return arr.astype(np.float32)  # copies: the TSInput never aliases the caller's buffer


def _row_lengths(signal: Any) -> list[int] | None:
    try:
        return [len(row) for row in signal][:8]
    except TypeError:
        return None


def _where(idx: tuple[int, ...]) -> str:
    return "signal" + "".join(f"[{int(i)}]" for i in idx)


def validate(
    signal: Any,
    meta: SignalMeta | Mapping,
    prompt: Any,
    *,
    min_length: int = 1,
    max_channels: int | None = None,
) -> TSInput:
    """Check a triplet once at the boundary so later stages can trust shapes, dtypes and stats."""
    if isinstance(meta, SignalMeta):
        m = meta
    elif isinstance(meta, Mapping):
        m = SignalMeta.from_dict(meta)
    else:
        raise InputError("meta", f"expected a SignalMeta or an object like {{\"fs\": 50}}, got {_type_name(meta)}")

    arr = _as_signal_array(signal)
    ndim = arr.ndim
    if arr.size == 0:
        raise InputError("signal", f"is empty (shape {arr.shape}); give at least one channel with at least {max(min_length, 1)} samples")
    if ndim == 1:
        raise InputError(
            "signal", f"is 1-D (shape {arr.shape}); reshape to (1, L) for a single channel, e.g. x[None, :] or [[...]] in JSON"
        )
    if ndim != 2:
        shape = "a scalar" if ndim == 0 else f"{ndim}-D shape {arr.shape}"
        raise InputError("signal", f"must be 2-D (channels, length), got {shape}; reshape it to (C, L)")
    c, length = arr.shape

    bad = ~np.isfinite(arr)
    if bad.any():
        ch, i = (int(v) for v in np.argwhere(bad)[0])
        value = arr[ch, i]
        kind = "NaN" if np.isnan(value) else "inf (or beyond float32 range)"
        raise InputError(
            f"signal[{ch}][{i}]",
            f"{kind} at channel {ch}, sample {i} ({int(bad.sum())} non-finite in total); interpolate or drop gaps first",
        )
    if length < min_length:
        raise InputError("signal", f"has {length} samples per channel; the minimum is {min_length} — give a longer recording")
    if max_channels is not None and c > max_channels:
        raise InputError("signal", f"has {c} channels; at most {max_channels} are supported — select or merge channels")

    if m.channels:
        if len(m.channels) != c:
            raise InputError(
                "meta.channels", f"names {len(m.channels)} channels but the signal has {c} (shape {arr.shape}); give one name per row"
            )
    else:
        m = dataclasses.replace(m, channels=tuple(f"ch{k}" for k in range(c)))
    if m.mean is not None and len(m.mean) != c:
        raise InputError("meta.mean", f"has {len(m.mean)} values but the signal has {c} channels; give one per channel")

    if not isinstance(prompt, str):
        raise InputError("prompt", f"expected a string (the question), got {_type_name(prompt)}")
    if not prompt.strip():
        raise InputError("prompt", "is empty; ask a question, e.g. 'What activity is the person doing?'")
    return TSInput(signal=np.ascontiguousarray(arr), meta=m, prompt=prompt)


def from_json(
    obj: str | bytes | Mapping, *, min_length: int = 1, max_channels: int | None = None
) -> TSInput:
    """Parse the one JSON form ``{"signal": [[...]], "meta": {...}, "prompt": "..."}`` and validate it."""
    if isinstance(obj, (bytes, bytearray)):
        try:
            obj = obj.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError("json", f"is not UTF-8 ({e.reason} at byte {e.start}); send UTF-8 encoded JSON") from None
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as e:
            raise InputError("json", f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        except RecursionError:
            raise InputError("json", "is nested too deeply; signal must be a list of lists of numbers") from None
    if not isinstance(obj, Mapping):
        raise InputError("json", f"expected an object with keys signal, meta, prompt; got {_type_name(obj)}")
    for key in obj:
        if key not in _TOP_KEYS:
            raise InputError(str(key), f"unknown top-level key{_did_you_mean(key, _TOP_KEYS)}; allowed: signal, meta, prompt")
    for key in _TOP_KEYS:
        if key not in obj:
            raise InputError(key, "missing; the JSON form is {\"signal\": [[...]], \"meta\": {\"fs\": ...}, \"prompt\": \"...\"}")
    return validate(obj["signal"], obj["meta"], obj["prompt"], min_length=min_length, max_channels=max_channels)


def to_json(inp: TSInput) -> dict:
    """The JSON form of a validated triplet; ``from_json(to_json(x))`` reproduces ``x`` exactly."""
    return {"signal": inp.signal.tolist(), "meta": inp.meta.to_dict(), "prompt": inp.prompt}


def _as_2d(signal: Any, field: str = "signal") -> np.ndarray:
    arr = np.asarray(signal)
    if arr.ndim != 2:
        raise InputError(field, f"must be 2-D (channels, length), got shape {arr.shape}; reshape to (C, L)")
    return arr


def znormalize(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel z-normalisation; the encoder sees shape, the text carries scale (returns normed, mean, std).

    Stats are float64 (they are written into text); std is floored at ``STD_EPS`` and a flat
    channel becomes exact zeros rather than NaN or rounding noise.
    """
    x = _as_2d(signal).astype(np.float64)
    if x.shape[1] == 0:
        raise InputError("signal", "has no samples; cannot normalise an empty channel")
    mean = x.mean(axis=1)
    std = np.maximum(x.std(axis=1), STD_EPS)
    normed = (x - mean[:, None]) / std[:, None]
    flat = np.ptp(x, axis=1) == 0
    normed[flat] = 0.0
    return normed.astype(np.float32), mean, std


def resample(signal: np.ndarray, fs_in: float, fs_out: float, *, max_denominator: int = 1000) -> np.ndarray:
    """Polyphase resampling (anti-aliased) to ``fs_out``; the ratio is a fraction with a bounded denominator.

    Output length is ``ceil(L * up / down)`` where ``up/down`` approximates ``fs_out / fs_in``. The numbers are
    scipy.signal.resample_poly's (Kaiser-windowed FIR, beta 5, constant padding; tests/test_signals.py holds them
    equal), computed with numpy alone: the streaming runtime resamples every window and keeps scipy out.
    """
    fs_in = _check_fs(fs_in, "fs_in")
    fs_out = _check_fs(fs_out, "fs_out")
    x = _as_2d(signal)
    ratio = (Fraction(fs_out) / Fraction(fs_in)).limit_denominator(max_denominator)
    if ratio.numerator == 0:
        raise InputError("fs_out", f"{fs_out} Hz is too far below fs_in={fs_in} Hz to express with denominator ≤ {max_denominator}")
    if ratio == 1 or x.shape[1] == 0:
        length = x.shape[1] if ratio == 1 else 0
        return np.array(x[:, :length], dtype=np.float32)
    return _resample_poly(x.astype(np.float64), ratio.numerator, ratio.denominator).astype(np.float32)


def _lowpass_fir(numtaps: int, cutoff: float, beta: float = 5.0) -> np.ndarray:
    """scipy.signal.firwin(numtaps, cutoff, window=("kaiser", beta)): windowed sinc, unit gain at DC."""
    m = np.arange(numtaps) - 0.5 * (numtaps - 1)
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(numtaps, beta)
    return h / h.sum()


def _resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """(C, L) -> (C, ceil(L * up / down)): upsample by zero insertion, FIR low-pass, keep every down-th sample,
    aligned as scipy.signal.resample_poly aligns it (its pre/post padding of the filter)."""
    C, L = x.shape
    n_out = -(-L * up // down)
    half = 10 * max(up, down)
    h = _lowpass_fir(2 * half + 1, 1.0 / max(up, down)) * up  # (2 * half + 1,)
    pre = down - half % down
    skip = (half + pre) // down  # output samples before the first kept one
    out_len = lambda n_h: ((L - 1) * up + n_h - 1) // down + 1  # noqa: E731 - upfirdn's output length
    post = 0
    while out_len(len(h) + pre + post) < n_out + skip:
        post += 1
    h = np.concatenate([np.zeros(pre), h, np.zeros(post)])
    xu = np.zeros((C, (L - 1) * up + 1))  # (C, (L - 1) * up + 1) zero-stuffed
    xu[:, ::up] = x
    y = np.stack([np.convolve(row, h)[::down] for row in xu])  # (C, out_len)
    return y[:, skip : skip + n_out]


def window(signal: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Cut (C, L) into (N, C, length) windows every ``hop`` samples; N = 0 when L < length.

    Returns a read-only strided view (no copy, even with overlap); copy before writing to it.
    """
    for name, v in (("length", length), ("hop", hop)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
            raise InputError(name, f"window {name} must be a positive integer number of samples, got {_short(v)}")
    x = _as_2d(signal)
    c, n = x.shape
    if n < length:
        return np.empty((0, c, length), dtype=x.dtype)
    views = np.lib.stride_tricks.sliding_window_view(x, int(length), axis=-1)[:, :: int(hop)]  # (C, N, length)
    return views.transpose(1, 0, 2)  # (N, C, length)
