"""The rhythm vector (encoder.rhythm_vector): its numbers are the ECG's true RR statistics, do not depend on the ECG's
gain and offset, skip a filled gap, mark undefined numbers, and reach the encoder's patches through a zero-initialised
embedding that trains."""

import numpy as np
import pytest

from edge_tslm import baseline
from edge_tslm.heartbeats import RR_STAT_NAMES, rr_statistics
from edge_tslm.rhythm_vector import RHYTHM_VECTOR_NAMES, RHYTHM_VECTOR_SCALES, rhythm_vector, series_rhythm_vectors
from test_heartbeats import _synthetic_ecg

FS = 150.0
IDX = {n: i for i, n in enumerate(RHYTHM_VECTOR_NAMES)}


def test_vector_holds_the_true_rr_statistics():
    rr = np.random.default_rng(3).uniform(0.5, 1.1, size=40)
    x, beats = _synthetic_ecg(rr, FS)
    v = rhythm_vector(x, FS)
    assert v.shape == (len(RHYTHM_VECTOR_NAMES),) == (len(RHYTHM_VECTOR_SCALES),) and v.dtype == np.float32
    assert v[IDX["n_beats"]] == beats.size
    true_rr = np.diff(beats) / FS
    assert v[IDX["rr_mean"]] == pytest.approx(true_rr.mean(), abs=2 / FS)
    assert v[IDX["rr_min"]] == pytest.approx(true_rr.min(), abs=2 / FS)
    assert v[IDX["rr_max"]] == pytest.approx(true_rr.max(), abs=2 / FS)
    assert v[IDX["hr_mean"]] == pytest.approx((60 / true_rr).mean(), rel=0.02)
    assert v[IDX["beats_in_window"]] >= beats.size - 2  # beats whose whole 0.7 s window lies inside the record
    assert 0.9 < v[IDX["beat_match"]] <= 1.0  # every synthetic beat has the same shape


