"""The logic in the streaming benchmarks and the demo (not their timings): the soak's fault injector and window
count, the agreement scorer and event checker, the decoder byte count and stage statistics, the demo's cache key
and compact build. Tiny fakes only; no model.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_runtime_fakes import FakeBackend

from edge_tslm.runtime.events import validate_event
from edge_tslm.runtime.sources import Chunk
from edge_tslm.runtime.stream import StreamConfig, Streamer

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


soak = _load("soak")
agree = _load("stream_agreement")
lat = _load("stream_latency")


def _signal(seconds, fs=50.0, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * fs)
    return (rng.normal(0, 0.3, (3, n)) + np.array([[0.0], [0.0], [1.0]])).astype(np.float32)


def _stream(x, t, fs, task="har", backend=None):
    be = backend or FakeBackend(labels=("walking", "sitting", "lying"))
    st = Streamer(be, StreamConfig(task=task, rationale_on="never", check_events=True), fs=fs)
    ev = []
    step = int(fs * 0.5)
    for a in range(0, x.shape[1], step):
        ev += st.feed(Chunk(x[:, a : a + step], t[a : a + step]))
    return ev + st.finish()


# ----------------------------------------------------------------------------- soak


def test_plan_faults_cycles_kinds_and_stays_inside():
    n, fs = int(600 * 50), 50.0
    faults = soak.plan_faults(n, fs, every_s=30.0)
    kinds = [f.kind for f in faults]
    assert kinds[: len(soak.FAULT_KINDS)] == list(soak.FAULT_KINDS)
    assert all(f.start + f.length < n for f in faults)
    ends = [f.start + f.length for f in faults]
    assert all(e < s.start for e, s in zip(ends, faults[1:]))  # no overlap


def test_inject_each_fault_kind():
    fs = 50.0
    x = _signal(60, fs)
    faults = [soak.Fault("gap_short", 500, 15), soak.Fault("nan_short", 1000, 10), soak.Fault("noise", 2000, 150)]
    y, t = soak.inject(x, fs, faults, seed=1)
    assert y.shape[1] == x.shape[1] - 15 and t.size == y.shape[1]
    assert np.all(np.diff(t) > 0) and np.isclose(t[500] - t[499], 16 / fs)  # the gap is a timestamp jump
    # NaN run in place (shifted by the 15 removed samples before it)
    nan_cols = np.flatnonzero(np.isnan(y).any(0))
    assert nan_cols.tolist() == list(range(1000 - 15, 1010 - 15)) and np.isnan(y[:, nan_cols]).all()
    # noise only inside its span, and strong
    d = y - np.delete(x, range(500, 515), axis=1)
    d[:, nan_cols] = 0
    inside = np.zeros(y.shape[1], bool)
    inside[2000 - 15 : 2150 - 15] = True
    assert np.abs(d[:, ~inside]).max() == 0 and d[:, inside].std() > 0.5
    with pytest.raises(KeyError):
        soak.inject(x, fs, [soak.Fault("melt", 0, 3)])


def test_expected_windows_matches_the_stream_and_flags_by_fault():
    fs = 50.0
    x = _signal(400, fs)
    faults = soak.plan_faults(x.shape[1], fs, every_s=40.0)
    assert {f.kind for f in faults} == set(soak.FAULT_KINDS)
    y, t = soak.inject(x, fs, faults)
    events = _stream(y, t, fs)
    for e in events:
        assert validate_event(e) == []
    wins = [e for e in events if e["type"] == "window"]
    assert len(wins) == soak.expected_windows(x.shape[1], fs, faults, 2.56, 1.28)
    # without faults: the plain formula
    assert soak.expected_windows(1000, fs, [], 2.56, 1.28) == (1000 - 128) // 64 + 1
    by = soak.flags_by_fault(wins, faults, fs)
    assert by["gap_short"]["flags"].get("gap") and by["gap_short"]["unusable"] == 0
    assert by["nan_short"]["flags"].get("nan") and by["nan_short"]["flags"].get("interpolated")
    assert by["nan_long"]["unusable"] >= 1 and by["gap_long"]["unusable"] >= 1
    assert "gap_restart" not in by  # no window covers the removed stretch
    assert by["none"]["flagged"] == 0
    assert sum(v["windows"] for v in by.values()) == len(wins)
    det = soak.detected_by_fault(wins, faults, fs)
    assert {k: v["faults"] for k, v in det.items()} == dict(Counter(f.kind for f in faults))
    assert all(det[k]["detected"] == det[k]["faults"] for k in ("gap_short", "gap_long", "nan_short", "nan_long"))
    assert det["gap_restart"]["overlapped"] == det["gap_restart"]["detected"] == 0  # no window over it


def test_noise_bursts_on_a_smooth_signal_are_detected():
    # On white noise a 3x burst is only 3x the HF energy around it (below the flag's ratio); on a walking-like
    # signal it is far above, and every burst is flagged by a window overlapping it.
    fs = 50.0
    t = np.arange(int(200 * fs)) / fs
    rng = np.random.default_rng(0)
    x = np.stack([0.3 * np.sin(2 * np.pi * 1.9 * t), 0.2 * np.cos(2 * np.pi * 1.9 * t), 1 + 0.4 * np.sin(4 * np.pi * 1.9 * t)])
    x = (x + rng.normal(0, 0.003, x.shape)).astype(np.float32)
    faults = soak.plan_faults(x.shape[1], fs, every_s=20.0, kinds=("noise",))
    y, tt = soak.inject(x, fs, faults)
    wins = [e for e in _stream(y, tt, fs) if e["type"] == "window"]
    det = soak.detected_by_fault(wins, faults, fs)
    assert det == {"noise": {"faults": len(faults), "overlapped": len(faults), "detected": len(faults)}}
    by = soak.flags_by_fault(wins, faults, fs)
    assert by["noise"]["flags"]["noise"] >= len(faults) and by["noise"]["unusable"] == 0 and by["none"]["flagged"] == 0


def test_expected_windows_long_gap_restarts():
    fs = 10.0
    # 100 samples, a 50-sample gap (5 s > a 2.56 s window) at 40: stretches of 40 and 10 samples
    faults = [soak.Fault("gap_restart", 40, 50)]
    L, H = 26, 13  # 2.56 s, 1.28 s at 10 Hz
    assert soak.expected_windows(100, fs, faults, 2.56, 1.28) == (40 - L) // H + 1
    # a short gap keeps one stretch
    assert soak.expected_windows(100, fs, [soak.Fault("gap_short", 40, 3)], 2.56, 1.28) == (100 - L) // H + 1


def test_rss_trend():
    flat = [(t, 100.0 + (t % 7) * 0.01) for t in range(0, 3600, 60)]
    r = soak.rss_trend(flat)
    assert abs(r["slope_mb_per_hour"]) < 0.1 and r["start_mb"] == 100.0
    leak = [(t, 100.0 + t / 3600 * 50) for t in range(0, 3600, 60)]
    assert soak.rss_trend(leak)["slope_mb_per_hour"] == pytest.approx(50, rel=1e-3)
    assert soak.rss_trend([(0, 1.0)]) == {"n": 1}


def test_cheap_backend_is_a_backend():
    from edge_tslm.runtime.backend import Backend

    be = soak.CheapBackend("har")
    assert isinstance(be, Backend) and len(be.labels) == 6
    enc = be.encode([np.ones(128, np.float32)] * 3)
    assert set(be.classify("", enc, be.labels)) == set(be.labels)


# ----------------------------------------------------------------------------- agreement


def test_window_truth_pure_and_majority():
    lab = np.array(["walking"] * 100 + [""] * 20 + ["sitting"] * 100, dtype=object).astype(str)
    fs = 10.0
    assert agree.window_truth(0.0, 5.0, lab, fs, "pure") == "walking"
    assert agree.window_truth(9.0, 11.0, lab, fs, "pure") is None  # touches the transition
    assert agree.window_truth(8.0, 11.0, lab, fs, "majority") == "walking"  # 20 of 30
    assert agree.window_truth(9.5, 12.5, lab, fs, "majority") is None  # 5 walking, 20 none, 5 sitting
    assert agree.window_truth(11.0, 16.0, lab, fs, "majority") == "sitting"
    assert agree.window_truth(21.0, 23.0, lab, fs, "pure") is None  # past the labels
    with pytest.raises(ValueError):
        agree.window_truth(0, 1, lab, fs, "mode")


def test_score_macro_f1_and_unanswered():
    labels = ("a", "b")
    s = agree.score([("a", "a"), ("a", "b"), ("b", "b"), ("b", None), (None, "a")], labels)
    assert s["n"] == 4 and s["accuracy"] == 0.5
    # F1 a = 2*1/(2*1+0+1) = 2/3; F1 b = 2*1/(2+1+1) = 0.5
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 2, abs=1e-4)
    assert s["answered"]["<none>"] == 1
    assert s["macro_f1_present_classes"] == s["macro_f1"] and s["present_classes"] == ["a", "b"]
    assert agree.score([("a", "a")], ("a", "b", "c"))["macro_f1_present_classes"] == 1.0
    assert agree.score([], labels) == {"n": 0}


def test_a_missing_har_benchmark_file_is_refused_before_streaming(tmp_path, capsys):
    with pytest.raises(SystemExit):
        agree.main(["--har", str(tmp_path / "artifact"), "--har-benchmark", str(tmp_path / "nope.json")])
    assert "--har-benchmark" in capsys.readouterr().err


def test_check_stream_accepts_a_real_stream_and_finds_broken_ones():
    x = _signal(30)
    t = np.arange(x.shape[1]) / 50.0
    events = _stream(x, t, 50.0)
    assert agree.check_stream(events) == []
    assert any("last event" in e for e in agree.check_stream(events[:-1]))
    bad = [dict(e) for e in events]
    wins = [i for i, e in enumerate(bad) if e["type"] == "window"]
    bad[wins[1]]["index"] = 7
    assert any("indices" in e for e in agree.check_stream(bad))
    bad = [dict(e) for e in events]
    bad[wins[0]] = {k: v for k, v in bad[wins[0]].items() if k != "quality"}
    assert any("quality" in e for e in agree.check_stream(bad))


# ----------------------------------------------------------------------------- latency


def test_decoder_weight_bytes_counts_gathered_tables_by_row(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    emb = numpy_helper.from_array(np.zeros((100, 8), np.float32), "emb")  # Gather only: one row counts
    w = numpy_helper.from_array(np.zeros((8, 8), np.float32), "w")  # MatMul: all of it
    head = numpy_helper.from_array(np.zeros((8, 100), np.float32), "head")
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["h"]),
        helper.make_node("MatMul", ["h", "w"], ["h2"]),
        helper.make_node("MatMul", ["h2", "head"], ["logits"]),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 1])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 100])], [emb, w, head])
    onnx.save(helper.make_model(g), str(tmp_path / "decoder.onnx"))
    r = lat.decoder_weight_bytes(tmp_path)
    assert r["bytes_per_token"] == 8 * 4 + 64 * 4 + 800 * 4
    assert r["gather_only_tables_bytes"] == 800 * 4
    # a table also read by a MatMul (tied embeddings) counts in full
    nodes[2] = helper.make_node("MatMul", ["h2", "embT"], ["logits"])
    nodes.insert(2, helper.make_node("Transpose", ["emb"], ["embT"]))
    g = helper.make_graph(nodes, "g", g.input, g.output, [emb, w])
    onnx.save(helper.make_model(g), str(tmp_path / "decoder.onnx"))
    assert lat.decoder_weight_bytes(tmp_path)["bytes_per_token"] == 800 * 4 + 64 * 4
    assert lat.decoder_weight_bytes(tmp_path / "nothing") is None


def test_decoder_weight_bytes_counts_quantized_rows_and_rotary_tables_by_row(tmp_path):
    """A tied embedding's own row copy (GatherBlockQuantized) and the rotary cos/sin tables: one row each; the
    scales that the lm_head's MatMulNBits also reads count in full."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rows = numpy_helper.from_array(np.zeros((100, 4), np.uint8), "rows")  # only GatherBlockQuantized: 4 bytes
    scales = numpy_helper.from_array(np.zeros((100, 1), np.float32), "scales")  # also the MatMulNBits': 400 bytes
    packed = numpy_helper.from_array(np.zeros((100, 1, 4), np.uint8), "packed")  # MatMulNBits weight: 400 bytes
    cos = numpy_helper.from_array(np.zeros((64, 2), np.float32), "cos")  # RotaryEmbedding tables: 8 bytes each
    sin = numpy_helper.from_array(np.zeros((64, 2), np.float32), "sin")
    ms = "com.microsoft"
    nodes = [
        helper.make_node("GatherBlockQuantized", ["rows", "ids", "scales"], ["h"], domain=ms, block_size=32),
        helper.make_node("RotaryEmbedding", ["h", "cos", "sin", "ids"], ["r"], num_heads=1),
        helper.make_node("MatMulNBits", ["r", "packed", "scales"], ["logits"], domain=ms, K=8, N=100, bits=4, block_size=32),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 1])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 100])], [rows, scales, packed, cos, sin])
    onnx.save(helper.make_model(g), str(tmp_path / "decoder.onnx"))
    r = lat.decoder_weight_bytes(tmp_path)
    assert r["bytes_per_token"] == 4 + 400 + 400 + 8 + 8
    assert r["gather_only_tables_bytes"] == 400 + 512 + 512


