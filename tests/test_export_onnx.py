"""ONNX export of the Flamingo encoder + resampler (and the fused decoder): graph contract and parity with eager."""

from __future__ import annotations

import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from conftest import build_tiny  # noqa: E402

from edge_tslm.constants import ONNX_LATENTS, ONNX_SERIES, ONNX_SERIES_INDEX, ONNX_SERIES_MASK  # noqa: E402
from edge_tslm.export.spec import ENCODER_FP32_ATOL, ENCODER_INT8_MIN_COSINE  # noqa: E402


@pytest.fixture(scope="module")
def tiny_flamingo():
    return build_tiny("flamingo", "tiny-llama")


@pytest.fixture(scope="module")
def fp32_export(tiny_flamingo, tmp_path_factory):
    from edge_tslm.export.onnx import export_encoder_onnx

    out = tmp_path_factory.mktemp("onnx_fp32") / "encoder.onnx"
    return export_encoder_onnx(tiny_flamingo, out)


@pytest.fixture(scope="module")
def int8_export(tiny_flamingo, tmp_path_factory):
    from edge_tslm.export.onnx import export_encoder_onnx

    out = tmp_path_factory.mktemp("onnx_int8") / "encoder.onnx"
    return export_encoder_onnx(tiny_flamingo, out, int8=True)


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_encoder_graph_contract(fp32_export):
    path = fp32_export.path
    assert sorted(p.name for p in path.parent.iterdir()) == ["encoder.onnx"], "one self-contained file"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert any(o.domain in ("", "ai.onnx") and o.version == 18 for o in model.opset_import)
    ins = {i.name: i for i in model.graph.input}
    assert list(ins) == [ONNX_SERIES, ONNX_SERIES_MASK, ONNX_SERIES_INDEX]
    assert ins[ONNX_SERIES].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert ins[ONNX_SERIES_MASK].type.tensor_type.elem_type == onnx.TensorProto.BOOL
    assert ins[ONNX_SERIES_INDEX].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert _dims(ins[ONNX_SERIES]) == ["batch", "length"] == _dims(ins[ONNX_SERIES_MASK])
    assert _dims(ins[ONNX_SERIES_INDEX]) == ["batch"]
    (out,) = model.graph.output
    assert out.name == ONNX_LATENTS and _dims(out) == ["batch", 8, 32]
    assert fp32_export.files["encoder.onnx"]["size_bytes"] == path.stat().st_size


def test_encoder_fp32_parity_three_lengths(fp32_export):
    p = fp32_export.parity
    assert p["passed"], p
    assert set(p["cases"]) == {"L=4", "L=127", "L=4500"}  # one patch, a partial patch, a long record
    assert p["max_abs_diff"] <= ENCODER_FP32_ATOL
    assert p["tolerance"]["max_abs_diff"] == ENCODER_FP32_ATOL


