"""The MiniRocket stem (encoder.minirocket_stem): its features are MiniRocket's (PPV against quantile biases, padding
not read), the folded ridge head scores as scikit-learn does, the TSLM starts out unchanged with the stem frozen and
saved in the adapter, bad sample layouts are refused, and the exported encoder graph runs it as torch does."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_tslm.model.minirocket_stem import (  # noqa: E402
    NUM_KERNELS,
    MiniRocketConfig,
    MiniRocketStem,
    kernel_weights,
    minirocket_dilations,
)

LABELS = ("walking", "walking upstairs", "walking downstairs", "sitting", "standing", "lying")
SMALL = MiniRocketConfig(channels=3, window=64, num_features=840, num_labels=2)


def _windows(n: int, L: int = 64, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Two classes a ridge can tell apart: a 2 Hz swing on x vs a still window tilted onto z."""
    rng = np.random.default_rng(seed)
    t = np.arange(L) / 50.0
    xs, ys = [], []
    for i in range(n):
        y = i % 2
        w = 0.05 * rng.standard_normal((3, L))
        if y == 0:
            w[0] += 0.5 * np.sin(2 * np.pi * 2.0 * t + rng.uniform(0, 6.3)) + 1.0
        else:
            w[2] += 1.0 + 0.1 * rng.standard_normal()
        xs.append(w)
        ys.append(y)
    return torch.tensor(np.stack(xs), dtype=torch.float32), np.asarray(ys)


def _fitted(seed: int = 0) -> tuple[MiniRocketStem, torch.Tensor]:
    stem = MiniRocketStem(SMALL)
    stem.init_kernels(seed)
    x, _ = _windows(40, seed=seed)
    stem.fit_biases(x, seed)
    return stem, x


def test_kernels_and_dilations_are_minirockets():
    w = kernel_weights()
    assert w.shape == (NUM_KERNELS, 9) and np.all(w.sum(1) == 0)  # three taps of 2, six of -1
    dil, per = minirocket_dilations(MiniRocketConfig())  # 128-sample windows, 10,000 features asked for
    assert dil[0] == 1 and dil[-1] <= (128 - 1) // 8 and dil == sorted(set(dil))
    assert sum(per) == 10_000 // NUM_KERNELS
    stem, _ = _fitted()
    for i in range(len(stem.dilations)):
        wi = getattr(stem, f"weight{i}")  # (84, C, 9): each kernel reads at least one axis, its taps where it reads
        used = wi.abs().sum(-1) > 0  # (84, C)
        assert used.any(1).all()
        torch.testing.assert_close(wi[used], torch.from_numpy(w)[:, None, :].expand(-1, 3, -1)[used])


def test_features_are_ppv_against_the_fitted_quantiles_and_ignore_padding():
    stem, x = _fitted()
    m = torch.ones(len(x), x.shape[-1], dtype=torch.bool)
    f = stem.features(x, m)
    assert f.shape == (len(x), stem.num_features) and f.min() >= 0 and f.max() <= 1
    # a padded (kernel, dilation) sees every sample: its PPV is the share of its conv output above the bias
    conv = stem._conv(x, 0)  # (N, 84, L)
    k = 0
    assert bool(stem.pads0[0, k, 0])
    want = (conv[:, k, :, None] > stem.bias0[k]).float().mean(1)  # (N, q)
    torch.testing.assert_close(f[:, : stem.per_dilation[0]], want)
    # an unpadded one reads only positions whose nine taps are all real samples
    k = 1
    assert not bool(stem.pads0[0, k, 0])
    want = (conv[:, k, 4:-4, None] > stem.bias0[k]).float().mean(1)
    torch.testing.assert_close(f[:, stem.per_dilation[0] : 2 * stem.per_dilation[0]], want)
    # trailing padding, whatever it holds, is not read
    padded = torch.cat([x[:2], torch.full((2, 3, 20), 7.0)], dim=-1)
    pm = torch.zeros(2, padded.shape[-1], dtype=torch.bool)
    pm[:, : x.shape[-1]] = True
    torch.testing.assert_close(stem.features(padded, pm), f[:2])