def test_stage_stats_reads_the_stream_fields():
    def win(i, pre, enc, cls, stages, rationale=None):
        return {"type": "window", "index": i, "answer": "x", "rationale": rationale,
                "latency_ms": {"prepare": pre, "encode": enc, "classify": cls, "rationale": 0.0, "total": pre + enc + cls}, "stages_ms": stages}

    ev = [win(0, 1.0, 10.0, 20.0, {"prefill_ms": 12.0, "decode_ms": 8.0}),
          win(1, 1.0, 12.0, 30.0, {"prefill_ms": 18.0, "decode_ms": 12.0, "rationale_decode_ms": 100.0, "rationale_new_tokens": 10.0,
                                   "rationale_prefill_ms": 20.0}, rationale="why"),
          {"type": "window", "index": 2, "answer": None, "rationale": None, "latency_ms": {"prepare": 1, "encode": 0, "classify": 0, "rationale": 0, "total": 1}}]
    s = lat.stage_stats(ev)
    assert s["decision"]["n"] == 2 and s["decision"]["p50"] == pytest.approx((31 + 43) / 2)
    assert s["prefill"]["p50"] == 15.0 and s["label_scoring"]["p50"] == 10.0
    assert s["rationale"]["ms_per_token"] == 10.0 and s["rationale"]["tokens"] == 10


