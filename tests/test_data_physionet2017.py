"""PhysioNet 2017 listing, deterministic stratified split, lazy reads, user folders, MIT-BIH excerpt."""

import numpy as np
import pytest

from edge_tslm.data import physionet2017 as p17
from edge_tslm.prompts import answer_text

_path = p17.default_path()
needs_data = pytest.mark.skipif(
    _path is None or not (_path / "REFERENCE.csv").is_file(),
    reason=f"PhysioNet 2017 not found: set ${p17.ENV_VAR} or place it at ../shared/data/physionet2017",
)


@needs_data
def test_split_is_deterministic_stratified_and_disjoint():
    recs = p17.list_records()
    splits = {s: p17.split_records(s) for s in p17.SPLITS}
    names = [set(r.name for r in v) for v in splits.values()]
    assert sum(len(n) for n in names) == len(recs) and len(set.union(*names)) == len(recs)
    again = p17.stratified_split(recs, seed=0)
    assert all(again[s] == splits[s] for s in p17.SPLITS)
    for code in p17.LABEL_NAMES:
        total = sum(r.code == code for r in recs)
        test = sum(r.code == code for r in splits["test"])
        assert abs(test - 0.2 * total) <= 1
    assert p17.stratified_split(recs, seed=1)["test"] != splits["test"]


@needs_data
def test_read_record_lazily():
    ds = p17.Physionet2017("val")
    s = ds[0]
    assert s.signal.ndim == 2 and s.signal.shape[0] == 1 and s.signal.dtype == np.float32
    assert s.meta.fs == 300.0 and s.meta.unit == "mV"
    assert s.label in p17.ECG_TASK.labels and s.group == ds.records[0].name
    assert s.rationale.endswith(answer_text(s.label))
    assert 0.05 < float(np.abs(s.signal).max()) < 20  # millivolts, not ADC units


def test_user_folder(tmp_path):
    wfdb = pytest.importorskip("wfdb")
    from edge_tslm.data.synthetic import synthetic_ecg

    rng = np.random.default_rng(0)
    rows = []
    for i, (code, rhythm) in enumerate([("N", "normal"), ("A", "atrial fibrillation"), ("N", "normal")] * 4):
        name = f"A{i + 1:05d}"
        x = synthetic_ecg(rhythm, 300.0, 10.0, rng)
        wfdb.wrsamp(name, fs=300, units=["mV"], sig_name=["ECG"], p_signal=x[:, None], fmt=["16"], adc_gain=[1000.0],
                    baseline=[0], write_dir=str(tmp_path))
        rows.append(f"{name},{code}")
    (tmp_path / "REFERENCE.csv").write_text("\n".join(rows) + "\n")
    recs = p17.list_records(tmp_path)
    assert len(recs) == 12 and recs[1].label == "atrial fibrillation"
    sig = recs[0].load()
    assert sig.shape == (1, 3000)
    splits = {s: p17.split_records(s, tmp_path) for s in p17.SPLITS}
    assert sum(len(v) for v in splits.values()) == 12
    with pytest.raises(FileNotFoundError, match="REFERENCE.csv"):
        p17.list_records(tmp_path / "missing")


def test_mitbih_208_excerpt():
    sig, meta = p17.load_mitbih_208_excerpt()
    assert sig.shape == (1, 108000) and sig.dtype == np.float32
    assert meta.fs == 360.0 and meta.unit == "mV"


@needs_data
def test_scipy_reader_matches_wfdb():
    """Without wfdb the challenge's .mat files are read with scipy: same millivolts, same rate."""
    wfdb = pytest.importorskip("wfdb")
    for rec in p17.list_records()[:3]:
        got, fs = p17._read_mat_record(_path / rec.name)
        want = wfdb.rdrecord(str(_path / rec.name))
        assert fs == want.fs == p17.FS
        np.testing.assert_array_equal(got, want.p_signal)


def test_scipy_reader_uses_header_gain_and_baseline(tmp_path):
    from scipy.io import savemat

    (tmp_path / "X1.hea").write_text("X1 1 300 4 05:05:15 1/05/2000\nX1.mat 16+24 200(10)/mV 16 0 -127 0 0 ECG\n")
    savemat(str(tmp_path / "X1.mat"), {"val": np.array([[10, 210, -190, 110]], dtype=np.int16)}, format="4")
    sig, fs = p17._read_mat_record(tmp_path / "X1")
    assert fs == 300.0 and sig.shape == (4, 1)
    np.testing.assert_allclose(sig[:, 0], [0.0, 1.0, -1.0, 0.5])


def test_scipy_reader_refuses_a_malformed_header(tmp_path):
    (tmp_path / "X2.hea").write_text("X2 1 300\n")
    with pytest.raises(ValueError, match="not a WFDB header"):
        p17._read_mat_record(tmp_path / "X2")