def test_set_ridge_scores_as_sklearn():
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.preprocessing import StandardScaler

    stem, x = _fitted()
    _, y = _windows(40)
    f = stem.features(x, torch.ones(len(x), x.shape[-1], dtype=torch.bool)).numpy()
    sc = StandardScaler().fit(f)
    ridge = RidgeClassifierCV(alphas=np.logspace(-3, 3, 10)).fit(sc.transform(f), y)
    c, b = ridge.coef_.reshape(-1), ridge.intercept_.reshape(-1)  # binary: sklearn keeps the positive class's row
    stem.set_ridge(sc.mean_, sc.scale_, np.stack([-c, c]), np.concatenate([-b, b]))
    xt, yt = _windows(20, seed=5)
    scores = stem(xt, torch.ones(len(xt), xt.shape[-1], dtype=torch.bool))  # (N, 2)
    want = ridge.decision_function(sc.transform(stem.features(xt, torch.ones(len(xt), xt.shape[-1], dtype=torch.bool)).numpy()))
    torch.testing.assert_close(scores[:, 1].double(), torch.from_numpy(want).double(), atol=1e-3, rtol=1e-4)
    assert (scores.argmax(1).numpy() == yt).mean() == 1.0


def test_config_refuses_bad_combinations():
    from edge_tslm.config import EncoderConfig, TSLMConfig

    with pytest.raises(ValueError, match="scale_token"):
        TSLMConfig(task="har", encoder=EncoderConfig(minirocket_stem=True))
    with pytest.raises(ValueError, match="pick one"):
        TSLMConfig(task="ecg_rhythm", encoder=EncoderConfig(minirocket_stem=True, ecg_stem=True, rhythm_vector=True,
                                                            scale_token=True))
    with pytest.raises(ValueError, match="window"):
        MiniRocketConfig(window=4)
    with pytest.raises(ValueError, match="no stem"):
        TSLMConfig(task="har", encoder=EncoderConfig(scale_token=True, stem_at_latents=True))


def _tiny(stem: bool, at_latents: bool = False):
    from conftest import build_tiny
    from edge_tslm.config import EncoderConfig

    return build_tiny("flamingo", "tiny-llama", fs=50.0, task="har", labels=LABELS,
                      encoder=EncoderConfig(dim=32, conv_layers=1, scale_token=True, minirocket_stem=stem,
                                            stem_at_latents=at_latents))


def _axes(seed: int) -> list[np.ndarray]:
    x, _ = _windows(1, L=128, seed=seed)
    return [a.numpy() for a in x[0]]


TEXT = "x: <ts><endofchunk>y: <ts><endofchunk>z: <ts><endofchunk>\nWhich activity?\n"


def _trained_like_stem() -> MiniRocketStem:
    stem = MiniRocketStem(MiniRocketConfig())
    stem.init_kernels(0)
    x = torch.cat([_windows(8, L=128, seed=s)[0] for s in range(2)])
    stem.fit_biases(x, 0)
    with torch.no_grad():
        stem.head.weight.normal_(0, 0.05)
    return stem