def test_stream_events_carry_backend_stage_timings():
    class Timed(FakeBackend):
        def classify(self, text, encoded, labels):
            out = super().classify(text, encoded, labels)
            self.last_timings = {"prefill_ms": 3.0, "decode_ms": 2.0, "note": "not a number"}
            return out

        def generate(self, text, encoded, max_new_tokens):
            out = super().generate(text, encoded, max_new_tokens)
            self.last_timings = {"prefill_ms": 4.0, "decode_ms": 9.0, "new_tokens": 3.0}
            return out

    x = _signal(10)
    st = Streamer(Timed(), StreamConfig(task="har", rationale_on="never", check_events=True), fs=50.0)
    st.request_rationale()
    ev = st.feed(x) + st.finish()
    wins = [e for e in ev if e["type"] == "window"]
    assert wins[0]["stages_ms"] == {"prefill_ms": 3.0, "decode_ms": 2.0, "rationale_prefill_ms": 4.0, "rationale_decode_ms": 9.0,
                                    "rationale_new_tokens": 3.0}
    assert wins[1]["stages_ms"] == {"prefill_ms": 3.0, "decode_ms": 2.0}
    assert all(validate_event(e) == [] for e in ev)
    bad = dict(wins[1], stages_ms={"prefill_ms": "slow"})
    assert validate_event(bad)


