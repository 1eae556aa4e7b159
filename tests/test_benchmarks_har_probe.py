"""The posture probe's features: a unit gravity direction and per-axis std, whatever the gain."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import har_posture_probe as probe  # noqa: E402


def test_posture_features_are_the_gravity_direction_and_axis_std():
    rng = np.random.default_rng(0)
    w = np.stack([1.0 + 0.01 * rng.standard_normal(128), 0.2 + 0.03 * rng.standard_normal(128), np.zeros(128)]).astype(np.float32)
    f = probe.posture_features(w)
    assert f.shape == (6,)
    assert np.isclose(np.linalg.norm(f[:3]), 1.0) and f[0] > 0.95 and f[2] == 0.0
    assert np.allclose(f[3:], w.astype(np.float64).std(1))
    assert np.allclose(probe.posture_features(2 * w)[:3], f[:3])  # the direction ignores the gain


def test_rotation_onto_takes_one_direction_onto_the_other_and_keeps_lengths():
    a = np.array([0.9, 0.3, -0.1]); a /= np.linalg.norm(a)
    b = np.array([1.0, 0.05, 0.2]); b /= np.linalg.norm(b)
    R = probe.rotation_onto(a, b)  # edge_tslm.gait_frame.rotation_onto, which the probe uses
    assert np.allclose(R @ a, b) and np.allclose(R.T @ R, np.eye(3)) and np.isclose(np.linalg.det(R), 1.0)


def test_standing_calibration_rotates_each_wearer_by_its_first_standing_windows():
    from types import SimpleNamespace

    import eval_runtime

    tilt = probe.rotation_onto(np.array([1.0, 0.0, 0.0]), np.array([0.9, 0.1, np.sqrt(1 - 0.82)]))
    still = np.tile(np.array([[1.0], [0.0], [0.0]]), (1, 128)).astype(np.float32)
    samples = [SimpleNamespace(label=lab, group=g, signal=(tilt @ still if g == "b" else still).astype(np.float32))
               for g in ("a", "b") for lab in ("sitting", "standing", "standing", "standing")]
    rot, held = eval_runtime.standing_calibration(samples, 2, reference=np.array([1.0, 0.0, 0.0]))
    assert held == {1, 2, 5, 6}  # each wearer's first two standing windows: calibration, not scored
    assert set(rot) == set(range(8))
    for i, s in enumerate(samples):  # every window of both wearers now points along the reference
        assert np.allclose((rot[i] @ s.signal.astype(np.float64)).mean(1), [1.0, 0.0, 0.0], atol=1e-6)