def test_tslm_starts_unchanged_keeps_the_stem_frozen_and_saves_it(tmp_path):
    from conftest import open_gates
    from safetensors.torch import save_file

    from edge_tslm.model.artifact import from_pretrained, save_pretrained
    from edge_tslm.model.batch import collate
    from edge_tslm.train.recipe import load_stem

    plain, model = _tiny(False), _tiny(True)
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".stem" in k for k in missing)
    open_gates(plain, 0.5)
    open_gates(model, 0.5)
    trained = _trained_like_stem()
    save_file(trained.state_dict(), str(tmp_path / "stem.safetensors"))
    load_stem(model, tmp_path / "stem.safetensors")
    torch.testing.assert_close(model.series_encoder.stem.bias3, trained.bias3)
    save_file(MiniRocketStem(SMALL).state_dict(), str(tmp_path / "small.safetensors"))
    with pytest.raises(ValueError, match="does not fit this model's MiniRocketStem"):
        load_stem(model, tmp_path / "small.safetensors")

    windows = [_axes(1), _axes(2)]
    for w in windows:  # zero-initialised projection: the stem changes nothing until it trains
        assert model.classify(TEXT, w, LABELS) == pytest.approx(plain.classify(TEXT, w, LABELS), abs=1e-5)
    assert not any(p.requires_grad for p in model.series_encoder.stem.parameters())
    model.train()
    batch = collate(model.tokenizer, [TEXT, TEXT], windows, ["Answer: sitting", "Answer: lying"])
    model.loss(batch).backward()
    assert model.series_encoder.stem_embed.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.series_encoder.stem.parameters())
    with pytest.raises(ValueError, match="exactly 3 series"):
        model.loss(collate(model.tokenizer, ["x: <ts><endofchunk>y: <ts><endofchunk>\n"], [windows[0][:2]], ["Answer: lying"]))

    with torch.no_grad():
        model.series_encoder.stem_embed.proj.weight.normal_(0, 0.2)  # trained-like: the stem moves the latents
    model.eval()
    want = model.classify(TEXT, windows[0], LABELS)
    assert want != pytest.approx(plain.classify(TEXT, windows[0], LABELS), abs=1e-4)
    # batched with another sample, and with activation checkpointing (C rows per call), the same answer
    model.set_activation_checkpointing(True)
    model.train()
    with torch.no_grad():
        a = model.loss(collate(model.tokenizer, [TEXT, TEXT], windows, ["Answer: sitting", "Answer: lying"]))
    model.set_activation_checkpointing(False)
    with torch.no_grad():
        b = model.loss(collate(model.tokenizer, [TEXT, TEXT], windows, ["Answer: sitting", "Answer: lying"]))
    assert float(a) == pytest.approx(float(b), rel=1e-5)
    model.eval()
    save_pretrained(model, tmp_path / "art")
    again = from_pretrained(tmp_path / "art")
    torch.testing.assert_close(again.series_encoder.stem.head.weight, trained.head.weight)
    assert again.classify(TEXT, windows[0], LABELS) == pytest.approx(want, abs=1e-5)


def _exportable_stem_model(tmp_path):
    """A tiny TSLM with a trained-like stem loaded and its gates open, for the export tests."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from conftest import open_gates
    from edge_tslm.train.recipe import load_stem
    from safetensors.torch import save_file

    model = _tiny(True)
    save_file(_trained_like_stem().state_dict(), str(tmp_path / "stem.safetensors"))
    load_stem(model, tmp_path / "stem.safetensors")
    open_gates(model, 0.5)
    return model


def test_onnx_encoder_runs_the_stem_as_torch_does(tmp_path):
    from edge_tslm.export import export_artifact
    from edge_tslm.runtime.onnx_backend import OnnxBackend

    model = _exportable_stem_model(tmp_path)
    with torch.no_grad():
        model.series_encoder.stem_embed.proj.weight.normal_(0, 0.2)
    manifest = export_artifact(model, "onnx", tmp_path / "onnx", decoder=True)
    assert manifest["parity_passed"]
    be = OnnxBackend.from_pretrained(tmp_path / "onnx", threads=1)
    for seed in (3, 4):
        w = _axes(seed)
        want = model.classify(TEXT, w, LABELS)
        got = be.classify(TEXT, be.encode(w), LABELS)
        for lab in LABELS:
            assert got[lab] == pytest.approx(want[lab], abs=1e-3)


def test_stem_at_latents_starts_unchanged_trains_and_exports(tmp_path):
    """--stem-latents: a second zero-initialised projection adds the stem's scores to every latent. An adapter trained
    without it loads and answers as before; the projection trains while the stem stays frozen; the graph runs it."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from conftest import open_gates
    from edge_tslm.export import export_artifact
    from edge_tslm.model.batch import collate
    from edge_tslm.runtime.onnx_backend import OnnxBackend
    from edge_tslm.train.recipe import load_stem
    from safetensors.torch import save_file

    before, model = _tiny(True), _tiny(True, at_latents=True)
    save_file(_trained_like_stem().state_dict(), str(tmp_path / "stem.safetensors"))
    open_gates(before, 0.5)
    with torch.no_grad():
        before.series_encoder.stem_embed.proj.weight.normal_(0, 0.2)  # an adapter trained with the stem at the patches
    missing, unexpected = model.load_state_dict(before.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == ["series_encoder.stem_latents.proj.bias", "series_encoder.stem_latents.proj.weight"]
    for m in (before, model):
        load_stem(m, tmp_path / "stem.safetensors")
    w = _axes(5)
    assert model.classify(TEXT, w, LABELS) == pytest.approx(before.classify(TEXT, w, LABELS), abs=1e-5)
    model.train()
    model.loss(collate(model.tokenizer, [TEXT], [w], ["Answer: lying"])).backward()
    assert model.series_encoder.stem_latents.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.series_encoder.stem.parameters())
    model.eval()
    with torch.no_grad():
        model.series_encoder.stem_latents.proj.weight.normal_(0, 0.2)
    want = model.classify(TEXT, w, LABELS)
    assert want != pytest.approx(before.classify(TEXT, w, LABELS), abs=1e-4)
    manifest = export_artifact(model, "onnx", tmp_path / "onnx", decoder=True)
    assert manifest["parity_passed"]
    be = OnnxBackend.from_pretrained(tmp_path / "onnx", threads=1)
    got = be.classify(TEXT, be.encode(w), LABELS)
    for lab in LABELS:
        assert got[lab] == pytest.approx(want[lab], abs=1e-3)