# ----------------------------------------------------------------------------- demo


def _adapter(tmp_path, payload=b"weights"):
    d = tmp_path / "flamingo-har"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text('{"task": "har"}')
    (d / "adapter.safetensors").write_bytes(payload)
    (d / "manifest.json").write_text('{"backbone": {"sha256": "abc"}}')
    return d


def test_compact_key_follows_the_adapter_and_options(tmp_path):
    from edge_tslm.cli.demo import compact_key

    d = _adapter(tmp_path)
    k = compact_key(d, {"int8": True})
    assert k.startswith("flamingo-har-") and len(k) == len("flamingo-har-") + 16
    assert compact_key(d, {"int8": True}) == k
    assert compact_key(d, {"int8": True, "weight_bits": 4}) != k
    (d / "adapter.safetensors").write_bytes(b"retrained")
    assert compact_key(d, {"int8": True}) != k


def test_compact_options_follow_the_export_signature():
    from edge_tslm.cli.demo import compact_options

    def old(model, target, out, *, int8=False, decoder=False, source=None):
        ...

    def new(model, target, out, *, int8=False, decoder=False, weight_bits=None, source=None):
        ...

    assert compact_options(old) == {"int8": True, "decoder": True}
    assert compact_options(new) == {"int8": True, "decoder": True, "weight_bits": 4}
    from edge_tslm.export import export_artifact

    assert compact_options(export_artifact) == {"int8": True, "decoder": True, "weight_bits": 4,
                                                "keep_scopes": ("xattn", "lm_head"), "accuracy_level": 4}


