"""Sources: CSV (named/indexed columns, time column, header detection), WFDB, JSON lines, replay timing.

Broken input (bad row, unparsable number, truncated file, bad JSON line) is reported as a SourceIssue
and reading carries on; configuration mistakes raise SourceError before any sample.
"""

from __future__ import annotations

import io
import json
import sys
import time

import numpy as np
import pytest

from edge_tslm.runtime.sources import Chunk, SourceError, SourceIssue, detect_format, open_source, read_csv, read_jsonl, read_wfdb, replay


def collect(items):
    items = list(items)
    chunks = [i for i in items if isinstance(i, Chunk)]
    issues = [i for i in items if isinstance(i, SourceIssue)]
    data = np.concatenate([c.data for c in chunks], 1) if chunks else np.empty((0, 0))
    times = np.concatenate([c.times for c in chunks]) if chunks and chunks[0].times is not None else None
    return data, times, issues, chunks


def write_csv(path, header, rows, end="\n"):
    text = "\n".join(([",".join(header)] if header else []) + [",".join(map(str, r)) for r in rows]) + end
    path.write_text(text)
    return path


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    return np.round(rng.normal(0, 1, (40, 3)), 5)


def test_csv_named_columns_and_auto_time(tmp_path, table):
    t = np.arange(40) / 50
    p = write_csv(tmp_path / "a.csv", ["time", "acc_x", "acc_y", "acc_z"], np.column_stack([t, table]).tolist())
    data, times, issues, chunks = collect(read_csv(p, columns=["acc_z", "acc_x"], chunk_size=7))
    assert not issues and chunks[0].channels == ("acc_z", "acc_x")
    np.testing.assert_allclose(data, table[:, [2, 0]].T, rtol=1e-6)
    np.testing.assert_allclose(times, t)
    assert max(c.data.shape[1] for c in chunks) == 7


def test_csv_indexed_columns_headerless_semicolon(tmp_path, table):
    p = tmp_path / "b.txt"
    p.write_text("# a comment\n" + "\n".join(";".join(map(str, r)) for r in table.tolist()) + "\n")
    data, times, issues, chunks = collect(read_csv(p, columns=["1", -1]))
    assert not issues and times is None and chunks[0].channels is None
    np.testing.assert_allclose(data, table[:, [1, 2]].T, rtol=1e-6)
    data, _, _, _ = collect(read_csv(p))  # default: every column
    assert data.shape == (3, 40)


def test_csv_configuration_errors_raise(tmp_path, table):
    p = write_csv(tmp_path / "c.csv", ["x", "y", "z"], table.tolist())
    with pytest.raises(SourceError, match="not in the header"):
        list(read_csv(p, columns=["w"]))
    with pytest.raises(SourceError, match="out of range"):
        list(read_csv(p, columns=[5]))
    q = write_csv(tmp_path / "d.csv", None, table.tolist())
    with pytest.raises(SourceError, match="no header"):
        list(read_csv(q, columns=["x"]))
    with pytest.raises(SourceError, match="does not exist"):
        list(read_csv(tmp_path / "missing.csv"))


def test_csv_broken_rows_are_reported_and_reading_carries_on(tmp_path, table):
    lines = ["x,y,z"] + [",".join(map(str, r)) for r in table.tolist()]
    lines[5] = "1.0,2.0"  # too few fields
    lines[9] = "1.0,abc,3.0"  # unparsable number
    lines[12] = "0.5,,0.25"  # empty cell: missing, not an issue
    (tmp_path / "e.csv").write_text("\n".join(lines) + "\n4.0,5")  # and truncated mid-row
    data, _, issues, _ = collect(read_csv(tmp_path / "e.csv"))
    assert [(i.kind, i.line) for i in issues] == [("bad_row", 6), ("bad_number", 10), ("truncated", 42)]
    assert data.shape == (3, 41)  # every row kept (as missing where broken), so timing stays exact
    assert np.isnan(data[:, 4]).all() and np.isnan(data[1, 8]) and data[0, 8] == 1.0 and np.isnan(data[1, 11])
    assert np.isnan(data[:, 40]).all()
    np.testing.assert_allclose(data[:, 20], table[20], rtol=1e-6)


def test_csv_bad_timestamp_row_is_skipped(tmp_path, table):
    rows = [[i / 50, *r] for i, r in enumerate(table.tolist())]
    rows[3][0] = "later"
    p = write_csv(tmp_path / "f.csv", ["t", "x", "y", "z"], rows)
    data, times, issues, _ = collect(read_csv(p))
    assert [i.kind for i in issues] == ["bad_timestamp"] and data.shape == (3, 39) and len(times) == 39


def test_csv_empty_file(tmp_path):
    (tmp_path / "g.csv").write_text("\n\n")
    _, _, issues, chunks = collect(read_csv(tmp_path / "g.csv"))
    assert not chunks and issues[0].kind == "empty"