def test_compact_export_without_parity_windows_feeds_the_stem_whole_windows(tmp_path):
    """The demo's first build calls export_artifact(..., weight_bits=4) with no parity windows: its seeded random
    windows must be what the stem reads (3 axes of its window length), not 1-2 series of any length."""
    from edge_tslm.export import export_artifact
    from edge_tslm.export.compact import _sample_shape, default_parity_inputs

    model = _exportable_stem_model(tmp_path)
    assert _sample_shape(model) == {"channels": 3, "length": 128} and _sample_shape(_tiny(False)) == {}
    assert all(len(s) == 3 and {x.size for x in s} == {128} for _, s in default_parity_inputs(channels=3, length=128))
    manifest = export_artifact(model, "onnx", tmp_path / "onnx", decoder=True, weight_bits=4, block_size=32)
    assert manifest["parity_passed"] and manifest["exported"][-1]["parity"]["compact"]["windows"] == 4


def test_train_only_leaves_the_rest_of_the_adapter_frozen():
    from edge_tslm.train.recipe import train_only

    model = _tiny(True)
    n = train_only(model, ["series_encoder.stem_embed."])
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(k.startswith("series_encoder.stem_embed.") for k in trainable)
    assert n == sum(p.numel() for p in model.series_encoder.stem_embed.parameters())
    with pytest.raises(ValueError, match="no trainable weight starts with"):
        train_only(model, ["xattn.nothing"])


def test_coreml_export_refuses_the_stem_with_the_fix(tmp_path):
    pytest.importorskip("coremltools")
    from edge_tslm.export.coreml import export_encoder_coreml

    with pytest.raises(NotImplementedError, match="--target onnx"):
        export_encoder_coreml(_tiny(True), tmp_path / "enc.mlpackage")


def test_fit_biases_needs_the_kernels_first():
    x, _ = _windows(4)
    with pytest.raises(RuntimeError, match="init_kernels"):
        MiniRocketStem(SMALL).fit_biases(x)


def test_a_checkpoint_becomes_an_artifact_of_its_own_run_only(tmp_path):
    from edge_tslm.model.artifact import from_pretrained, save_pretrained
    from edge_tslm.train.checkpoint import checkpoint_to_artifact, save_checkpoint

    model = _tiny(True)
    save_pretrained(model, tmp_path / "best")
    with torch.no_grad():
        model.series_encoder.stem_embed.proj.weight.normal_(0, 0.2)  # the checkpoint moved on from best/
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    save_checkpoint(model, opt, tmp_path / "last", {"step": 7, "seed": 0})
    checkpoint_to_artifact(tmp_path / "last", tmp_path / "best", tmp_path / "out")
    again = from_pretrained(tmp_path / "out")
    torch.testing.assert_close(again.series_encoder.stem_embed.proj.weight, model.series_encoder.stem_embed.proj.weight)
    save_pretrained(_tiny(False), tmp_path / "other")  # another run's model: no stem
    with pytest.raises(ValueError, match="it does not have"):
        checkpoint_to_artifact(tmp_path / "last", tmp_path / "other", tmp_path / "bad")