def _fake_compact(out) -> dict:
    """What a passed export leaves: the three graphs, config, tokenizer and a manifest (contents irrelevant here)."""
    out = Path(out)
    (out / "tokenizer").mkdir(parents=True)
    for f in ("encoder.onnx", "cross.onnx", "decoder.onnx", "config.json", "tokenizer/tokenizer.json"):
        (out / f).write_text("x")
    m = {"parity_passed": True}
    (out / "manifest.json").write_text(json.dumps(m))
    return m


def test_ensure_compact_builds_once_and_cleans_up_failures(tmp_path):
    from edge_tslm.cli.demo import ensure_compact, is_complete

    d = _adapter(tmp_path)
    calls = []

    def export(model, target, out, *, int8=False, decoder=False, weight_bits=None, source=None):
        calls.append((model, target, int8, decoder, weight_bits, Path(source)))
        return _fake_compact(out)

    said = []
    root = tmp_path / "cache"
    p = ensure_compact(d, say=said.append, root=root, export_fn=export, load_fn=lambda path: "model")
    assert is_complete(p) and p.parent == root and calls == [("model", "onnx", True, True, 4, d)]
    assert any("building" in s for s in said) and any(s.startswith("built") for s in said)
    assert ensure_compact(d, say=said.append, root=root, export_fn=export, load_fn=lambda path: "model") == p
    assert len(calls) == 1  # cached
    # a failing export leaves nothing behind and raises
    d2 = _adapter(tmp_path / "other", payload=b"w2")

    def broken(model, target, out, *, int8=False, decoder=False, weight_bits=None, source=None):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "encoder.onnx").write_text("half")
        return {"parity_passed": False}

    with pytest.raises(RuntimeError, match="parity"):
        ensure_compact(d2, say=said.append, root=root, export_fn=broken, load_fn=lambda path: "model")
    marker = [x for x in root.iterdir() if x.name.endswith(".failed")]
    assert sorted(x.name for x in root.iterdir() if not x.name.endswith(".failed")) == [p.name] and len(marker) == 1
    # the failure is remembered: no second build, until rebuild=True
    with pytest.raises(RuntimeError, match="earlier build"):
        ensure_compact(d2, say=said.append, root=root, export_fn=export, load_fn=lambda path: "model")
    assert len(calls) == 1
    q = ensure_compact(d2, say=said.append, root=root, export_fn=export, load_fn=lambda path: "model", rebuild=True)
    assert is_complete(q) and len(calls) == 2 and not marker[0].exists()


