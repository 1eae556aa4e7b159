"""Where samples come from: CSV, WFDB records, JSON lines (file or stdin), and real-time replay.

Every reader yields ``Chunk`` (samples) and ``SourceIssue`` (what was wrong with the input) items.
A broken row, an unparsable number or a truncated file is reported and reading carries on; a
missing sample is kept as NaN so the timeline stays exact and quality checks see the hole.
Configuration mistakes (a column that does not exist, a missing package) raise ``SourceError``
before any sample is read.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

__all__ = [
    "Chunk",
    "SourceIssue",
    "SourceError",
    "TIME_NAMES",
    "read_csv",
    "read_wfdb",
    "read_jsonl",
    "open_source",
    "replay",
    "detect_format",
]

TIME_NAMES = ("t", "time", "timestamp", "time_s", "seconds", "sec", "elapsed")


@dataclass(frozen=True)
class Chunk:
    """Consecutive samples: data (C, n) float32 (NaN where missing), optional times (n,) in seconds."""

    data: np.ndarray
    times: np.ndarray | None = None
    fs: float | None = None
    channels: tuple[str, ...] | None = None
    unit: str | None = None


@dataclass(frozen=True)
class SourceIssue:
    """Something wrong in the input (bad row, unparsable number, truncated file...); the stream goes on."""

    kind: str
    message: str
    line: int | None = None


class SourceError(ValueError):
    """The source cannot be read as configured (unknown column, missing package, unknown format)."""


Item = Chunk | SourceIssue


def _open_text(src: str | Path | IO[str]) -> tuple[IO[str], bool]:
    if not isinstance(src, (str, Path)):
        return src, False
    if str(src) == "-":
        return sys.stdin, False
    path = Path(src)
    if not path.exists():
        raise SourceError(f"input {src} does not exist")
    return open(path, encoding="utf-8", errors="replace", newline=""), True


def _float(text: str) -> float:
    t = text.strip().strip('"').strip("'")
    if t == "" or t.lower() in ("nan", "na", "null", "none"):
        return math.nan
    return float(t)


def _split(line: str, delimiter: str | None) -> list[str]:
    return [f.strip().strip('"').strip("'") for f in (line.split(delimiter) if delimiter else line.split())]


def _sniff_delimiter(line: str) -> str | None:
    for d in (",", ";", "\t"):
        if d in line:
            return d
    return None  # whitespace


def _is_header(fields: list[str]) -> bool:
    for f in fields:
        try:
            float(f)
        except ValueError:
            if f.strip().lower() not in ("", "nan", "na", "null", "none"):
                return True
    return False


def _resolve_column(spec: str | int, names: list[str] | None, n_fields: int, what: str) -> int:
    if isinstance(spec, int) or (isinstance(spec, str) and spec.lstrip("-").isdigit()):
        idx = int(spec)
        idx = idx + n_fields if idx < 0 else idx
        if not 0 <= idx < n_fields:
            raise SourceError(f"{what} index {spec} is out of range: the file has {n_fields} columns (0..{n_fields - 1})")
        return idx
    if names is None:
        raise SourceError(f"{what} {spec!r} is a name but the file has no header row; give a column index instead")
    lowered = [n.lower() for n in names]
    if spec in names:
        return names.index(spec)
    if spec.lower() in lowered:
        return lowered.index(spec.lower())
    raise SourceError(f"{what} {spec!r} is not in the header; columns are {names}")


def read_csv(
    src: str | Path | IO[str],
    *,
    columns: Sequence[str | int] | None = None,
    time_column: str | int | None = None,
    header: bool | None = None,
    delimiter: str | None = None,
    time_scale: float = 1.0,
    chunk_size: int = 256,
    fs: float | None = None,
    unit: str | None = None,
) -> Iterator[Item]:
    """Stream a CSV (or ;/tab/whitespace separated) file of samples, one row per sample.

    ``columns``: signal columns by name or index (default: every column but the time column).
    ``time_column``: name or index of a time column in seconds (x ``time_scale``); with a header,
    a column named t/time/timestamp/... is used automatically. ``header=None`` detects a header
    row (any non-numeric field in the first row). Lines starting with ``#`` are skipped.
    """
    f, close = _open_text(src)
    try:
        yield from _read_csv(f, columns, time_column, header, delimiter, time_scale, max(1, int(chunk_size)), fs, unit)
    finally:
        if close:
            f.close()


def _read_csv(f, columns, time_column, header, delimiter, time_scale, chunk_size, fs, unit) -> Iterator[Item]:
    lines = iter(f)
    lineno = 0
    first = None
    for raw in lines:
        lineno += 1
        if raw.strip() and not raw.lstrip().startswith("#"):
            first = raw
            break
    if first is None:
        yield SourceIssue("empty", "the input has no data rows", lineno or None)
        return
    delim = delimiter if delimiter is not None else _sniff_delimiter(first)
    fields = _split(first.rstrip("\r\n"), delim)
    has_header = _is_header(fields) if header is None else bool(header)
    names = fields if has_header else None
    n_fields = len(fields)
    if time_column is None and names is not None:
        for i, n in enumerate(names):
            if n.lower() in TIME_NAMES:
                time_column = i
                break
    t_idx = None if time_column is None else _resolve_column(time_column, names, n_fields, "time column")
    if columns:
        cols = [_resolve_column(c, names, n_fields, "column") for c in columns]
    else:
        cols = [i for i in range(n_fields) if i != t_idx]
    if not cols:
        raise SourceError("no signal column left (the only column is the time column); pass --column")
    chan_names = tuple(names[i] for i in cols) if names is not None else None
    need = max(cols + ([t_idx] if t_idx is not None else [])) + 1

    rows: list[list[float]] = []
    times: list[float] = []
    meta = {"fs": fs, "channels": chan_names, "unit": unit}

    def flush() -> Iterator[Chunk]:
        if rows:
            data = np.asarray(rows, dtype=np.float32).T  # (C, n)
            t = np.asarray(times, dtype=np.float64) if t_idx is not None else None
            rows.clear()
            times.clear()
            yield Chunk(data, t, **meta)

    def parse(line: str, no: int, last: bool) -> Iterator[Item]:
        parts = _split(line.rstrip("\r\n"), delim)
        truncated = last and not line.endswith("\n")
        if len(parts) < need:
            kind = "truncated" if truncated else "bad_row"
            msg = f"row has {len(parts)} fields, {need} needed" + (" (file ends mid-row)" if truncated else "")
            yield from flush()
            yield SourceIssue(kind, msg + ("; sample kept as missing" if t_idx is None else "; row skipped"), no)
            if t_idx is None:
                rows.append([math.nan] * len(cols))
            return
        if t_idx is not None:
            try:
                t = _float(parts[t_idx]) * time_scale
                if not math.isfinite(t):
                    raise ValueError
            except ValueError:
                yield from flush()
                yield SourceIssue("bad_timestamp", f"time {parts[t_idx]!r} is not a number; row skipped", no)
                return
        values = []
        bad = []
        for c in cols:
            try:
                values.append(_float(parts[c]))
            except ValueError:
                values.append(math.nan)
                bad.append(parts[c])
        if bad:
            yield from flush()
            kind = "truncated" if truncated else "bad_number"
            yield SourceIssue(kind, f"unparsable value(s) {bad[:3]}; kept as missing", no)
        rows.append(values)
        if t_idx is not None:
            times.append(t)
        if len(rows) >= chunk_size:
            yield from flush()

    pending: tuple[str, int] | None = None if has_header else (first, lineno)
    try:
        for raw in lines:
            lineno += 1
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            if pending is not None:
                yield from parse(pending[0], pending[1], last=False)
            pending = (raw, lineno)
    except (OSError, UnicodeError) as e:
        yield from flush()
        yield SourceIssue("read_error", f"reading stopped: {e}", lineno)
    if pending is not None:
        yield from parse(pending[0], pending[1], last=True)
    yield from flush()


def read_wfdb(
    record: str | Path,
    *,
    columns: Sequence[str | int] | None = None,
    block_s: float = 30.0,
) -> Iterator[Item]:
    """Stream a WFDB record (``name`` or ``name.hea``) in blocks of ``block_s`` seconds, physical units.

    Needs the optional ``wfdb`` package. A record whose signal file ends early yields what could be
    read and a ``truncated`` issue.
    """
    try:
        import wfdb
    except ImportError:
        raise SourceError("reading WFDB records needs the wfdb package: pip install wfdb (or pip install 'edge-tslm[data]')") from None
    path = str(record)
    for ext in (".hea", ".dat", ".mat"):
        if path.endswith(ext):
            path = path[: -len(ext)]
    if not Path(path + ".hea").exists():
        raise SourceError(f"WFDB header {path}.hea does not exist")
    try:
        head = wfdb.rdheader(path)
    except Exception as e:  # noqa: BLE001 - wfdb raises many kinds on a bad header
        yield SourceIssue("read_error", f"cannot read WFDB header {path}.hea: {e}")
        return
    names = list(head.sig_name or [])
    idx = [_resolve_column(c, names, head.n_sig, "channel") for c in columns] if columns else list(range(head.n_sig))
    fs = float(head.fs)
    units = {head.units[i] for i in idx} if head.units else set()
    unit = units.pop() if len(units) == 1 else None
    total = int(head.sig_len or 0)
    block = max(1, int(round(block_s * fs)))
    start = 0
    while start < total:
        stop = min(total, start + block)
        try:
            rec = wfdb.rdrecord(path, sampfrom=start, sampto=stop, channels=idx)
            data = np.asarray(rec.p_signal, dtype=np.float32).T  # (C, n)
        except Exception as e:  # noqa: BLE001 - a short .dat file surfaces as several error types
            got = _wfdb_partial(wfdb, path, idx, start, stop)
            if got is not None and got.shape[1]:
                yield Chunk(got, None, fs, tuple(names[i] for i in idx) if names else None, unit)
            at = start + (0 if got is None else got.shape[1])
            yield SourceIssue("truncated", f"signal file ends at sample {at} of the {total} its header promises ({type(e).__name__})")
            return
        if data.shape[1] < stop - start:
            if data.shape[1]:
                yield Chunk(data, None, fs, tuple(names[i] for i in idx) if names else None, unit)
            yield SourceIssue("truncated", f"signal file ends at sample {start + data.shape[1]} of {total}")
            return
        yield Chunk(data, None, fs, tuple(names[i] for i in idx) if names else None, unit)
        start = stop


def _wfdb_partial(wfdb: Any, path: str, idx: list[int], start: int, stop: int) -> np.ndarray | None:
    """Bisect for the longest readable prefix of [start, stop) of a truncated record."""
    lo, hi = start, stop  # [start, lo) readable, [start, hi) not
    best = None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            rec = wfdb.rdrecord(path, sampfrom=start, sampto=mid, channels=idx)
            best = np.asarray(rec.p_signal, dtype=np.float32).T
            lo = mid
        except Exception:  # noqa: BLE001
            hi = mid
    return best


def _as_matrix(signal: Any) -> np.ndarray:
    """JSON signal -> (C, n) float32 with null -> NaN; raises ValueError when not a rectangle of numbers."""
    if not isinstance(signal, list) or not signal:
        raise ValueError("signal must be a non-empty list of channels")
    if not isinstance(signal[0], list):
        signal = [signal]  # one channel given flat
    rows = []
    for ch in signal:
        if not isinstance(ch, list):
            raise ValueError("signal must be a list of lists (channels, samples)")
        rows.append([math.nan if v is None else v for v in ch])
    arr = np.asarray(rows, dtype=np.float32)  # raises on ragged or non-numeric
    if arr.ndim != 2:
        raise ValueError(f"signal must be 2-D, got shape {arr.shape}")
    return arr


def read_jsonl(src: str | Path | IO[str], *, chunk_size: int = 64) -> Iterator[Item]:
    """Stream JSON lines: per sample ``{"t": 1.02, "x": [0.1, 0.2, 0.9]}`` (``t`` optional, ``x`` may be a
    number) or per chunk ``{"signal": [[...], ...], "meta": {"fs": 50, ...}, "t0": 12.0}``.

    Samples are batched up to ``chunk_size`` lines (use 1 for a live stdin feed).
    """
    f, close = _open_text(src)
    try:
        yield from _read_jsonl(f, max(1, int(chunk_size)))
    finally:
        if close:
            f.close()


def _read_jsonl(f, chunk_size: int) -> Iterator[Item]:
    xs: list[list[float]] = []
    ts: list[float] = []
    state = {"timed": None}

    def flush() -> Iterator[Chunk]:
        if xs:
            data = np.asarray(xs, dtype=np.float32).T
            t = np.asarray(ts, dtype=np.float64) if state["timed"] else None
            xs.clear()
            ts.clear()
            yield Chunk(data, t)

    lineno = 0
    try:
        for raw in f:
            lineno += 1
            line = raw.strip()
            if not line:
                continue
            truncated = not raw.endswith("\n")
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:
                yield from flush()
                kind = "truncated" if truncated else "bad_line"
                yield SourceIssue(kind, f"not valid JSON ({getattr(e, 'msg', e)}); line skipped", lineno)
                continue
            if not isinstance(obj, dict):
                yield from flush()
                yield SourceIssue("bad_line", f"expected an object, got {type(obj).__name__}; line skipped", lineno)
                continue
            if "signal" in obj:
                yield from flush()
                try:
                    data = _as_matrix(obj["signal"])
                    meta = obj.get("meta") or {}
                    if not isinstance(meta, dict):
                        raise ValueError("meta must be an object")
                    fs = meta.get("fs")
                    if fs is not None and (isinstance(fs, bool) or not isinstance(fs, (int, float)) or not fs > 0):
                        raise ValueError(f"meta.fs must be a number > 0, got {fs!r}")
                    chans = meta.get("channels")
                    t0 = obj.get("t0", meta.get("t0"))
                    times = None
                    if t0 is not None:
                        if fs is None:
                            raise ValueError("t0 needs meta.fs to place the samples in time")
                        times = float(t0) + np.arange(data.shape[1]) / float(fs)
                    yield Chunk(data, times, None if fs is None else float(fs), tuple(chans) if chans else None, meta.get("unit"))
                except (ValueError, TypeError) as e:
                    yield SourceIssue("bad_line", f"bad chunk: {e}; line skipped", lineno)
                continue
            if "x" not in obj:
                yield from flush()
                yield SourceIssue("bad_line", "expected a sample {\"t\":..., \"x\": [...]} or a chunk {\"signal\": ...}; line skipped", lineno)
                continue
            x = obj["x"]
            x = x if isinstance(x, list) else [x]
            try:
                values = [math.nan if v is None else float(v) for v in x]
                if any(isinstance(v, bool) for v in x) or not values:
                    raise ValueError
            except (TypeError, ValueError):
                yield from flush()
                yield SourceIssue("bad_line", f"x must be numbers, got {str(obj['x'])[:40]}; line skipped", lineno)
                continue
            timed = "t" in obj
            if timed:
                try:
                    t = float(obj["t"])
                    if not math.isfinite(t):
                        raise ValueError
                except (TypeError, ValueError):
                    yield from flush()
                    yield SourceIssue("bad_timestamp", f"t {obj['t']!r} is not a number; line skipped", lineno)
                    continue
            if state["timed"] is not None and (timed != state["timed"] or (xs and len(values) != len(xs[0]))):
                yield from flush()
            state["timed"] = timed
            xs.append(values)
            if timed:
                ts.append(t)
            if len(xs) >= chunk_size:
                yield from flush()
    except (OSError, UnicodeError) as e:
        yield from flush()
        yield SourceIssue("read_error", f"reading stopped: {e}", lineno)
    yield from flush()


def detect_format(src: str) -> str:
    """csv, wfdb or jsonl from the file name (and the first character for stdin-like names)."""
    s = str(src).lower()
    if s.endswith((".hea", ".dat")) or (not Path(s).suffix and Path(str(src) + ".hea").exists()):
        return "wfdb"
    if s.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if s.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    if s == "-":
        return "jsonl"
    raise SourceError(f"cannot tell the format of {src}; pass --fmt csv|wfdb|jsonl")


def open_source(
    src: str | Path | IO[str],
    fmt: str = "auto",
    *,
    columns: Sequence[str | int] | None = None,
    time_column: str | int | None = None,
    chunk_size: int | None = None,
    fs: float | None = None,
    time_scale: float = 1.0,
) -> Iterator[Item]:
    """Open any supported input; ``-`` is stdin (JSON lines unless ``fmt`` says csv). ``time_scale`` turns a
    CSV time column into seconds (0.001 for milliseconds)."""
    if fmt == "auto":
        if not isinstance(src, (str, Path)):
            raise SourceError("format auto needs a file name; pass fmt='csv' or 'jsonl' for an open stream")
        fmt = detect_format(str(src))
    live = isinstance(src, (str, Path)) and str(src) == "-"
    if fmt == "csv":
        return read_csv(
            src, columns=columns, time_column=time_column, time_scale=time_scale, chunk_size=chunk_size or (1 if live else 256), fs=fs
        )
    if fmt == "jsonl":
        return read_jsonl(src, chunk_size=chunk_size or (1 if live else 64))
    if fmt == "wfdb":
        if isinstance(src, io.IOBase) or str(src) == "-":
            raise SourceError("WFDB records are files (.hea + .dat); they cannot come from stdin")
        return read_wfdb(src, columns=columns)
    raise SourceError(f"unknown format {fmt!r}; choose auto, csv, wfdb or jsonl")


def replay(
    items: Iterable[Item],
    *,
    fs: float | None = None,
    speed: float = 1.0,
    max_chunk_s: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Item]:
    """Feed a recorded source at real-time speed x ``speed``: each sample is released no earlier than its time.

    Times come from the chunk's timestamps, else from sample counts at the chunk's (or the given) ``fs``.
    Big chunks are split into pieces of ``max_chunk_s`` seconds so a consumer sees samples as a live
    sensor would deliver them.
    """
    if not speed > 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    t_origin: float | None = None
    wall0 = clock()
    n_done = 0  # samples released so far (clock without timestamps)
    for item in items:
        if not isinstance(item, Chunk):
            yield item
            continue
        rate = item.fs or fs
        n = item.data.shape[1]
        step = max(1, int(round(max_chunk_s * rate))) if rate else n
        for a in range(0, n, step):
            b = min(n, a + step)
            piece = Chunk(item.data[:, a:b], None if item.times is None else item.times[a:b], item.fs, item.channels, item.unit)
            if piece.times is not None:
                if t_origin is None:
                    t_origin = float(piece.times[0]) - (1.0 / rate if rate else 0.0)
                t_rel = float(piece.times[-1]) - t_origin
            elif rate:
                t_rel = (n_done + b - a) / rate
            else:
                t_rel = 0.0
            n_done += b - a
            wait = wall0 + t_rel / speed - clock()
            if wait > 0:
                sleep(wait)
            yield piece