def test_cross_fit_heads_score_known_training_windows_out_of_fold_only_while_training(tmp_path):
    """--stem-folds: a training window a fold knows gets that fold's head, an unknown one (validation) and every
    window in eval mode get the full head; the heads are not part of the stem's saved state."""
    from edge_tslm.model.minirocket_stem import CrossFitHeads, window_key

    stem, x = _fitted()
    mask = torch.ones(x.shape[0], x.shape[2], dtype=torch.bool)
    F = stem.num_features
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(2, 2, F, generator=g) * 0.01, torch.randn(2, 2, generator=g)
    table = {window_key(x[i].numpy()): i % 2 for i in range(0, 20)}  # windows 20.. are unknown
    before = set(stem.state_dict())
    stem.cross_fit = CrossFitHeads(w, b, table)
    assert set(stem.state_dict()) == before
    with torch.no_grad():
        stem.eval()
        full = stem(x, mask)
        stem.train()
        mixed = stem(x, mask)
        f = stem.features(x, mask)
    for i in range(len(x)):
        want = f[i] @ w[i % 2].T + b[i % 2] if i < 20 else full[i]
        torch.testing.assert_close(mixed[i], want, rtol=1e-4, atol=1e-4)
    assert stem.cross_fit.seen == len(x) and stem.cross_fit.hits == 20


def test_load_cross_fit_refuses_another_task(tmp_path):
    import json

    from safetensors.torch import save_file

    from edge_tslm.train.recipe import load_cross_fit

    save_file({"weight": torch.zeros(2, 6, 4), "bias": torch.zeros(2, 6)}, str(tmp_path / "folds.safetensors"),
              metadata={"folds": json.dumps({"subject-1": 0}), "task": "har"})
    with pytest.raises(ValueError, match="refit with --task har_gait"):
        load_cross_fit(tmp_path / "folds.safetensors", "har_gait")


def test_augmentation_turns_and_warps_only_the_patch_path_while_training():
    """encoder.augment_*: rotations are rotations, a warp at speed 1 replays the window, gapped windows stay as
    recorded; the stem reads the windows as recorded and the model in eval mode is untouched."""
    from edge_tslm.model.augment import augment_windows, random_rotations, time_warp

    g = torch.Generator().manual_seed(0)
    R = random_rotations(64, 15.0, g)
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(64, 3, 3), rtol=1e-5, atol=1e-5)
    angles = torch.rad2deg(torch.arccos(((R.diagonal(dim1=1, dim2=2).sum(1) - 1) / 2).clamp(-1, 1)))
    assert float(angles.max()) <= 15.0 + 1e-3 and float(angles.max()) > 5.0
    x, _ = _windows(8, L=128, seed=3)
    torch.testing.assert_close(time_warp(x, 0.0), x)
    w = time_warp(x, 0.2, torch.Generator().manual_seed(1))
    assert w.shape == x.shape and not torch.allclose(w, x)
    assert float(w.abs().max()) <= float(x.abs().max()) + 1e-5  # interpolation never leaves the recorded range
    full = torch.tensor([True] * 4 + [False] * 4)
    a = augment_windows(x, full, 10.0, 0.1, torch.Generator().manual_seed(2))
    assert torch.equal(a[4:], x[4:]) and not torch.allclose(a[:4], x[:4])
    # rotation keeps each sample's |a| when there is no warp
    r = augment_windows(x, full, 30.0, 0.0, torch.Generator().manual_seed(2))
    torch.testing.assert_close(r.norm(dim=1), x.norm(dim=1), rtol=1e-4, atol=1e-5)

    from conftest import build_tiny
    from edge_tslm.config import EncoderConfig

    with pytest.raises(ValueError, match="MiniRocket stem"):
        build_tiny("flamingo", "tiny-llama", fs=50.0, task="har", labels=LABELS,
                   encoder=EncoderConfig(dim=32, conv_layers=1, scale_token=True, augment_warp=0.1))
    model = build_tiny("flamingo", "tiny-llama", fs=50.0, task="har", labels=LABELS,
                       encoder=EncoderConfig(dim=32, conv_layers=1, scale_token=True, minirocket_stem=True,
                                             augment_rotate_deg=10.0, augment_warp=0.1))
    enc = model.series_encoder
    series = x[:2].reshape(6, 128)  # (K=6, L): two windows, three axes each
    mask = torch.ones(6, 128, dtype=torch.bool)
    enc.train()
    assert not torch.allclose(enc.patch_view(series, mask), series)
    enc.eval()
    assert torch.equal(enc.patch_view(series, mask), series)
    seen = {}
    enc.stem.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0].clone()))  # returns None: output kept
    enc.train()
    with torch.no_grad():
        enc(series, mask, torch.arange(6) % 3)
    torch.testing.assert_close(seen["x"], series.reshape(2, 3, 128))  # the stem read the windows as recorded
