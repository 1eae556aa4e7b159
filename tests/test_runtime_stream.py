"""The Streamer end to end on a test-double backend: events and schema, summaries, smoothing, faults, CLI.

Plus: nothing in edge_tslm.runtime imports torch, and one run with the torch backend on a tiny saved artifact.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from test_runtime_fakes import FakeBackend, ScriptedBackend, af_backend

from edge_tslm.runtime.events import validate_event
from edge_tslm.runtime.sources import Chunk, SourceIssue, read_csv
from edge_tslm.runtime.stream import RATIONALE_REQUEST, StreamConfig, Streamer

FS = 50.0


def run(backend, items, fs=None, **cfg):
    cfg.setdefault("check_events", True)
    events = list(Streamer(backend, StreamConfig(**cfg), fs=fs).run(items))
    for ev in events:
        assert validate_event(ev) == [], ev
    assert events[-1]["type"] == "summary"
    return events


def of(events, kind):
    return [e for e in events if e["type"] == kind]


def har_signal(stds_and_seconds, fs=FS, seed=0):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(0, s, (3, int(round(sec * fs)))) + np.array([[0.0], [0.0], [1.0]]) for s, sec in stds_and_seconds]
    return np.concatenate(parts, 1).astype(np.float32)


def chunks(x, size=37, times=None, fs=None):
    return [Chunk(x[:, a : a + size], None if times is None else times[a : a + size], fs) for a in range(0, x.shape[1], size)]


def test_har_windows_text_segments_and_summary():
    x = har_signal([(0.02, 20), (0.6, 20), (0.02, 10)])
    be = FakeBackend()
    ev = run(be, chunks(x), fs=FS, rationale_on="never")
    (start,) = of(ev, "start")
    assert start["window_s"] == pytest.approx(2.56) and start["hop_s"] == pytest.approx(1.28) and start["channels"] == ["x", "y", "z"]
    wins = of(ev, "window")
    assert len(wins) == (x.shape[1] - 128) // 64 + 1
    assert [w["index"] for w in wins] == list(range(len(wins)))
    assert wins[1]["start_s"] == pytest.approx(1.28) and wins[1]["end_s"] == pytest.approx(3.84)
    assert all(abs(sum(w["scores"].values()) - 1) < 1e-5 and w["answer"] == max(w["scores"], key=w["scores"].get) for w in wins)
    # the text: one description per axis with the raw window's scale, then the trained question
    from edge_tslm.data.hapt import HAR_TASK

    text = be.texts[0]
    assert text.count("<ts><endofchunk>") == 3 and "x: 2.56 s at 50 Hz, mean" in text and " g, std 0.0" in text
    assert text.rstrip().endswith(HAR_TASK.question) and set(be.seen_lengths) == {128}
    segs = of(ev, "segment")
    assert [s["label"] for s in segs] == ["sitting", "walking", "sitting"]
    assert segs[0]["start_s"] == 0 and segs[-1]["end_s"] == pytest.approx(wins[-1]["end_s"])
    assert all(a["end_s"] == pytest.approx(b["start_s"]) for a, b in zip(segs, segs[1:]))  # segments tile time
    assert abs(segs[1]["start_s"] - 20) <= 2.56 and abs(segs[2]["start_s"] - 40) <= 2.56
    assert sum(s["windows"] for s in segs) == len(wins)
    summ = ev[-1]
    assert summ["windows"] == summ["usable"] == len(wins) and summ["segments"] == 3 and summ["source_issues"] == 0
    assert summ["decisions"] == {k: sum(w["answer"] == k for w in wins) for k in ("sitting", "walking")}
    assert summ["latency_ms"]["p50"] <= summ["latency_ms"]["p95"] and summ["peak_rss_mb"] > 10
    # White noise switching to 30x its level is a noise burst to the quality check: only windows over a switch
    # carry the flag, and they are still classified.
    noisy = [w for w in wins if "noise" in w["quality"]["flags"]]
    assert summ["flags"] == {"noise": len(noisy)}
    assert all(w["answer"] and any(w["start_s"] < t < w["end_s"] for t in (20, 40)) for w in noisy)
    assert be.calls["encode"] == be.calls["classify"] == len(wins) and be.calls["generate"] == 0


def test_input_rate_is_resampled_to_the_model_rate_and_cropped():
    x = har_signal([(0.3, 12)], fs=100.0)
    be = FakeBackend(max_seconds=2.0)
    ev = run(be, chunks(x, 500), fs=100.0)
    assert of(ev, "start")[0]["window_samples"] == 256 and set(be.seen_lengths) == {100}  # 2.56 s at 50 Hz, cropped to 2 s
    assert "2 s at 50 Hz" in be.texts[0]


def test_custom_window_and_hop():
    x = har_signal([(0.3, 10)])
    ev = run(FakeBackend(), [Chunk(x)], fs=FS, window_s=5.0, hop_s=5.0)
    assert [(w["start_s"], w["end_s"]) for w in of(ev, "window")] == [(0.0, 5.0), (5.0, 10.0)]


def test_af_episodes_and_burden_with_min_windows():
    A, N = "atrial fibrillation", "normal"
    script = [N] * 3 + [A] * 4 + [N] + [A] * 2 + [N] * 2 + [A] * 3
    be = ScriptedBackend(script, fs=150.0)
    x = np.random.default_rng(1).normal(0, 0.3, (1, 170 * 300)).astype(np.float32)  # 15 windows of 30 s every 10 s
    ev = run(be, chunks(x, 3000, fs=300.0), task="afib", min_af_windows=3, rationale_on="af")
    wins = of(ev, "window")
    assert [w["answer"] for w in wins] == script and set(be.seen_lengths) == {4500}  # 300 Hz -> 150 Hz
    eps = of(ev, "episode")
    assert [(e["first_index"], e["last_index"], e["start_s"], e["end_s"]) for e in eps] == [(3, 6, 40.0, 80.0), (12, 14, 130.0, 170.0)]
    (burden,) = of(ev, "burden")
    assert burden["burden"] == pytest.approx(80 / 170) and burden["monitored_s"] == pytest.approx(170) and burden["episodes"] == 2
    assert ev[-1]["af_burden"] == pytest.approx(80 / 170) and ev[-1]["af_episodes"] == 2
    assert not of(ev, "segment")  # afib reports episodes, not segments
    assert [w["rationale"] is not None for w in wins] == [a == A for a in script]  # rationale only for AF windows
    assert be.calls["generate"] == script.count(A)


def test_smoothing_suppresses_single_window_flips():
    A, N = "atrial fibrillation", "normal"
    script = [N, N, A, N, N, A, A, A, A, N, A, A]
    x = np.zeros((1, (30 + 11 * 10) * 100), np.float32) + np.random.default_rng(0).normal(0, 1, (1, 14000)).astype(np.float32)
    raw = run(ScriptedBackend(script), [Chunk(x)], fs=100.0, task="afib", min_af_windows=2, segments=True)
    smooth = run(ScriptedBackend(script), [Chunk(x)], fs=100.0, task="afib", min_af_windows=2, smoothing=3, segments=True)
    assert len(of(raw, "segment")) == 6
    assert [w["smoothed"] for w in of(smooth, "window")] == [N, N, N, N, N, N, A, A, A, A, A, A]
    assert [(s["label"], s["windows"]) for s in of(smooth, "segment")] == [(N, 6), (A, 6)]
    assert [(e["first_index"], e["last_index"]) for e in of(smooth, "episode")] == [(6, 11)]
    assert [(e["first_index"], e["last_index"]) for e in of(raw, "episode")] == [(5, 8), (10, 11)]


@pytest.mark.parametrize(
    "mode,expected",
    [("label_change", [1, 0, 0, 1, 0, 1]), ("never", [0] * 6), ("always", [1] * 6), ("af", [0, 0, 0, 1, 1, 0])],
)
def test_rationale_on_demand(mode, expected):
    A, N = "atrial fibrillation", "normal"
    be = ScriptedBackend([N, N, N, A, A, N])
    x = np.random.default_rng(0).normal(0, 1, (1, 80 * 20)).astype(np.float32)
    ev = run(be, [Chunk(x)], fs=20.0, task="afib", rationale_on=mode)
    got = [int(w["rationale"] is not None) for w in of(ev, "window")]
    assert got == expected
    assert all(w["latency_ms"]["rationale"] == 0 for w in of(ev, "window") if w["rationale"] is None)


def test_request_rationale_for_the_next_window():
    be = FakeBackend()
    st = Streamer(be, StreamConfig(rationale_on="never"), fs=FS)
    x = har_signal([(0.3, 6)])
    first = [e for e in st.feed(x[:, :200]) if e["type"] == "window"]
    st.request_rationale()
    second = [e for e in st.feed(x[:, 200:]) if e["type"] == "window"]
    assert first[0]["rationale"] is None and second[0]["rationale"].endswith("Answer: walking")
    assert all(e["rationale"] is None for e in second[1:])
    assert st.finish()[-1]["type"] == "summary"
    assert RATIONALE_REQUEST == __import__("edge_tslm.train.examples", fromlist=["x"]).RATIONALE_REQUEST


def test_timestamp_gaps_short_filled_long_restart():
    x = har_signal([(0.3, 30)])
    t = np.arange(x.shape[1]) / FS
    t[500:] += 0.2  # 10 samples missing: filled, windows flagged 'gap'
    t[1000:] += 20.0  # 20 s missing: longer than a window -> windows restart after it
    keep = np.ones(x.shape[1], bool)
    keep[300] = False
    tt = t.copy()
    tt[301] = tt[299]  # a clock step back: dropped and reported
    ev = run(FakeBackend(), chunks(x[:, keep], 64, tt[keep]), rationale_on="never")
    gaps = [w for w in of(ev, "warning") if w["kind"] == "gap"]
    assert len(gaps) == 3  # the dropped sample leaves a 1-sample hole too
    wins = of(ev, "window")
    flagged = [w for w in wins if "gap" in w["quality"]["flags"]]
    assert flagged and all(w["answer"] is not None for w in flagged)
    after = [w for w in wins if w["start_s"] > t[999]]
    assert after and after[0]["start_s"] == pytest.approx(t[1000])  # restarted exactly at the first sample after the hole
    assert not [w for w in wins if w["start_s"] < t[1000] < w["end_s"] - 1e-9]  # no window spans the long gap
    assert ev[-1]["source_issue_kinds"] == {"bad_timestamp": 1} and of(ev, "source_issue")[0]["kind"] == "bad_timestamp"
    assert len(of(ev, "segment")) == 2  # the long gap closes the open segment


def test_fs_inferred_from_timestamps():
    x = har_signal([(0.3, 6)])
    t = 100.0 + np.arange(x.shape[1]) / FS
    ev = run(FakeBackend(), [Chunk(x[:, i : i + 1], t[i : i + 1]) for i in range(x.shape[1])])
    assert of(ev, "start")[0]["fs_in"] == pytest.approx(FS) and of(ev, "window")[0]["start_s"] == pytest.approx(100.0)


def test_missing_sampling_rate_is_an_error_event():
    ev = run(FakeBackend(), [Chunk(np.zeros((3, 100), np.float32))])
    assert [e["type"] for e in ev] == ["error", "summary"] and "--fs" in ev[0]["message"]


def test_nan_burst_flat_clipping_are_flagged_and_the_stream_carries_on():
    x = har_signal([(0.3, 40)])
    x[:, 300:305] = np.nan  # short burst: interpolated
    x[1, 800:900] = np.nan  # 2 s hole: windows over it are unusable
    x[:, 1300:1500] = 0.5  # flat (all channels, 4 s): dead windows are unusable
    x[0, 1700:1900] = np.clip(x[0, 1700:1900], -0.2, 0.2)  # clipping
    be = FakeBackend()
    ev = run(be, chunks(x), fs=FS, rationale_on="never")
    wins = of(ev, "window")
    flags = lambda w: set(w["quality"]["flags"])  # noqa: E731
    assert any({"nan", "interpolated"} <= flags(w) and w["answer"] for w in wins if w["start_s"] <= 6 <= w["end_s"])
    hole = [w for w in wins if w["start_s"] < 17 and w["end_s"] > 17]
    assert hole and all(w["answer"] is None and w["scores"] == {} and "unusable" in flags(w) for w in hole)
    assert any(w["quality"]["messages"] for w in hole)
    dead = [w for w in wins if w["start_s"] >= 26 and w["end_s"] <= 30]
    assert dead and all("flat" in flags(w) and w["answer"] is None for w in dead)
    assert any("clipping" in flags(w) for w in wins if 34 <= w["start_s"] <= 36)
    summ = ev[-1]
    n_unusable = sum(w["answer"] is None for w in wins)
    assert summ["windows"] == len(wins) and summ["usable"] == len(wins) - n_unusable == sum(summ["decisions"].values())
    assert summ["flags"]["unusable"] == n_unusable and summ["flags"]["flat"] >= len(dead)
    assert be.calls["classify"] == len(wins) - n_unusable  # unusable windows are never classified
    assert wins[-1]["answer"] is not None  # and the stream recovered


def test_sampling_rate_too_low_is_flagged_not_classified():
    x = har_signal([(0.3, 30)], fs=10.0)
    be = FakeBackend()
    ev = run(be, [Chunk(x)], fs=10.0)
    (warn,) = [w for w in of(ev, "warning") if w["kind"] == "fs_out_of_range"]
    assert "10 Hz" in warn["message"]
    wins = of(ev, "window")
    assert wins and all(w["answer"] is None and "fs_out_of_range" in w["quality"]["flags"] for w in wins)
    assert be.calls["classify"] == 0 and ev[-1]["usable"] == 0


def test_backend_error_is_one_windows_problem():
    be = FakeBackend(fail_on=1)
    ev = run(be, [Chunk(har_signal([(0.3, 8)]))], fs=FS)
    wins = of(ev, "window")
    assert wins[1]["answer"] is None and "backend_error" in wins[1]["quality"]["flags"]
    assert "simulated" in wins[1]["quality"]["messages"][0]
    assert all(w["answer"] for i, w in enumerate(wins) if i != 1)


def test_source_issues_and_channel_mismatch_carry_on():
    x = har_signal([(0.3, 6)])
    items = [Chunk(x[:, :100]), SourceIssue("bad_row", "row has 2 fields", 7), Chunk(np.zeros((2, 10), np.float32)), Chunk(x[:, 100:])]
    items += [SourceIssue("bad_row", "again", 8 + k) for k in range(5)]
    ev = run(FakeBackend(), items, fs=FS, max_issue_events=3)
    issues = of(ev, "source_issue")
    assert [i["kind"] for i in issues] == ["bad_row", "channel_mismatch", "bad_row", "bad_row"]
    assert "only counted" in issues[-1]["message"]
    assert ev[-1]["source_issues"] == 7 and ev[-1]["source_issue_kinds"] == {"bad_row": 6, "channel_mismatch": 1}
    assert len(of(ev, "window")) == (300 - 128) // 64 + 1


def test_broken_and_truncated_csv_through_the_stream(tmp_path):
    x = har_signal([(0.3, 8)])
    lines = ["x,y,z"] + [",".join(f"{v:.5f}" for v in col) for col in x.T]
    lines[50] = "oops"
    lines[120] = "0.1,zz,0.3"
    (tmp_path / "w.csv").write_text("\n".join(lines) + "\n0.1,0.")
    ev = run(FakeBackend(), read_csv(tmp_path / "w.csv"), fs=FS)
    assert [i["kind"] for i in of(ev, "source_issue")] == ["bad_row", "bad_number", "truncated"]
    wins = of(ev, "window")
    assert len(wins) == (x.shape[1] + 1 - 128) // 64 + 1 and all(w["answer"] for w in wins)
    assert any("nan" in w["quality"]["flags"] for w in wins)


def test_a_reader_crashing_mid_stream_ends_with_a_summary():
    def items():
        yield Chunk(har_signal([(0.3, 4)]))
        raise OSError("device unplugged")

    ev = run(FakeBackend(), items(), fs=FS)
    assert of(ev, "source_issue")[-1]["kind"] == "read_error" and len(of(ev, "window")) == 2


def test_wfdb_record_through_the_stream(tmp_path):
    wfdb = pytest.importorskip("wfdb")
    x = np.random.default_rng(0).normal(0, 0.5, (300 * 70, 1))
    wfdb.wrsamp("ecg", fs=300, units=["mV"], sig_name=["ECG"], p_signal=x, fmt=["16"], write_dir=str(tmp_path))
    from edge_tslm.runtime.sources import read_wfdb

    be = af_backend(threshold=0.1)
    ev = run(be, read_wfdb(tmp_path / "ecg"), task="afib")
    assert of(ev, "start")[0]["fs_in"] == 300 and len(of(ev, "window")) == 5 and set(be.seen_lengths) == {4500}
    assert "ECG: 30 s at 150 Hz" in be.texts[0]


def test_cli_stream_prints_valid_json_lines(tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from edge_tslm.cli.stream import stream
    from edge_tslm.runtime import backend as backend_mod

    x = har_signal([(0.02, 6), (0.6, 6)])
    t = np.arange(x.shape[1]) / FS
    lines = ["t,ax,ay,az"] + [f"{ti * 1000:.0f}," + ",".join(f"{v:.5f}" for v in col) for ti, col in zip(t, x.T)]
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    seen = {}

    def fake_load(path, kind="auto", **kw):
        seen.update(path=path, kind=kind, options=kw)
        return FakeBackend()

    monkeypatch.setattr(backend_mod, "load_backend", fake_load)
    app = typer.Typer()
    app.command()(stream)
    res = CliRunner().invoke(app, ["--model", str(tmp_path), "--input", str(tmp_path / "in.csv"), "--task", "har", "--rationale", "never",
                                   "--realtime", "--speed", "50", "--time-scale", "0.001", "--column", "ax", "--column", "ay", "--column", "az"])
    assert res.exit_code == 0, res.output
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert all(validate_event(e) == [] for e in events)
    assert events[0]["type"] == "start" and events[0]["fs_in"] == pytest.approx(FS) and events[-1]["type"] == "summary"
    assert [s["label"] for s in of(events, "segment")] == ["sitting", "walking"] and seen["kind"] == "auto"
    assert seen["options"]["label_scoring"] == "labels"  # the stream's default: logits only where the labels part ways
    ok = CliRunner().invoke(app, ["--model", str(tmp_path), "--input", str(tmp_path / "in.csv"), "--rationale", "never",
                                  "--label-scoring", "full", "--column", "ax", "--column", "ay", "--column", "az"])
    assert ok.exit_code == 0 and seen["options"]["label_scoring"] == "full", ok.output
    wrong = CliRunner().invoke(app, ["--model", str(tmp_path), "--input", str(tmp_path / "in.csv"), "--label-scoring", "softmax"])
    assert wrong.exit_code == 2 and "label scoring must be one of" in wrong.output
    bad = CliRunner().invoke(app, ["--model", str(tmp_path), "--input", str(tmp_path / "in.csv"), "--column", "nope"])
    assert bad.exit_code == 2 and "not in the header" in bad.output


def test_runtime_imports_no_torch():
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import edge_tslm.runtime, edge_tslm.runtime.stream, edge_tslm.runtime.sources, edge_tslm.runtime.quality\n"
        "import edge_tslm.runtime.events, edge_tslm.runtime.ring, edge_tslm.runtime.backend, edge_tslm.runtime.torch_backend\n"
        "import edge_tslm.cli.stream\n"
        "from edge_tslm.runtime.stream import task_question\n"
        "task_question('har'); task_question('ecg_rhythm'); task_question('ecg_rhythm_synthetic')\n"
        "from edge_tslm.runtime import load_backend, BackendUnavailable\n"
        "try:\n"
        "    load_backend(sys.argv[1], 'torch')\n"
        "except BackendUnavailable as e:\n"
        "    assert 'torch' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('torch backend loaded without torch')\n"
        "assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code, "."], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_torch_backend_on_a_tiny_saved_artifact(tmp_path):
    pytest.importorskip("torch")
    from conftest import build_tiny

    from edge_tslm.data.hapt import ACTIVITIES
    from edge_tslm.model.artifact import save_pretrained
    from edge_tslm.runtime.backend import load_backend

    model = build_tiny("flamingo", "tiny-llama", labels=ACTIVITIES, task="har", fs=FS)
    art = save_pretrained(model, tmp_path / "art")
    be = load_backend(art, "auto", device="cpu")
    assert be.name == "torch" and be.labels == ACTIVITIES and be.fs == FS
    x = har_signal([(0.3, 5.12)], fs=100.0)
    st = Streamer(be, StreamConfig(task="har", rationale_on="never", rationale_tokens=8, check_events=True), fs=100.0)
    events = st.feed(x[:, :300])
    st.request_rationale()
    events += st.feed(x[:, 300:]) + st.finish()
    wins = of(events, "window")
    assert len(wins) == 3 and all(w["answer"] in ACTIVITIES and abs(sum(w["scores"].values()) - 1) < 1e-5 for w in wins)
    assert [isinstance(w["rationale"], str) for w in wins] == [False, True, False]
    # the same window through the model directly gives the same scores as the streamed one
    import torch

    from edge_tslm.prompts import build_model_input
    from edge_tslm.runtime.stream import task_question
    from edge_tslm.signals import SignalMeta, resample, validate

    w0 = resample(x[:, :256], 100.0, FS)
    mi = build_model_input(validate(w0, SignalMeta(fs=FS, unit="g", channels=("x", "y", "z")), task_question("har")))
    with torch.no_grad():
        logp = be.model.classify(mi.text, list(mi.series), ACTIVITIES)
    z = np.array(list(logp.values()))
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose([wins[0]["scores"][k] for k in ACTIVITIES], p, atol=1e-5)


def test_peak_rss_is_this_process_not_its_parent():
    """A child started by a process holding a lot of memory reports its own peak (ru_maxrss would inherit it)."""
    import subprocess
    import sys

    import numpy as np

    big = np.ones(300 * 2**20 // 8)  # 300 MiB held by this (parent) process
    code = "from edge_tslm.runtime.events import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert big.sum() > 0 and float(out.strip()) < 250


class _RationaleBackend:
    """An ECG backend whose rationale states a fixed heart rate and beat count (as a model guessing them would)."""

    name = "rationale-fake"
    labels = ("atrial fibrillation", "normal")
    fs, max_seconds, min_length, task = 150.0, 0.0, 4, "ecg_rhythm"
    series_features, question_first, series_text, question = "", False, "full", ""

    def __init__(self, rate, beats):
        self.rate, self.beats = rate, beats

    def encode(self, series):
        from edge_tslm.runtime.backend import Encoded

        return Encoded(series)

    def classify(self, text, encoded, labels):
        return {labels[0]: 0.0, labels[1]: -1.0}

    def generate(self, text, encoded, max_new_tokens):
        return (f"The recording lasts 30 s and {self.beats} heartbeats were detected. The mean heart rate is {self.rate} bpm."
                "\nAnswer: atrial fibrillation")


def test_an_ecg_rationale_is_checked_against_the_measured_rhythm():
    """The window event carries the rationale's numbers beside the measured ones; a guessed heart rate is flagged."""
    from test_heartbeats import _synthetic_ecg

    x, beats = _synthetic_ecg(np.full(60, 0.75), 300.0)  # 80 bpm
    x = x[: 30 * 300][None].astype(np.float32)
    n = int(((beats >= 0) & (beats < 30 * 300)).sum())
    for rate, flagged in ((80.1, False), (98.0, True)):
        ev = run(_RationaleBackend(rate, n), chunks(x, 3000, fs=300.0), task="afib", rationale_on="af")
        (w,) = of(ev, "window")
        chk = w["rationale_check"]
        assert chk["stated"] == {"beats": n, "rate_bpm": rate}
        assert chk["measured"]["rate_bpm"] == pytest.approx(80.0, abs=0.5) and chk["measured"]["beats"] == pytest.approx(n, abs=1)
        assert chk["differs"] == (["rate_bpm"] if flagged else [])
        assert ("rationale_numbers_differ" in w["quality"]["flags"]) == flagged
        assert any("states 98 bpm, measured 80" in m for m in w["quality"]["messages"]) == flagged
        assert ev[-1]["flags"].get("rationale_numbers_differ", 0) == int(flagged)
