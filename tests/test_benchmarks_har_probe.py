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
    R = probe.rotation_onto(a, b)
    assert np.allclose(R @ a, b) and np.allclose(R.T @ R, np.eye(3)) and np.isclose(np.linalg.det(R), 1.0)
