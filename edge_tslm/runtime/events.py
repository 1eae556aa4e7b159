"""Streaming events as JSON lines: their schema, a small validator, and latency/memory summaries.

One ``window`` event per window (classified or not), ``segment``/``episode``/``burden`` events
from smoothing across windows, ``calibration`` when the stream sets a wearer's gait frame, ``warning``/``source_issue`` events for what went wrong on the
way in, an optional fatal ``error``, and one closing ``summary``. ``SCHEMA`` lists, per event
type, the keys every event has and the JSON types each may take; extra keys are allowed.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Iterable, TextIO

import numpy as np

__all__ = ["SCHEMA", "validate_event", "check_event", "dumps", "write_events", "peak_rss_mb", "percentiles"]

NUM = ("number",)
INT = ("integer",)
STR = ("string",)
STR_OR_NULL = ("string", "null")
NUM_OR_NULL = ("number", "null")
LATENCY_KEYS = ("prepare", "encode", "classify", "rationale", "total")
SPAN = {"label": STR, "start_s": NUM, "end_s": NUM, "windows": INT, "first_index": INT, "last_index": INT}

SCHEMA: dict[str, dict[str, Any]] = {
    "start": {
        "required": {
            "task": STR,
            "backend": STR,
            "fs_in": NUM,
            "fs_model": NUM,
            "window_s": NUM,
            "hop_s": NUM,
            "channels": ("array",),
            "labels": ("array",),
        }
    },
    "window": {
        "required": {
            "index": INT,
            "start_s": NUM,
            "end_s": NUM,
            "answer": STR_OR_NULL,
            "scores": ("object",),
            "rationale": STR_OR_NULL,
            "quality": ("object",),
            "latency_ms": ("object",),
        },
        "objects": {
            "quality": {"flags": ("array",), "usable": ("boolean",), "missing_fraction": NUM, "messages": ("array",)},
            "latency_ms": {k: NUM for k in LATENCY_KEYS},
        },
        "maps": {"scores": NUM, "stages_ms": NUM},  # stages_ms (optional): the backend's prefill / decode timings
    },
    "segment": {"required": dict(SPAN)},
    "episode": {"required": {**SPAN, "duration_s": NUM}},
    "burden": {"required": {"label": STR, "burden": NUM_OR_NULL, "time_s": NUM, "monitored_s": NUM, "episodes": INT}},
    "warning": {"required": {"kind": STR, "message": STR}},
    # the stream set something it learned from the signal (the wearer's gait frame), and how to reuse it
    "calibration": {"required": {"kind": STR, "message": STR, "reference": ("array",), "source": STR}},
    "source_issue": {"required": {"kind": STR, "message": STR, "line": ("integer", "null")}},
    "error": {"required": {"kind": STR, "message": STR}},
    "summary": {
        "required": {
            "windows": INT,
            "usable": INT,
            "decisions": ("object",),
            "latency_ms": ("object",),
            "peak_rss_mb": NUM_OR_NULL,
            "flags": ("object",),
            "source_issues": INT,
        },
        "objects": {"latency_ms": {"p50": NUM_OR_NULL, "p95": NUM_OR_NULL}},
        "maps": {"decisions": INT, "flags": INT},
    },
}


def _is(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    raise ValueError(f"unknown schema type {kind!r}")


def _check_keys(obj: dict, spec: dict[str, tuple[str, ...]], where: str, errors: list[str]) -> None:
    for key, kinds in spec.items():
        if key not in obj:
            errors.append(f"{where}.{key}: missing")
        elif not any(_is(obj[key], k) for k in kinds):
            errors.append(f"{where}.{key}: expected {'|'.join(kinds)}, got {type(obj[key]).__name__} {obj[key]!r:.40}")


def validate_event(event: Any) -> list[str]:
    """Every way ``event`` departs from ``SCHEMA`` (empty list: valid). Also checks it survives strict JSON."""
    if not isinstance(event, dict):
        return [f"event: expected an object, got {type(event).__name__}"]
    kind = event.get("type")
    if kind not in SCHEMA:
        return [f"type: expected one of {sorted(SCHEMA)}, got {kind!r}"]
    spec = SCHEMA[kind]
    errors: list[str] = []
    _check_keys(event, spec["required"], kind, errors)
    for key, sub in spec.get("objects", {}).items():
        if isinstance(event.get(key), dict):
            _check_keys(event[key], sub, f"{kind}.{key}", errors)
    for key, kinds in spec.get("maps", {}).items():
        if isinstance(event.get(key), dict):
            for k, v in event[key].items():
                if not isinstance(k, str) or not any(_is(v, t) for t in kinds):
                    errors.append(f"{kind}.{key}[{k!r}]: expected {'|'.join(kinds)}, got {v!r:.40}")
    try:
        json.dumps(event, allow_nan=False)
    except (TypeError, ValueError) as e:
        errors.append(f"{kind}: not strict JSON ({e})")
    return errors


def check_event(event: Any) -> dict:
    """Return ``event`` if it matches the schema, else raise ``ValueError`` listing the problems."""
    errors = validate_event(event)
    if errors:
        raise ValueError("invalid event: " + "; ".join(errors))
    return event


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None  # strict JSON has no NaN/inf
    return x


def dumps(event: dict) -> str:
    """One JSON line (numpy scalars made plain, NaN/inf as null)."""
    return json.dumps(_plain(event), allow_nan=False, ensure_ascii=False)


def write_events(events: Iterable[dict], out: TextIO | None = None) -> int:
    """Write events as JSON lines, flushing each (a live consumer sees it at once); returns the count."""
    out = out or sys.stdout
    n = 0
    for ev in events:
        out.write(dumps(ev) + "\n")
        out.flush()
        n += 1
    return n


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MiB (None where unknown, e.g. Windows).

    Linux: VmHWM, this process's own high-water mark. Not ru_maxrss, which a child keeps from the parent it was
    forked from (a benchmark that loaded 500 MB of data and then started the streaming process made the stream's
    'peak' 500 MB before it loaded anything)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return round(peak * scale / 2**20, 1)


def percentiles(values: list[float], qs: tuple[float, ...] = (50, 95)) -> dict[str, float | None]:
    if not values:
        return {f"p{int(q)}": None for q in qs}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{int(q)}": round(float(np.percentile(arr, q)), 3) for q in qs}