def test_ensure_compact_falls_back_to_the_fp32_encoder(tmp_path):
    """An adapter whose int8 encoder misses parity (the ECG-stem models) still gets its compact artifact, with the
    fp32 encoder; any other parity failure is not retried."""
    from edge_tslm.cli.demo import ensure_compact, is_complete
    from edge_tslm.export.onnx import ParityError

    calls = []

    def export(model, target, out, *, int8=False, decoder=False, weight_bits=None, source=None, fail="encoder"):
        calls.append(int8)
        if int8:
            raise ParityError(f"{out}/encoder.onnx: {fail} parity failed: {{'max_abs_diff': 0.65}}", component=fail)
        return _fake_compact(out)

    said = []
    p = ensure_compact(_adapter(tmp_path), say=said.append, root=tmp_path / "cache", export_fn=export, load_fn=lambda path: "m")
    assert is_complete(p) and calls == [True, False]
    assert any("fp32 encoder" in s for s in said)
    calls.clear()
    with pytest.raises(ParityError, match="decoder parity"):
        ensure_compact(_adapter(tmp_path / "b", payload=b"w2"), say=said.append, root=tmp_path / "cache",
                       export_fn=lambda *a, **k: export(*a, **k, fail="decoder"), load_fn=lambda path: "m")
    assert calls == [True]


def test_demo_window_truth():
    from edge_tslm.cli.demo import window_truth

    names = ["walking"] * 60 + [None] * 100 + ["lying"] * 40
    assert window_truth(names, 0.0, 1.0, 50.0) == "walking"
    assert window_truth(names, 1.0, 3.0, 50.0) == "transition"
    assert window_truth(names, 10.0, 11.0, 50.0) == ""


def test_demo_falls_back_to_torch_with_a_message(monkeypatch, tmp_path):
    import io

    from rich.console import Console

    import edge_tslm.cli.demo as demo
    import edge_tslm.runtime.backend as rb

    loaded = []

    def fake_load(path, kind="auto", **kw):
        loaded.append((Path(path), kind))
        if kind == "onnx":
            raise rb.BackendUnavailable("no graphs")
        return FakeBackend()

    def no_export(*a, **k):
        raise RuntimeError("export impossible here")

    monkeypatch.setattr(rb, "load_backend", fake_load)
    monkeypatch.setattr(demo, "ensure_compact", no_export)
    out = io.StringIO()
    con = Console(file=out, width=200)
    be, desc = demo._load(tmp_path, None, "auto", con, 0)
    assert isinstance(be, FakeBackend) and desc.startswith("torch") and loaded == [(tmp_path, "torch")]
    assert "export impossible here" in out.getvalue() and "torch backend" in out.getvalue()
    # an explicit artifact that cannot load: same fallback; --backend onnx: the error instead
    be, desc = demo._load(tmp_path, tmp_path / "art", "auto", con, 0)
    assert desc.startswith("torch") and loaded[-2] == (tmp_path / "art", "onnx")
    with pytest.raises(rb.BackendUnavailable):
        demo._load(tmp_path, tmp_path / "art", "onnx", con, 0)