def test_wfdb_record_blocks_and_truncation(tmp_path):
    wfdb = pytest.importorskip("wfdb")
    x = np.column_stack([np.sin(np.linspace(0, 60, 3000)), 0.5 * np.cos(np.linspace(0, 60, 3000))])
    wfdb.wrsamp("rec", fs=300, units=["mV", "mV"], sig_name=["I", "II"], p_signal=x, fmt=["16", "16"], write_dir=str(tmp_path))
    data, times, issues, chunks = collect(read_wfdb(tmp_path / "rec.hea", block_s=4))
    assert not issues and times is None and len(chunks) == 3
    assert chunks[0].fs == 300 and chunks[0].channels == ("I", "II") and chunks[0].unit == "mV"
    np.testing.assert_allclose(data.T, x, atol=1e-4)
    data, _, _, chunks = collect(read_wfdb(tmp_path / "rec", columns=["II"]))
    assert data.shape == (1, 3000) and chunks[0].channels == ("II",)
    dat = tmp_path / "rec.dat"
    dat.write_bytes(dat.read_bytes()[:-2001])  # cut mid-sample
    data, _, issues, _ = collect(read_wfdb(tmp_path / "rec", block_s=4))
    assert [i.kind for i in issues] == ["truncated"] and "2499" in issues[0].message
    assert data.shape == (2, 2499)
    np.testing.assert_allclose(data.T, x[:2499], atol=1e-4)


def test_wfdb_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wfdb", None)
    with pytest.raises(SourceError, match="pip install wfdb"):
        list(read_wfdb(tmp_path / "rec"))


def test_jsonl_samples_chunks_and_bad_lines(tmp_path):
    lines = [json.dumps({"t": i / 50, "x": [i, -i, 0.5]}) for i in range(10)]
    lines.insert(3, "{not json")
    lines.insert(6, json.dumps({"t": "soon", "x": [1, 2, 3]}))
    lines.insert(8, json.dumps({"x": ["a"]}))
    lines.insert(9, json.dumps([1, 2]))
    lines.append(json.dumps({"signal": [[1, None, 3], [4, 5, 6], [7, 8, 9]], "meta": {"fs": 50, "unit": "g"}, "t0": 0.2}))
    lines.append(json.dumps({"signal": [[1, 2], [3]], "meta": {"fs": 50}}))  # ragged
    lines.append(json.dumps({"signal": [[1.0, 2.0]], "meta": {"fs": -1}}))
    lines.append('{"t": 1.0, "x": [1')  # truncated last line
    p = tmp_path / "s.jsonl"
    p.write_text("\n".join(lines))
    items = list(read_jsonl(p, chunk_size=4))
    issues = [(i.kind, i.line) for i in items if isinstance(i, SourceIssue)]
    assert issues == [("bad_line", 4), ("bad_timestamp", 7), ("bad_line", 9), ("bad_line", 10), ("bad_line", 16), ("bad_line", 17), ("truncated", 18)]
    chunks = [i for i in items if isinstance(i, Chunk)]
    samples = np.concatenate([c.data for c in chunks[:-1]], 1)
    np.testing.assert_array_equal(samples[0], np.arange(10))
    np.testing.assert_allclose(np.concatenate([c.times for c in chunks[:-1]]), np.arange(10) / 50)
    last = chunks[-1]
    assert last.fs == 50 and last.unit == "g" and np.isnan(last.data[0, 1])
    np.testing.assert_allclose(last.times, [0.2, 0.22, 0.24])


def test_jsonl_from_stdin_and_format_detection(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"x": 1.5}\n{"x": 2.5}\n'))
    data, times, issues, chunks = collect(open_source("-"))
    assert len(chunks) == 2 and times is None and data.tolist() == [[1.5, 2.5]]  # live: one line per chunk
    assert detect_format("a.csv") == "csv" and detect_format("a.jsonl") == "jsonl" and detect_format("r.hea") == "wfdb"
    with pytest.raises(SourceError, match="--fmt"):
        detect_format("a.bin")
    with pytest.raises(SourceError):
        open_source("-", "wfdb")


def test_replay_paces_samples_with_a_speed_factor():
    fs = 100.0
    chunks = [Chunk(np.zeros((1, 50), np.float32), fs=fs) for _ in range(4)]  # 2 s of signal
    clock = {"t": 0.0}
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        clock["t"] += s

    out = list(replay(chunks, speed=4.0, max_chunk_s=0.25, clock=lambda: clock["t"], sleep=sleep))
    assert sum(c.data.shape[1] for c in out) == 200 and len(out) == 8
    assert clock["t"] == pytest.approx(2.0 / 4.0)  # the last sample is released at 2 s / 4
    # timestamps drive the pacing when present (a 1 s hole in the middle is waited out too)
    t = np.concatenate([np.arange(50), np.arange(150, 200)]) / fs
    clock["t"] = 0.0
    list(replay([Chunk(np.zeros((1, 100), np.float32), t)], fs=fs, speed=2.0, clock=lambda: clock["t"], sleep=sleep))
    assert clock["t"] == pytest.approx(2.0 / 2.0)


def test_replay_real_clock():
    t0 = time.monotonic()
    out = list(replay([Chunk(np.zeros((2, 100), np.float32), fs=200.0)], speed=5.0))  # 0.5 s at 5x -> 0.1 s
    dt = time.monotonic() - t0
    assert sum(c.data.shape[1] for c in out) == 100 and 0.09 <= dt < 0.6
    with pytest.raises(ValueError):
        list(replay([], speed=0))
