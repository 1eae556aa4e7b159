"""The ECG stem (encoder.ecg_stem): a record's features do not depend on the padding it is batched with, the TSLM starts
out unchanged and keeps the stem frozen while its projection trains, the stem travels in the adapter, and the exported
encoder graph runs it as torch does."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_tslm.model.ecg_stem import EcgStem, EcgStemConfig  # noqa: E402
from edge_tslm.rhythm_vector import RHYTHM_VECTOR_NAMES, rhythm_vector  # noqa: E402
from test_heartbeats import _synthetic_ecg  # noqa: E402

FS = 150.0
LABELS = ("normal", "atrial fibrillation")


def _ecg(lo: float, beats: int = 25, seed: int = 7) -> np.ndarray:
    return _synthetic_ecg(np.random.default_rng(seed).uniform(lo, lo + 0.4, beats), FS)[0].astype(np.float32)


def test_stem_features_do_not_depend_on_padding():
    torch.manual_seed(0)
    stem = EcgStem(EcgStemConfig(dropout=0.0)).eval()
    short, long = _ecg(0.5, 20), _ecg(0.8, 30, seed=3)
    vec = torch.from_numpy(np.stack([rhythm_vector(short, FS), rhythm_vector(long, FS)]))
    alone = stem(torch.from_numpy(short)[None], torch.ones(1, short.size, dtype=torch.bool), vec[:1])
    x = torch.zeros(2, long.size)
    m = torch.zeros(2, long.size, dtype=torch.bool)
    x[0, : short.size], m[0, : short.size] = torch.from_numpy(short), True
    x[1], m[1] = torch.from_numpy(long), True
    x[0, short.size :] = 5.0  # whatever sits in the padding is not read
    batched = stem(x, m, vec)
    assert batched.shape == (2, stem.cfg.feature_dim)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pass vectors"):
        stem(x, m)


def test_config_needs_the_rhythm_vector():
    from edge_tslm.config import EncoderConfig, TSLMConfig

    with pytest.raises(ValueError, match="rhythm_vector"):
        TSLMConfig(task="ecg_rhythm", encoder=EncoderConfig(ecg_stem=True))
    assert TSLMConfig(task="ecg_rhythm", encoder=EncoderConfig(ecg_stem=True, rhythm_vector=True)).encoder.ecg_stem
    with pytest.raises(ValueError, match="kernels must be odd"):
        EcgStemConfig(kernels=(4, 7, 5, 5, 5, 3))


def _tiny(stem: bool, logits_only: bool = False):
    from conftest import build_tiny
    from edge_tslm.config import EncoderConfig

    return build_tiny("flamingo", "tiny-llama", fs=FS, task="ecg_rhythm", labels=LABELS,
                      encoder=EncoderConfig(dim=32, conv_layers=1, rhythm_vector=True, ecg_stem=stem,
                                            stem_logits_only=logits_only))


def _padded(ecgs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """ECGs of any lengths -> (K, L) zero-padded and their (K, L) real-sample mask."""
    x = torch.zeros(len(ecgs), max(e.size for e in ecgs))
    m = torch.zeros_like(x, dtype=torch.bool)
    for i, e in enumerate(ecgs):
        x[i, : e.size], m[i, : e.size] = torch.from_numpy(e), True
    return x, m


def test_logits_only_reads_the_stem_s_logits_and_out_of_fold_logits_while_training(tmp_path):
    """encoder.stem_logits_only: the encoder reads the stem's label logits alone (what a fold stem's mean too), through
    a projection an adapter trained on the whole output is not loaded into; the ONNX encoder does the same."""
    from safetensors.numpy import save_file

    from edge_tslm.config import EncoderConfig, TSLMConfig
    from edge_tslm.model.artifact import save_pretrained
    from edge_tslm.train.recipe import load_adapter, load_ecg_stem_folds

    with pytest.raises(ValueError, match="no ECG stem"):
        TSLMConfig(task="ecg_rhythm", encoder=EncoderConfig(rhythm_vector=True, stem_logits_only=True))
    torch.manual_seed(0)
    whole = _tiny(True)
    with torch.no_grad():
        whole.series_encoder.stem_embed.proj.weight.normal_(0, 0.2)
    save_pretrained(whole, tmp_path / "whole")
    torch.manual_seed(0)
    model = _tiny(True, logits_only=True)
    enc = model.series_encoder
    assert enc.stem_embed is None and enc.stem_logit_embed.proj.weight.shape[1] == enc.stem.cfg.num_labels
    load_adapter(model, tmp_path / "whole")  # the whole-output projection is not this one: it stays at zero
    assert not enc.stem_logit_embed.proj.weight.any()
    assert not any(k.startswith("series_encoder.stem_embed") for k in model.state_dict())

    seen = []
    enc.stem_logit_embed.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    ecgs = [_ecg(0.4), _ecg(0.8, seed=2)]
    vec = np.stack([rhythm_vector(e, FS) for e in ecgs])
    x, m = _padded(ecgs)
    v = torch.from_numpy(vec)
    with torch.no_grad():
        full = enc.stem.eval()(x, m, v)  # (2, hidden + labels)
        enc.eval()(x, m, torch.zeros(2, dtype=torch.long), v)
    torch.testing.assert_close(seen[-1], full[:, -enc.stem.cfg.num_labels :])  # the logits, nothing else
    fold = np.arange(enc.stem.cfg.feature_dim, dtype=np.float32)[None] / 10  # a fold stem's hidden + logits
    save_file({"vectors": vec[:1], "features": fold}, str(tmp_path / "folds.safetensors"))
    load_ecg_stem_folds(model, tmp_path / "folds.safetensors")
    with torch.no_grad():
        enc.train()(x, m, torch.zeros(2, dtype=torch.long), v)
    torch.testing.assert_close(seen[-1][0], torch.from_numpy(fold[0, -enc.stem.cfg.num_labels :]))  # its logits only
    torch.testing.assert_close(seen[-1][1], full[1, -enc.stem.cfg.num_labels :])

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from conftest import open_gates
    from edge_tslm.export import export_artifact
    from edge_tslm.runtime.onnx_backend import OnnxBackend

    model.eval()
    open_gates(model, 0.5)
    with torch.no_grad():
        enc.stem_logit_embed.proj.weight.normal_(0, 0.2)
    export_artifact(model, "onnx", tmp_path / "onnx", decoder=True)
    be = OnnxBackend.from_pretrained(tmp_path / "onnx", threads=1)
    text = "ECG: <ts><endofchunk>\nWhich rhythm?\n"
    want = model.classify(text, [ecgs[1]], LABELS)
    got = be.classify(text, be.encode([ecgs[1]]), LABELS)
    assert got == pytest.approx(want, abs=1e-3)


def test_tslm_starts_unchanged_keeps_the_stem_frozen_and_saves_it(tmp_path):
    from conftest import open_gates
    from safetensors.torch import save_file

    from edge_tslm.model.artifact import from_pretrained, save_pretrained
    from edge_tslm.model.batch import collate
    from edge_tslm.train.recipe import load_stem

    torch.manual_seed(0)
    plain = _tiny(False)
    torch.manual_seed(0)
    model = _tiny(True)
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".stem" in k for k in missing)
    open_gates(plain, 0.5)
    open_gates(model, 0.5)
    # a pretrained stem, loaded as training/curriculum.py --ecg-stem does
    trained = EcgStem()
    with torch.no_grad():
        for p in trained.parameters():
            p.normal_(0, 0.3)
    save_file(trained.state_dict(), str(tmp_path / "stem.safetensors"))
    load_stem(model, tmp_path / "stem.safetensors")
    torch.testing.assert_close(model.series_encoder.stem.head.weight, trained.head.weight)
    with pytest.raises(ValueError, match="has no stem"):
        load_stem(plain, tmp_path / "stem.safetensors")
    save_file(EcgStem(EcgStemConfig(rhythm_vector=False)).state_dict(), str(tmp_path / "ablation.safetensors"))
    with pytest.raises(ValueError, match="does not fit"):  # the --no-rhythm-vector ablation: other head shapes
        load_stem(model, tmp_path / "ablation.safetensors")
    wide = EcgStemConfig(channels=(32, 48, 64, 96, 128, 128, 128), kernels=(9, 7, 7, 5, 5, 5, 3))  # --channels / --kernels
    save_file(EcgStem(wide).state_dict(), str(tmp_path / "wide.safetensors"))
    with pytest.raises(ValueError, match="default .*--channels"):  # a stem-only experiment, refused with the fix
        load_stem(model, tmp_path / "wide.safetensors")
    for bad in ({"hidden": 0}, {"channels": (16, 0), "kernels": (7, 5)}, {"kernels": (7, 7, 5, 5, 5, 4)}):
        with pytest.raises(ValueError, match="must be"):  # pretrain_ecg_stem.py --hidden / --channels / --kernels
            EcgStemConfig(**bad)

    text = "ECG: <ts><endofchunk>\nWhich rhythm?\n"
    ecgs = [_ecg(0.4), _ecg(0.8, seed=2)]
    for ecg in ecgs:  # zero-initialised projection: the stem changes nothing until it trains
        assert model.classify(text, [ecg], LABELS) == pytest.approx(plain.classify(text, [ecg], LABELS), abs=1e-5)
    assert not any(p.requires_grad for p in model.series_encoder.stem.parameters())
    model.train()
    batch = collate(model.tokenizer, [text, text], [[ecgs[0]], [ecgs[1]]], ["Answer: normal", "Answer: normal"])
    model.loss(batch).backward()
    assert model.series_encoder.stem_embed.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.series_encoder.stem.parameters())

    with torch.no_grad():
        model.series_encoder.stem_embed.proj.weight.normal_(0, 0.2)  # trained-like: the stem moves the latents
    model.eval()
    want = model.classify(text, [ecgs[0]], LABELS)
    assert want != pytest.approx(plain.classify(text, [ecgs[0]], LABELS), abs=1e-4)
    save_pretrained(model, tmp_path / "art")
    again = from_pretrained(tmp_path / "art")
    torch.testing.assert_close(again.series_encoder.stem.head.weight, trained.head.weight)
    assert again.classify(text, [ecgs[0]], LABELS) == pytest.approx(want, abs=1e-5)


def test_onnx_encoder_runs_the_stem_as_torch_does(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from conftest import open_gates
    from edge_tslm.export import export_artifact
    from edge_tslm.runtime.onnx_backend import OnnxBackend

    torch.manual_seed(1)
    model = _tiny(True)
    open_gates(model, 0.5)
    with torch.no_grad():
        for p in model.series_encoder.stem.parameters():
            p.normal_(0, 0.3)
        model.series_encoder.stem_embed.proj.weight.normal_(0, 0.2)
    manifest = export_artifact(model, "onnx", tmp_path, decoder=True)
    assert manifest["parity_passed"]
    be = OnnxBackend.from_pretrained(tmp_path, threads=1)
    text = "ECG: <ts><endofchunk>\nWhich rhythm?\n"
    for lo, n in ((0.4, 25), (0.8, 40)):  # two lengths: the graph takes any
        ecg = _ecg(lo, n)
        want = model.classify(text, [ecg], LABELS)
        got = be.classify(text, be.encode([ecg]), LABELS)
        for lab in LABELS:
            assert got[lab] == pytest.approx(want[lab], abs=1e-3)
    assert len(RHYTHM_VECTOR_NAMES) == 36


def test_training_records_read_out_of_fold_stem_features_only_while_training(tmp_path):
    """--stem-folds with --ecg-stem: a training record's stem features come from the folds file while the TSLM trains
    (matched by its rhythm vector); other records, and every record in eval mode, get the stem's own."""
    from safetensors.numpy import save_file

    from edge_tslm.train.recipe import load_ecg_stem_folds

    torch.manual_seed(0)
    model = _tiny(True)
    ecgs = [_ecg(0.4), _ecg(0.8, seed=2)]
    vec = np.stack([rhythm_vector(e, FS) for e in ecgs])
    stem = model.series_encoder.stem
    own = np.full((1, stem.cfg.feature_dim), 0.5, np.float32)
    save_file({"vectors": vec[:1], "features": own}, str(tmp_path / "folds.safetensors"))
    assert load_ecg_stem_folds(model, tmp_path / "folds.safetensors") == 1
    x, m = _padded(ecgs)
    v = torch.from_numpy(vec)
    with torch.no_grad():
        full = stem.eval()(x, m, v)
        crossed = stem.train()(x, m, v)
    torch.testing.assert_close(crossed[0], torch.from_numpy(own[0]))
    torch.testing.assert_close(crossed[1], full[1])
    assert (stem.cross_fit.hits, stem.cross_fit.seen) == (1, 2)
    save_file({"vectors": vec[:1], "features": own[:, :5]}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="--cross-fit K"):
        load_ecg_stem_folds(model, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="no ECG stem"):
        load_ecg_stem_folds(_tiny(False), tmp_path / "folds.safetensors")


def test_stem_pretraining_flips_crops_upside_down_at_the_asked_rate():
    from conftest import load_script

    mod = load_script("training/pretrain_ecg_stem.py")
    torch.manual_seed(0)
    x = torch.randn(400, 64)  # (B, L)
    m = torch.ones(400, 64, dtype=torch.bool)
    m[:, 48:] = False  # padding gets no noise
    for p, lo, hi in ((0.0, 0, 0), (1.0, 400, 400), (0.5, 150, 250)):
        y = mod.augment(x, m, p)
        flipped = ((y[:, :48] * x[:, :48]).sum(1) < 0).sum().item()  # rows whose sign turned over
        assert lo <= flipped <= hi, (p, flipped)
        assert torch.allclose(y[:, :48].abs(), x[:, :48].abs(), atol=0.2)  # noise of 0.02 std on the real samples
        assert torch.equal(y[:, 48:].abs(), x[:, 48:].abs())  # the padding only changes sign
    with pytest.raises(SystemExit):
        mod.main(["--flip", "1.5"])  # refused before any data is read
