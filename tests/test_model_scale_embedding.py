"""The scale embedding: a Flamingo encoder that reads each series as recorded, z-normalises it in its own graph and
adds an embedding of the series' mean and std to each of its patches (EncoderConfig.scale_token, series_text="none")."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import build_tiny  # noqa: E402

from edge_tslm.config import EncoderConfig  # noqa: E402


def _scale_model(seed: int = 0):
    m = build_tiny("flamingo", "tiny-llama", seed=seed, encoder=EncoderConfig(dim=32, conv_layers=1, scale_token=True),
                   series_text="none")
    with torch.no_grad():  # a trained embedding: the zero-initialised output layer would hide the scale
        torch.nn.init.normal_(m.series_encoder.scale.proj[2].weight, std=0.5)
    return m


def test_masked_znormalize_is_the_numpy_znormalize_on_each_rows_real_samples():
    from edge_tslm.model.encoder import masked_znormalize
    from edge_tslm.signals import znormalize

    rng = np.random.default_rng(0)
    x = np.zeros((3, 50), dtype=np.float32)
    x[0] = rng.standard_normal(50) * 0.02 + 9.81  # small std on a big offset (gravity in m/s^2)
    x[1, :30] = rng.standard_normal(30) * 300.0 - 1200.0  # padded after 30 samples, ADC counts
    x[1, 30:] = 5e4  # padding garbage must not count
    x[2] = -0.4  # a flat channel
    mask = np.ones((3, 50), dtype=bool)
    mask[1, 30:] = False
    normed, mean, std = masked_znormalize(torch.tensor(x), torch.tensor(mask))
    for row, n in ((0, 50), (1, 30), (2, 50)):
        ref, m_ref, s_ref = znormalize(x[row : row + 1, :n])
        np.testing.assert_allclose(normed[row, :n].numpy(), ref[0], atol=2e-3)
        assert mean[row].item() == pytest.approx(m_ref[0], rel=1e-5)
        assert std[row].item() == pytest.approx(s_ref[0], rel=1e-3)
    assert not normed[1, 30:].any(), "padding stays zero"
    assert not normed[2].any(), "a flat channel becomes zeros, as znormalize makes it"


def test_a_fresh_scale_embedding_is_zero_so_an_adapter_trained_without_it_gives_the_same_latents():
    from edge_tslm.model.encoder import masked_znormalize

    m = build_tiny("flamingo", "tiny-llama", encoder=EncoderConfig(dim=32, conv_layers=1, scale_token=True))
    emb = m.series_encoder.scale(torch.tensor([0.5, -3.0]), torch.tensor([0.02, 40.0]))
    assert emb.shape == (2, 1, 32) and not emb.any()
    plain = build_tiny("flamingo", "tiny-llama", series_text="full")
    missing, unexpected = m.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(k.startswith("series_encoder.scale.") for k in missing) and not unexpected
    x = torch.randn(2, 40) * 0.3 + 1.0
    mask, idx = torch.ones(2, 40, dtype=torch.bool), torch.tensor([0, 1])
    with torch.no_grad():  # raw series into the scale model == its z-normalised form into the plain one
        torch.testing.assert_close(m.series_encoder(x, mask, idx), plain.series_encoder(masked_znormalize(x, mask)[0], mask, idx))


def test_the_encoder_sees_the_scale_only_through_the_scale_embedding():
    """Offset and gain change the latents with the embedding, and nothing at all once it is zeroed:
    the patches see the same z-normalised shape."""
    m = _scale_model()
    enc = m.series_encoder
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 64, generator=g)
    mask = torch.ones(2, 64, dtype=torch.bool)
    idx = torch.tensor([0, 1])
    with torch.no_grad():
        a, b = enc(x, mask, idx), enc(3.0 * x + 1.0, mask, idx)
        assert (a - b).abs().max() > 1e-3, "the scale must reach the latents"
        enc.scale.proj[2].weight.zero_()
        a, b = enc(x, mask, idx), enc(3.0 * x + 1.0, mask, idx)
    assert (a - b).abs().max() < 1e-4


def test_scale_embedding_trains_and_the_text_carries_no_numbers():
    from edge_tslm.data.hapt import HAR_TASK
    from edge_tslm.data.sample import Sample
    from edge_tslm.model.batch import collate
    from edge_tslm.signals import SignalMeta
    from edge_tslm.train.examples import make_example

    m = _scale_model()
    m.train()
    x = (0.2 * np.sin(np.arange(128) / 4.0)[None] + np.array([[0.98], [-0.1], [0.2]])).astype(np.float32)
    s = Sample(x, SignalMeta(fs=50.0, unit="g", channels=("x", "y", "z")), HAR_TASK.question, "sitting", "Answer: sitting",
               "har", "r")
    ex = make_example(s, question_first=True, series_text="none")
    assert "0.98" not in ex.text and "mean" not in ex.text and "x: <ts>" in ex.text
    np.testing.assert_array_equal(ex.series[0], x[0])  # as recorded: the encoder normalises
    batch = collate(m.tokenizer, [ex.text], [ex.series], [ex.target], chat_format=m.cfg.chat_format)
    for blk in m.xattn.values():  # open the gates so the media reach the loss
        blk.attn_gate.data.fill_(1.0)
    m.loss(batch).backward()
    grad = m.series_encoder.scale.proj[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_scale_embedding_encoder_exports_to_onnx_and_matches_eager(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from edge_tslm.constants import ONNX_SERIES, ONNX_SERIES_INDEX, ONNX_SERIES_MASK
    from edge_tslm.export.onnx import export_encoder_onnx
    from edge_tslm.export.spec import ENCODER_FP32_ATOL

    m = _scale_model()
    rep = export_encoder_onnx(m, tmp_path / "encoder.onnx")
    assert rep.parity["passed"], rep.parity
    sess = ort.InferenceSession(str(rep.path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 90, generator=g) * torch.tensor([[0.02], [300.0], [1.0]]) + torch.tensor([[9.81], [-1200.0], [0.0]])
    x[2] = 0.7  # flat
    mask = torch.ones(3, 90, dtype=torch.bool)
    mask[1, 41:] = False
    idx = torch.tensor([0, 1, 2])
    with torch.no_grad():
        ref = m.series_encoder(x, mask, idx).numpy()
    (out,) = sess.run(None, {ONNX_SERIES: x.numpy(), ONNX_SERIES_MASK: mask.numpy(), ONNX_SERIES_INDEX: idx.numpy()})
    assert np.abs(out - ref).max() <= ENCODER_FP32_ATOL


def test_configs_that_would_lose_the_scale_are_refused():
    from edge_tslm.config import TSLMConfig

    with pytest.raises(ValueError, match="scale_token"):
        TSLMConfig(series_text="none")
    with pytest.raises(ValueError, match="Flamingo"):
        TSLMConfig(variant="softprompt", encoder=EncoderConfig(scale_token=True))
    assert TSLMConfig(series_text="none", encoder=EncoderConfig(scale_token=True)).encoder.scale_token