def test_demo_stream_table_and_summary():
    import io

    from rich.console import Console

    import edge_tslm.cli.demo as demo

    out = io.StringIO()
    con = Console(file=out, width=200)
    x = _signal(12)
    names = ["walking"] * x.shape[1]
    events = demo._stream(con, "t", FakeBackend(), "har", x, 50.0, truth=lambda s, e: demo.window_truth(names, s, e, 50.0), t_offset=100.0)
    text = out.getvalue()
    assert events[-1]["type"] == "summary" and "rationale" in text and "summary" in text and "100.0" in text
    assert all(validate_event(e) == [] for e in events)
    # a gait-frame model: the demo's scanned reference reaches the stream, which turns every window from the start
    ref = (0.9, -0.3, -0.1)
    events = demo._stream(con, "t", FakeBackend(task="har_gait"), "har", x, 50.0, gait_reference=ref)
    assert events[0]["gait_frame"]["reference"] == pytest.approx(list(np.asarray(ref) / np.linalg.norm(ref)), abs=1e-6)
    assert not any("gait_frame_pending" in e["quality"]["flags"] for e in events if e["type"] == "window")


def test_write_results_writes_json_and_markdown_beside_it(tmp_path):
    from edge_tslm.results import write_results

    md = write_results(tmp_path / "sub" / "x.json", {"a": 1}, lambda r: f"# a = {r['a']}\n")
    assert json.loads((tmp_path / "sub" / "x.json").read_text()) == {"a": 1}
    assert (tmp_path / "sub" / "x.md").read_text() == md == "# a = 1\n"


# ----------------------------------------------------------------------------- fault_text


def test_fault_text_streams_each_faulted_window_once_and_only_the_mask_setting_differs():
    """benchmarks/fault_text.py's window: one per record, the fault flagged, and exclude_untrusted changing
    nothing but the measured text (a regular 75 bpm rhythm keeps 'RR jumps 0 %' only when the hole is left out)."""
    ft = _load("fault_text")
    fs, n = 150.0, 30
    t = np.arange(int(n * fs)) / fs
    x = (np.exp(-0.5 * (((t + 0.3) % 0.8 - 0.4) / 0.01) ** 2)).astype(np.float32)[None]  # 75 bpm spikes
    n_nan = int(round(soak.FAULT_KINDS["nan_short"][0] * fs))
    y, ty = soak.inject(x, fs, [soak.Fault("nan_short", 1455 - n_nan // 2, n_nan)])  # over the beat at 9.7 s
    texts = {}
    for exclude in (True, False):
        be = FakeBackend(labels=("atrial fibrillation", "normal"), fs=fs, task="ecg_rhythm", series_features="rr")
        w = ft.stream_once(be, y, ty, fs, float(n), exclude)
        assert {"nan", "interpolated"} <= set(w["quality"]["flags"]) and w["answer"] is not None
        (texts[exclude],) = be.texts
    assert "RR jumps 0 %" in texts[True] and "RR jumps 0 %" not in texts[False]
    assert texts[True].split("rate")[0] == texts[False].split("rate")[0]


def test_rationale_numbers_reads_what_the_rationale_template_states():
    """benchmarks/rationale_numbers.py parses the numbers edge_tslm.data.rationale writes, and only those it finds."""
    from edge_tslm.heartbeats import rhythm_features
    from edge_tslm.train.tasks import get_task

    rn = _load("rationale_numbers")
    s = get_task("ecg_rhythm").load("test", None)[0]
    got = rn.stated(s.rationale)
    assert set(got) == set(rn.NUMBERS)
    f = rhythm_features(s.signal[0], s.meta.fs)
    assert got["beats"] == f.n_beats and abs(got["rate_bpm"] - f.heart_rate_bpm) < 0.1
    assert rn.stated("The recording lasts 30 s. The mean heart rate is 7") == {}


def test_copy_bandwidth_copies_with_as_many_threads_as_asked():
    one, two = lat.copy_bandwidth(mib=8, repeats=1), lat.copy_bandwidth(mib=8, repeats=1, threads=2)
    assert one["threads"] == 1 and two["threads"] == 2
    assert one["read_plus_write_gb_s"] > 0 and two["read_plus_write_gb_s"] > 0
    assert "cpu_time_gb_s" in one and "cpu_time_gb_s" not in two  # thread CPU time means nothing across threads
    with pytest.raises(ValueError, match="at least one copying thread"):
        lat.copy_bandwidth(mib=1, repeats=1, threads=0)