def test_vector_ignores_gain_and_offset():
    x, _ = _synthetic_ecg(np.random.default_rng(4).uniform(0.4, 1.0, 50), FS)
    np.testing.assert_allclose(rhythm_vector(x, FS), rhythm_vector(3.7 * x - 120.0, FS), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("x", [np.zeros(4500), np.full(4500, np.nan), np.zeros(10)], ids=["flat", "nan", "short"])
def test_no_beats_leaves_the_rhythm_numbers_undefined(x):
    v = rhythm_vector(x, FS)
    assert v[IDX["n_beats"]] == 0 and np.isnan(v[IDX["rr_mean"]]) and np.isnan(v[IDX["beat_match"]])


def test_a_filled_gap_is_not_an_rr_interval():
    x, beats = _synthetic_ecg(np.full(40, 0.8), FS)
    a, b = 1500, 1800
    assert ((beats >= a) & (beats < b)).sum() >= 2
    holed = x.copy()
    holed[a:b] = np.linspace(holed[a - 1], holed[b], b - a)
    assert rhythm_vector(holed, FS)[IDX["rr_max"]] > 1.5  # without the mask the hole reads as a pause
    exclude = np.zeros(x.size, dtype=bool)
    exclude[a:b] = True
    v = rhythm_vector(holed, FS, exclude)
    assert v[IDX["rr_max"]] == pytest.approx(0.8, abs=2 / FS) and v[IDX["rr_cv"]] < 0.01
    with pytest.raises(ValueError, match="one per sample"):
        rhythm_vector(holed, FS, exclude[:-1])
    with pytest.raises(ValueError, match="positive sampling rate"):
        rhythm_vector(holed, 0.0)
    with pytest.raises(ValueError, match="one lead"):
        rhythm_vector(np.stack([holed, holed]), FS)  # two leads are not one long lead


def test_series_vectors_measure_only_the_real_samples():
    x, _ = _synthetic_ecg(np.random.default_rng(5).uniform(0.5, 1.0, 30), FS)
    n = x.size
    padded = np.zeros((2, n + 600), np.float32)
    mask = np.zeros((2, n + 600), bool)
    padded[0, :n], mask[0, :n] = x, True
    padded[1, : n // 2], mask[1, : n // 2] = x[: n // 2], True
    got = series_rhythm_vectors(padded, mask, FS)
    np.testing.assert_allclose(got[0], rhythm_vector(x.astype(np.float32), FS), rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(got[1], rhythm_vector(x[: n // 2].astype(np.float32), FS), rtol=1e-5, equal_nan=True)
    exclude = np.zeros_like(mask)
    exclude[0, 300:600] = True
    flagged = series_rhythm_vectors(padded, mask, FS, exclude)
    np.testing.assert_allclose(flagged[0], rhythm_vector(x.astype(np.float32), FS, exclude[0, :n]), rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(flagged[1], got[1], rtol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match="exclude"):
        series_rhythm_vectors(padded, mask, FS, exclude[:, :-1])


def test_the_baseline_and_the_vector_share_one_rr_statistics():
    assert baseline._rr_features is rr_statistics and baseline._RR_NAMES == RR_STAT_NAMES
    assert RHYTHM_VECTOR_NAMES[: len(RR_STAT_NAMES)] == RR_STAT_NAMES


def test_embedding_starts_at_zero_reads_missing_numbers_and_trains():
    torch = pytest.importorskip("torch")
    from edge_tslm.model.encoder import VectorEmbedding

    emb = VectorEmbedding(RHYTHM_VECTOR_SCALES, 16)
    v = torch.from_numpy(np.stack([rhythm_vector(np.zeros(4500), FS), rhythm_vector(_synthetic_ecg(np.full(30, 0.8), FS)[0], FS)]))
    out = emb(v)
    assert out.shape == (2, 1, 16) and torch.count_nonzero(out) == 0  # an adapter trained without it starts unchanged
    out.pow(2).sum().backward()
    assert emb.proj[2].weight.grad is not None  # zero output, non-zero gradient: it can learn
    with torch.no_grad():
        emb.proj[2].weight.normal_()
    out = emb(v)
    assert torch.isfinite(out).all() and not torch.allclose(out[0], out[1])  # nan-heavy and regular rows differ


def test_model_adds_the_vector_to_each_series_and_learns_it():
    torch = pytest.importorskip("torch")
    from conftest import build_tiny, open_gates
    from edge_tslm.model.batch import collate

    model = build_tiny("flamingo", "tiny-llama", fs=FS, task="ecg_rhythm")
    model = build_tiny("flamingo", "tiny-llama", fs=FS, task="ecg_rhythm",
                       encoder=model.cfg.encoder.__class__(**{**model.cfg.encoder.__dict__, "rhythm_vector": True}))
    open_gates(model)
    rng = np.random.default_rng(6)
    ecgs = [_synthetic_ecg(rng.uniform(lo, lo + 0.3, 30), FS, seed=i)[0].astype(np.float32) for i, lo in enumerate((0.4, 0.8))]
    text = "ECG: <ts><endofchunk>\nWhich rhythm?\n"
    with torch.no_grad():
        b = model._batch(text, [ecgs[0]])
        media = model.encode_media(b.series, b.series_mask)  # (1, N, D)
        alone = model.series_encoder(b.series[0], b.series_mask[0], torch.tensor([0]),
                                     torch.from_numpy(rhythm_vector(ecgs[0], FS))[None])
        assert torch.allclose(media[0], alone[0], atol=1e-5)
        with pytest.raises(ValueError, match="pass vectors"):
            model.series_encoder(b.series[0], b.series_mask[0], torch.tensor([0]))
    model.train()
    batch = collate(model.tokenizer, [text, text], [[ecgs[0]], [ecgs[1]]], ["Answer: normal", "Answer: normal"])
    model.loss(batch).backward()
    assert model.series_encoder.rhythm.proj[2].weight.grad.abs().sum() > 0


def test_configs_that_cannot_measure_an_ecg_are_refused():
    from edge_tslm.config import EncoderConfig, TSLMConfig

    enc = EncoderConfig(rhythm_vector=True)
    with pytest.raises(ValueError, match="ECG lead"):
        TSLMConfig(task="har", encoder=enc)
    with pytest.raises(ValueError, match="ECG lead"):
        TSLMConfig(task="ecg_rhythm", series_features="rr_series", encoder=enc)
    with pytest.raises(ValueError, match="Flamingo encoder option"):
        TSLMConfig(variant="softprompt", task="ecg_rhythm", encoder=enc)
    assert TSLMConfig(task="ecg_rhythm", series_features="rr", encoder=enc).encoder.rhythm_vector


def _filled_gap_ecg() -> tuple[np.ndarray, np.ndarray]:
    """A regular ECG (RR 0.8 s) with a 2 s hole filled by a straight line, as a stream fills a gap, and its flags."""
    ecg, _ = _synthetic_ecg(np.full(25, 0.8), FS)
    a, b = 1200, 1500
    holed = ecg.astype(np.float32).copy()
    holed[a:b] = np.linspace(holed[a - 1], holed[b], b - a)
    flags = np.zeros(holed.size, bool)
    flags[a:b] = True
    return holed, flags


@pytest.mark.parametrize("scale_token", [False, True])
def test_onnx_artifact_measures_and_reads_the_vector_as_torch_does(tmp_path, scale_token):
    """Exported with its series_vectors input, the ONNX encoder passes parity, and the torch-free backend (which
    measures the vector itself) scores a real-shaped ECG as the torch model does; Core ML refuses with the reason.
    With the scale embedding too (the number-free ECG text) the encoder graph takes the ECG as recorded."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from conftest import build_tiny, open_gates
    from edge_tslm.config import EncoderConfig
    from edge_tslm.constants import ONNX_SERIES_VECTORS
    from edge_tslm.export import export_artifact
    from edge_tslm.export.coreml import export_encoder_coreml
    from edge_tslm.runtime.onnx_backend import OnnxBackend

    labels = ("normal", "atrial fibrillation")
    model = build_tiny("flamingo", "tiny-llama", fs=FS, task="ecg_rhythm", labels=labels,
                       encoder=EncoderConfig(dim=32, conv_layers=1, rhythm_vector=True, scale_token=scale_token),
                       series_text="none" if scale_token else "full", question_first=scale_token)
    open_gates(model, 0.5)
    with torch.no_grad():
        model.series_encoder.rhythm.proj[2].weight.normal_(0, 0.2)  # trained-like: the vector moves the latents
    manifest = export_artifact(model, "onnx", tmp_path, decoder=True)
    assert manifest["parity_passed"]
    be = OnnxBackend.from_pretrained(tmp_path, threads=1)
    assert ONNX_SERIES_VECTORS in {i.name for i in be.encoder.get_inputs()}
    text = "ECG: <ts><endofchunk>\nWhich rhythm?\n"
    for lo in (0.4, 0.8):
        ecg = _synthetic_ecg(np.random.default_rng(7).uniform(lo, lo + 0.4, 25), FS)[0].astype(np.float32)
        want = model.classify(text, [ecg], labels)
        got = be.classify(text, be.encode([ecg]), labels)
        for lab in labels:
            assert got[lab] == pytest.approx(want[lab], abs=1e-3)
    # a stream's untrusted flags reach the vector: a filled gap is then not read as a pause
    assert be.reads_untrusted
    holed, flags = _filled_gap_ecg()
    seen = []
    real = be.encoder.run
    be.encoder.run = lambda names, feed: (seen.append(feed[ONNX_SERIES_VECTORS].copy()), real(names, feed))[1]
    be.encode([holed])
    be.encode([holed], untrusted=[flags])
    be.encoder.run = real
    np.testing.assert_allclose(seen[0][0], rhythm_vector(holed, FS), rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(seen[1][0], rhythm_vector(holed, FS, flags), rtol=1e-5, equal_nan=True)
    assert seen[0][0][IDX["rr_max"]] > 1.5 and seen[1][0][IDX["rr_max"]] == pytest.approx(0.8, abs=2 / FS)
    with pytest.raises(ValueError, match="one \\(L,\\) flag array"):
        be.encode([holed], untrusted=[flags[:-1]])
    with pytest.raises(NotImplementedError, match="rhythm vector"):
        export_encoder_coreml(model, tmp_path / "enc.mlpackage")


def test_torch_backend_passes_the_streams_untrusted_flags_to_the_vector():
    """As the ONNX backend does: a stream's filled gap reaches the torch model's rhythm vector as untrusted samples, so
    the gap is not read as a pause; the flags change what classify and generate see, and bad flags are refused."""
    torch = pytest.importorskip("torch")
    from conftest import build_tiny, open_gates
    from edge_tslm.config import EncoderConfig
    from edge_tslm.model.batch import collate
    from edge_tslm.runtime.torch_backend import TorchBackend

    labels = ("normal", "atrial fibrillation")
    model = build_tiny("flamingo", "tiny-llama", fs=FS, task="ecg_rhythm", labels=labels,
                       encoder=EncoderConfig(dim=32, conv_layers=1, rhythm_vector=True))
    open_gates(model, 0.5)
    with torch.no_grad():
        model.series_encoder.rhythm.proj[2].weight.normal_(0, 0.2)  # trained-like: the vector moves the latents
    be = TorchBackend(model)
    assert be.reads_untrusted
    holed, flags = _filled_gap_ecg()
    seen = []
    real = model.rhythm_vectors
    model.rhythm_vectors = lambda x, m, e=None: (seen.append(real(x, m, e)), seen[-1])[1]
    text = "ECG: <ts><endofchunk>\nWhich rhythm?\n"
    plain = be.classify(text, be.encode([holed]), labels)
    flagged = be.classify(text, be.encode([holed], untrusted=[flags]), labels)
    be.generate(text, be.encode([holed], untrusted=[flags]), 2)
    del model.rhythm_vectors
    np.testing.assert_allclose(seen[0][0].numpy(), rhythm_vector(holed, FS), rtol=1e-5, equal_nan=True)
    for v in seen[1:]:
        np.testing.assert_allclose(v[0].numpy(), rhythm_vector(holed, FS, flags), rtol=1e-5, equal_nan=True)
    assert seen[0][0][IDX["rr_max"]] > 1.5 and float(seen[1][0][IDX["rr_max"]]) == pytest.approx(0.8, abs=2 / FS)
    assert plain != flagged
    # no flag set: the same scores as without flags (collate then keeps no exclude tensor)
    assert be.classify(text, be.encode([holed], untrusted=[np.zeros_like(flags)]), labels) == pytest.approx(plain, abs=1e-6)
    with pytest.raises(ValueError, match="one \\(L,\\) flag array"):
        be.encode([holed], untrusted=[flags, flags])
    for short in (flags[:-1], np.zeros(holed.size - 1, bool)):  # refused whether or not a sample is flagged
        with pytest.raises(ValueError, match="one flag per sample"):
            collate(model.tokenizer, [text], [[holed]], untrusted=[[short]])
