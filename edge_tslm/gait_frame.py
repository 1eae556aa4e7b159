"""The wearer's gait frame: turn a waist accelerometer so that its gravity while walking points one fixed way.

Why: sitting and standing differ by a few degrees of pelvis tilt, and how the phone sits on each wearer's belt
differs by as much (benchmarks/results/har_posture_probe.md: three test subjects near chance from one window). While
the wearer walks the trunk is upright, so the median gravity direction of the gait windows is that wearer's
"upright" as the device is worn. Rotating every window so that this direction becomes `GAIT_DIRECTION` (the HAPT
training subjects' mean) removes the mounting offset, and a still window's tilt then reads as posture.

No labels are needed: a window counts as gait when the magnitude of its acceleration varies (std above
`min_motion_g`), which no still posture does. The reference is the median direction of the first
`calibration_windows` gait windows (about 30 s of walking at the HAR window and hop), then fixed: the same rule
for training data (`edge_tslm.data.hapt.hapt_gait_windows`), evaluation and the streaming runtime
(`GaitCalibrator`). numpy only, so the torch-free runtime imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GAIT_DIRECTION", "GaitFrameConfig", "GaitCalibrator", "gait_directions", "gait_reference", "is_gait",
           "parse_reference", "rotation_onto", "to_gait_frame"]

# The mean, over the HAPT training subjects' 42 recordings, of each recording's gait reference (unit, in the
# phone's x, y, z). Recomputed by edge_tslm.data.hapt.training_gait_direction(); tests/test_gait_frame.py checks it.
GAIT_DIRECTION = np.array([0.98153492, -0.18356748, -0.05377891])


@dataclass(frozen=True)
class GaitFrameConfig:
    window: int = 128  # samples per window at the model rate (2.56 s at 50 Hz)
    hop: int = 64  # when scanning a whole recording
    min_motion_g: float = 0.1  # std of |a| (g) above which a window is gait; still postures stay near 0.01
    calibration_windows: int = 24  # gait windows whose median direction becomes the reference (~31 s of walking)

    def __post_init__(self) -> None:
        if self.window < 2 or self.hop < 1 or self.calibration_windows < 1 or not self.min_motion_g > 0:
            raise ValueError("GaitFrameConfig needs window >= 2, hop >= 1, calibration_windows >= 1 and min_motion_g > 0")


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if not n > 0 or not np.isfinite(n):
        raise ValueError(f"cannot take the direction of {v}: zero or not finite")
    return v / n


def is_gait(window: np.ndarray, cfg: GaitFrameConfig = GaitFrameConfig()) -> bool:
    """(3, L) window in g: does the magnitude of its acceleration vary as walking makes it? NaNs: never gait."""
    w = np.asarray(window, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != 3:
        raise ValueError(f"a gait window is 3 axes (x, y, z) by samples, got shape {w.shape}")
    if not np.isfinite(w).all():
        return False
    return float(np.linalg.norm(w, axis=0).std()) > cfg.min_motion_g


def gait_directions(acc: np.ndarray, cfg: GaitFrameConfig = GaitFrameConfig()) -> np.ndarray:
    """(3, N) recording in g -> (K, 3) unit gravity directions of its gait windows, in time order."""
    acc = np.asarray(acc, dtype=np.float64)
    out = [_unit(acc[:, k : k + cfg.window].mean(1)) for k in range(0, acc.shape[1] - cfg.window + 1, cfg.hop)
           if is_gait(acc[:, k : k + cfg.window], cfg)]
    return np.array(out).reshape(-1, 3)


def gait_reference(acc: np.ndarray, cfg: GaitFrameConfig = GaitFrameConfig()) -> np.ndarray | None:
    """(3,) unit reference from a recording's first `calibration_windows` gait windows; None with fewer."""
    d = gait_directions(acc, cfg)
    if len(d) < cfg.calibration_windows:
        return None
    return _unit(np.median(d[: cfg.calibration_windows], axis=0))


def rotation_onto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3, 3) the smallest rotation taking unit vector a onto unit vector b (Rodrigues; no turn about b)."""
    a, b = _unit(np.asarray(a, np.float64)), _unit(np.asarray(b, np.float64))
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-9:
        raise ValueError("the gait reference points against GAIT_DIRECTION (device upside down?); no unique rotation")
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def to_gait_frame(signal: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(3, L) window -> the same window turned so that `reference` points along GAIT_DIRECTION (float32)."""
    s = np.asarray(signal)
    if s.ndim != 2 or s.shape[0] != 3:
        raise ValueError(f"the gait frame turns 3-axis windows (x, y, z), got shape {s.shape}")
    return (rotation_onto(reference, GAIT_DIRECTION) @ s.astype(np.float64)).astype(np.float32)


def parse_reference(text: str) -> np.ndarray:
    """'x,y,z' (as a stream's summary prints it) -> (3,) unit vector, with the fix in the error."""
    try:
        v = np.array([float(p) for p in text.split(",")], dtype=np.float64)
    except ValueError:
        v = np.empty(0)
    if v.shape != (3,) or not np.isfinite(v).all() or not np.linalg.norm(v) > 0:
        raise ValueError(f"a gait reference is three numbers 'x,y,z' (the summary's gait_reference), got {text!r}")
    return _unit(v)


class GaitCalibrator:
    """A stream's gait frame: collects gait windows until it has `calibration_windows`, then fixes the reference.

    Until then `apply` returns windows unturned and `ready` is False (the runtime flags those windows), unless a
    reference was given (a previous stream's, or one scanned from the whole input file).
    """

    def __init__(self, cfg: GaitFrameConfig = GaitFrameConfig(), reference: np.ndarray | None = None) -> None:
        self.cfg = cfg
        self._dirs: list[np.ndarray] = []
        self.reference: np.ndarray | None = None
        self._turn: np.ndarray | None = None  # (3, 3), computed once when the reference is set
        self.source = "pending"
        if reference is not None:
            self._set(np.asarray(reference, np.float64), "given")

    def _set(self, reference: np.ndarray, source: str) -> None:
        self.reference = _unit(reference)
        self._turn = rotation_onto(self.reference, GAIT_DIRECTION)
        self.source = source

    @property
    def ready(self) -> bool:
        return self.reference is not None

    @property
    def seen(self) -> int:
        """Gait windows collected so far towards the reference."""
        return len(self._dirs)

    def observe(self, window: np.ndarray) -> None:
        """(3, L) window at the model rate: count it towards the reference if it is gait."""
        if self.ready or not is_gait(window, self.cfg):
            return
        self._dirs.append(_unit(np.asarray(window, np.float64).mean(1)))
        if len(self._dirs) >= self.cfg.calibration_windows:
            self._set(np.median(np.array(self._dirs), axis=0), "walked")

    def apply(self, window: np.ndarray) -> np.ndarray:
        """(3, L) window -> turned into the gait frame (float32), or unchanged while the reference is unknown."""
        if self._turn is None:
            return window
        return (self._turn @ np.asarray(window, dtype=np.float64)).astype(np.float32)