def test_encoder_int8_smaller_and_close(int8_export, fp32_export):
    p = int8_export.parity
    assert p["passed"], p
    assert p["min_cosine"] >= ENCODER_INT8_MIN_COSINE
    assert int8_export.precision == "int8"
    assert int8_export.size_bytes < fp32_export.size_bytes
    ops = {n.op_type for n in onnx.load(str(int8_export.path)).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear"}, ops


def test_encoder_onnx_other_batch_and_padding(fp32_export, tiny_flamingo):
    """A batch size and length the export never saw, with a padded row, through a fresh session."""
    import numpy as np

    enc = tiny_flamingo.series_encoder
    sess = ort.InferenceSession(str(fp32_export.path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 61, generator=g)
    m = torch.ones(5, 61, dtype=torch.bool)
    m[2, 30:] = False
    idx = torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        ref = enc(x, m, idx).numpy()
    (out,) = sess.run(None, {ONNX_SERIES: x.numpy(), ONNX_SERIES_MASK: m.numpy(), ONNX_SERIES_INDEX: idx.numpy()})
    assert np.abs(out - ref).max() <= ENCODER_FP32_ATOL


def test_export_patches_restore_eager_checks(tiny_flamingo):
    """The export-only patch drops the encoder's input checks; outside the context they are back."""
    from edge_tslm.export.onnx import export_patches

    enc = tiny_flamingo.series_encoder
    bad = torch.full((1,), enc.encoder.cfg.max_series)
    x, m = torch.randn(1, 16), torch.ones(1, 16, dtype=torch.bool)
    with export_patches(enc):
        assert "forward" in vars(enc.encoder)
    assert "forward" not in vars(enc.encoder)
    with pytest.raises(ValueError, match="max_series"):
        enc(x, m, bad)


def test_export_refuses_a_model_without_series_encoder():
    from edge_tslm.export.onnx import export_encoder_onnx

    with pytest.raises(TypeError, match="SeriesEncoder"):
        export_encoder_onnx(torch.nn.Linear(2, 2), "unused.onnx")


# ---------------------------------------------------------------- fused decoder (cross + one decoder graph, KV cache)


@pytest.fixture(scope="module")
def decoder_export(tmp_path_factory):
    from conftest import open_gates

    from edge_tslm.export.onnx import export_decoder_onnx

    model = build_tiny("flamingo", "tiny-llama")
    open_gates(model, 0.7)  # the series must reach the logits, or parity would not test the cross-attention
    out = tmp_path_factory.mktemp("onnx_decoder")
    return model, export_decoder_onnx(model, out)


def test_decoder_prompt_prefix_trie_and_decode_steps_match_eager(decoder_export):
    from edge_tslm.export.spec import DECODER_FP32_ATOL

    _, report = decoder_export
    p = report.parity
    assert p["passed"], p
    assert {
        "prompt_from_empty_cache", "prompt_after_cached_prefix", "prompt_batch2", "label_trie_one_row",
        "decode_1", "decode_2", "decode_3",
    } <= set(p["cases"])
    assert p["max_abs_diff"] <= DECODER_FP32_ATOL
    assert sorted(report.files) == ["cross.onnx", "decoder.onnx"]


def test_traced_attention_keeps_the_decomposed_graph_and_its_parity(tmp_path):
    """attention='traced' is the graph before the fused ops (opset 18, no Attention/RotaryEmbedding) and still
    matches eager torch; the fused graph and the traced one give the same logits."""
    import numpy as np

    from conftest import open_gates

    from edge_tslm.export.onnx import export_decoder_onnx
    from edge_tslm.export.spec import DECODER_FP32_ATOL

    model = build_tiny("flamingo", "tiny-llama")
    open_gates(model, 0.7)
    traced = export_decoder_onnx(model, tmp_path / "traced", attention="traced")
    assert traced.parity["passed"] and traced.parity["max_abs_diff"] <= DECODER_FP32_ATOL
    dec = onnx.load(str(tmp_path / "traced" / "decoder.onnx"))
    ops = {n.op_type for n in dec.graph.node}
    assert not ops & {"Attention", "RotaryEmbedding"} and {"Softmax", "Neg"} <= ops
    assert any(o.domain in ("", "ai.onnx") and o.version == 18 for o in dec.opset_import)
    fused = export_decoder_onnx(model, tmp_path / "fused", attention="fused", validate=False)
    assert any(o.domain in ("", "ai.onnx") and o.version == 23 for o in onnx.load(str(fused.path / "decoder.onnx")).opset_import)
    feeds = {}
    sess = {k: ort.InferenceSession(str(tmp_path / k / "decoder.onnx"), providers=["CPUExecutionProvider"]) for k in ("traced", "fused")}
    xs = ort.InferenceSession(str(tmp_path / "traced" / "cross.onnx"), providers=["CPUExecutionProvider"])
    media = np.random.default_rng(0).standard_normal((1, model.cfg.resampler.num_latents, model.cfg.encoder.dim)).astype(np.float32)
    cross = dict(zip([o.name for o in xs.get_outputs()], xs.run(None, {xs.get_inputs()[0].name: media})))
    for i in sess["traced"].get_inputs():
        if i.name in cross:
            feeds[i.name] = cross[i.name]
        elif i.name.startswith("past_"):
            feeds[i.name] = np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
    ids = np.array([[5, 6, model.ts_id, 7, 8, 9]], dtype=np.int64)
    feeds.update(input_ids=ids, position_ids=np.arange(6)[None], attention_mask=np.tril(np.ones((6, 6), bool))[None, None],
                 ts_positions=np.array([[2]]), logit_index=np.array([5]))
    a, b = (sess[k].run(["logits"], feeds)[0] for k in ("traced", "fused"))
    assert np.abs(a - b).max() <= DECODER_FP32_ATOL


def test_fused_attention_covers_llama_only():
    from edge_tslm.export.onnx_attention import onnx_attention_unsupported

    assert onnx_attention_unsupported(build_tiny("flamingo", "tiny-llama").lm) is None
    assert "gemma3" in onnx_attention_unsupported(build_tiny("flamingo", "tiny-gemma3").lm)


def test_decoder_attention_option_is_checked():
    from edge_tslm.export.onnx import export_decoder_onnx

    with pytest.raises(ValueError, match="attention must be"):
        export_decoder_onnx(build_tiny("flamingo", "tiny-llama"), "/nonexistent", attention="flash")


def test_decoder_graph_io_and_media_matters(decoder_export):
    """KV names and axes as documented, and the media really flow through the exported cross-attention."""
    import numpy as np

    from edge_tslm.export import spec

    model, report = decoder_export
    cross = onnx.load(str(report.path / "cross.onnx"))
    dec = onnx.load(str(report.path / "decoder.onnx"))
    onnx.checker.check_model(cross, full_check=True)  # decoder.onnx passed the checker before its RMSNorm fusion
    n_norms = 2 * model.lm.config.num_hidden_layers + 1
    assert sum(n.op_type in ("SimplifiedLayerNormalization", "RMSNormalization") for n in dec.graph.node) == n_norms
    # the LM's self-attention as ONNX's fused ops: one Attention and two RotaryEmbedding per layer, no decomposed rotary
    ops = [n.op_type for n in dec.graph.node]
    layers = model.lm.config.num_hidden_layers
    assert ops.count("RotaryEmbedding") == 2 * layers and ops.count("Attention") >= layers and "Neg" not in ops
    assert not any(n.op_type == "Pow" for n in dec.graph.node)
    cross_out = {o.name: _dims(o) for o in cross.graph.output}
    dec_in = {i.name: _dims(i) for i in dec.graph.input}
    dec_out = {o.name: _dims(o) for o in dec.graph.output}
    assert dec_out["logits"][0] == "batch" and dec_out["logits"][2] == model.lm.config.vocab_size
    assert dec_out["present_key.0"][:2] == ["batch", 2] and dec_out["present_key.0"][3] == 16
    assert all(f"cross_key.{i}" in cross_out and f"cross_value.{i}" in dec_in for i in model.insertion)
    assert dec_in["input_ids"] == ["batch", "tokens"] == dec_in["position_ids"]
    assert dec_in["attention_mask"] == ["batch", 1, "tokens", "tokens"]
    assert dec_in["past_key.0"] == ["batch", 2, "past", 16] == dec_in["past_value.3"]
    assert dec_in["logit_index"] == ["logit_rows"]
    xs = ort.InferenceSession(str(report.path / "cross.onnx"), providers=["CPUExecutionProvider"])
    sess = ort.InferenceSession(str(report.path / "decoder.onnx"), providers=["CPUExecutionProvider"])
    n_lat, dim = model.cfg.resampler.num_latents, model.cfg.encoder.dim
    ids = np.array([[5, 6, model.ts_id, 7, 8, 9]], dtype=np.int64)
    empty = np.zeros((1, 2, 0, 16), np.float32)

    def logits(media):
        kv = dict(zip([o.name for o in cross.graph.output], xs.run(None, {spec.DEC_MEDIA: media})))
        feed = {
            spec.DEC_INPUT_IDS: ids,
            spec.DEC_POSITION_IDS: np.arange(6)[None],
            spec.DEC_ATTENTION_MASK: spec.causal_mask(6),
            spec.DEC_TS_POSITIONS: np.array([[2]], dtype=np.int64),
            spec.DEC_LOGIT_INDEX: np.array([5]),
            **{i.name: empty for i in dec.graph.input if i.name.startswith("past_")},
            **kv,
        }
        return sess.run(["logits"], feed)[0]

    media = np.random.default_rng(0).standard_normal((1, n_lat, dim)).astype(np.float32)
    assert np.abs(logits(media) - logits(np.zeros_like(media))).max() > 1e-3


def test_decoder_export_refuses_sliding_window_backbones():
    from edge_tslm.export.onnx import export_decoder_onnx

    with pytest.raises(NotImplementedError, match="gemma3_text"):
        export_decoder_onnx(build_tiny("flamingo", "tiny-gemma3"), "unused")


# ---------------------------------------------------------------- CLI: artifact directory + manifest


def test_cli_export_writes_manifest(tmp_path):
    import json

    import typer
    from typer.testing import CliRunner

    from edge_tslm.cli.export import export
    from edge_tslm.model.artifact import save_pretrained

    src = save_pretrained(build_tiny("flamingo", "tiny-llama"), tmp_path / "model")
    app = typer.Typer()
    app.command()(export)
    out = tmp_path / "onnx"
    res = CliRunner().invoke(app, ["--model", str(src), "--target", "onnx", "--out", str(out), "--int8"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "onnx" and manifest["parity_passed"]
    assert set(manifest["files"]) == {"encoder.onnx", "config.json"}
    (enc,) = manifest["exported"]
    assert enc["component"] == "encoder" and enc["precision"] == "int8"
    assert enc["parity"]["passed"] and enc["files"]["encoder.onnx"] == manifest["files"]["encoder.onnx"]


def test_decoder_export_with_one_shared_fusion_block(tmp_path):
    """FusionConfig.shared: one block at every insertion point -> one cross K/V pair, still eager parity."""
    import dataclasses

    from conftest import open_gates

    from edge_tslm.export.onnx import export_decoder_onnx, fusion_blocks

    cfg_fusion = build_tiny().cfg.fusion
    if "shared" not in {f.name for f in dataclasses.fields(cfg_fusion)}:
        pytest.skip("FusionConfig has no 'shared' option in this tree")
    model = build_tiny("flamingo", "tiny-llama", fusion=dataclasses.replace(cfg_fusion, shared=True))
    assert len(model.insertion) > 1 and len(fusion_blocks(model)) == 1
    open_gates(model, 0.7)
    rep = export_decoder_onnx(model, tmp_path)
    assert rep.parity["passed"], rep.parity
    dec_inputs = [i.name for i in onnx.load(str(tmp_path / "decoder.onnx")).graph.input]
    assert [n for n in dec_inputs if n.startswith("cross_")] == [f"cross_key.{model.insertion[0]}", f"cross_value.{model.insertion[0]}"]
