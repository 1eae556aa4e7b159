"""The compact ONNX artifact: 4-bit decoder weights (MatMulNBits) in one external weights file.

One tiny-llama Flamingo (gates 0.5, HAR labels, ChatML) is exported once per module with
``export_artifact(..., int8=True, decoder=True, weight_bits=4)``; the tests read that artifact. The fp32 sizes
are those of the same export's graphs before compaction (recorded in the manifest), so no second export runs.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from conftest import build_tiny, open_gates, series_of, ts_text  # noqa: E402

from edge_tslm.data.hapt import ACTIVITIES  # noqa: E402
from edge_tslm.export.compact import MAX_LABEL_LOGPROB_DIFF, WEIGHTS_FILE  # noqa: E402

GRAPHS = ("decoder.onnx",)
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def compact(tmp_path_factory):
    """(torch model, artifact dir, manifest)."""
    from edge_tslm.export import export_artifact

    model = build_tiny("flamingo", "tiny-llama", labels=ACTIVITIES, task="har", fs=50.0, pre_prompt="You classify motion.")
    open_gates(model, 0.5)
    model.tokenizer.chat_template = CHATML
    out = tmp_path_factory.mktemp("compact")
    manifest = export_artifact(model, "onnx", out, int8=True, decoder=True, weight_bits=4, block_size=32)
    return model, out, manifest


def _external(path):
    m = onnx.load(str(path), load_external_data=False)
    refs = {}
    for t in m.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            ext = {e.key: e.value for e in t.external_data}
            refs[t.name] = (ext["location"], int(ext["offset"]), int(ext["length"]))
    return m, refs


def test_one_shared_weights_file(compact):
    _, out, manifest = compact
    assert {"encoder.onnx", *GRAPHS, WEIGHTS_FILE, "config.json"} <= set(manifest["files"])
    refs = {g: _external(out / g)[1] for g in GRAPHS}
    assert all(refs.values()), "the decoder keeps its weights outside the protobuf"
    assert {loc for r in refs.values() for loc, _, _ in r.values()} == {WEIGHTS_FILE}
    assert "cross.onnx" in manifest["files"] and not _external(out / "cross.onnx")[1]  # small, fp32, self-contained
    # one copy of each content in the file
    data = (out / WEIGHTS_FILE).read_bytes()
    spans = {(o, n) for r in refs.values() for _, o, n in r.values()}
    hashes = [hashlib.sha256(data[o : o + n]).hexdigest() for o, n in spans]
    assert len(hashes) == len(set(hashes))
    sw = manifest["weight_quantization"]["shared_weights"]
    assert sw["bytes_saved_by_sharing"] > 0 and sw["verified"]["locations"] == [WEIGHTS_FILE]


def test_graphs_are_4bit_and_load(compact):
    _, out, manifest = compact
    for g in GRAPHS:
        m, _ = _external(out / g)
        ops = [n.op_type for n in m.graph.node]
        inits = {t.name for t in m.graph.initializer}
        assert "MatMulNBits" in ops and "GatherBlockQuantized" in ops and "Gemm" not in ops
        weight_mm = [n for n in m.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
        # the only fp32 weight MatMuls are the zero-point fold's block sums and per-block offsets (K/32 wide)
        assert weight_mm and all("/zp_fold_" in n.name for n in weight_mm), "an fp32 weight MatMul is left"
        assert not [n for n in m.graph.node if n.op_type == "Transpose" and n.input[0] in inits], "a weight left unfolded"
        assert not [n for n in m.graph.node if n.op_type == "Gather" and n.input[0] in inits and "lm_head" in n.input[0]]
        bits = {n.name: a.i for n in m.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits"}
        kept = set(manifest["weight_quantization"]["graphs"][g]["kept_at_keep_bits"])
        assert kept and all(b == (8 if n.rsplit("_Q", 1)[0] in kept else 4) for n, b in bits.items()), bits
        ort.InferenceSession(str(out / g), providers=["CPUExecutionProvider"])  # external data resolves
    wq = manifest["weight_quantization"]
    assert wq["config"]["bits"] == 4 and wq["config"]["block_size"] == 32 and list(wq["config"]["keep_scopes"]) == ["xattn"]
    assert any("Gather" in t for t in wq["op_types_quantized"])


def test_classify_agrees_with_torch(compact):
    from edge_tslm.runtime.onnx_backend import OnnxBackend

    model, out, _ = compact
    be = OnnxBackend(out, threads=1)
    rng = np.random.default_rng(21)
    worst = 0.0
    for i in range(6):
        n = 1 + i % 3
        series = series_of(rng, *[int(rng.integers(64, 200))] * n)
        text = ts_text(n, "What is the activity?")
        with torch.no_grad():
            ref = model.classify(text, series, list(ACTIVITIES))
        got = be.classify(text, be.encode(series), ACTIVITIES)
        assert max(got, key=got.get) == max(ref, key=ref.get), (got, ref)
        worst = max(worst, max(abs(got[k] - ref[k]) for k in ACTIVITIES))
    assert worst <= MAX_LABEL_LOGPROB_DIFF


def test_manifest_parity_sqnr_and_sizes(compact):
    from edge_tslm.model.artifact import sha256_file

    _, out, manifest = compact
    wq = manifest["weight_quantization"]
    assert manifest["parity_passed"] and wq["parity"]["passed"], wq["parity"]
    assert wq["parity"]["tolerance"]["max_abs_label_logprob_diff"] == MAX_LABEL_LOGPROB_DIFF
    ls = wq["parity"]["labels_scoring"]  # "labels" scoring, through the label head, against torch's
    assert ls["label_head"] and ls["label_agreement"] == 1.0 and ls["max_abs_label_logprob_diff"] <= MAX_LABEL_LOGPROB_DIFF
    dec = next(r for r in manifest["exported"] if r["component"] == "decoder")
    assert dec["parity"]["fp32_graphs"]["passed"] and dec["precision"].startswith("int4")
    assert wq["weight_sqnr"]["tensors"] > 0 and wq["weight_sqnr"]["min_db"] > 15  # 4-bit on Gaussian weights: ~21 dB
    for name, f in manifest["files"].items():
        assert f["sha256"] == sha256_file(out / name) and f["size_bytes"] == (out / name).stat().st_size
    assert wq["compact_bytes"] < sum(wq["fp32_graph_bytes"].values())


def test_tied_embedding_reads_lm_head_bytes():
    """GatherBlockQuantized over the lm_head's MatMulNBits bytes returns the dequantized lm_head rows exactly."""
    from onnx import TensorProto, helper, numpy_helper

    from edge_tslm.export.compact import CompactConfig, dequantize_matmul_nbits, quantize_graph

    V, D = 40, 64
    w = np.random.default_rng(0).standard_normal((V, D)).astype(np.float32)  # (V, D) tied table
    g = helper.make_graph(
        [
            helper.make_node("Gather", ["emb", "ids"], ["h"], name="embed"),
            helper.make_node("MatMul", ["h", "head_t"], ["logits"], name="head"),
        ],
        "tied",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", V]), helper.make_tensor_value_info("h", TensorProto.FLOAT, ["n", D])],
        [numpy_helper.from_array(w, "emb"), numpy_helper.from_array(np.ascontiguousarray(w.T), "head_t")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    q, info = quantize_graph(m, CompactConfig(bits=4, block_size=32), sqnr=True)  # the tied head is always rtn
    assert info["tied_embedding"] and info["ops_after"]["GatherBlockQuantized"] == 1
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    mm = next(n for n in q.graph.node if n.op_type == "MatMulNBits")
    w_hat = dequantize_matmul_nbits(inits[mm.input[1]], inits[mm.input[2]], inits[mm.input[3]], D, 4)  # (D, V)
    ids = np.array([0, 7, 39, 7], np.int64)
    h, logits = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"]).run(["h", "logits"], {"ids": ids})
    np.testing.assert_allclose(h, w_hat.T[ids], atol=1e-6)
    np.testing.assert_allclose(logits, h @ w_hat, rtol=1e-4, atol=1e-4)
    assert 15 < info["weight_sqnr"]["overall_db"] < 30


def _matmul_model(w: np.ndarray, lead: tuple[str, ...] = ("n",)):
    """A one-MatMul ONNX model y = x @ w (w constant, x's leading axes named ``lead``): the unit quantize_graph rewrites."""
    from onnx import TensorProto, helper, numpy_helper

    K, N = w.shape
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="body")],
        "one_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*lead, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*lead, N])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_minmax_reproduces_q4_1_grid_weights():
    """Weights already on a 32-wide min/max affine 4-bit grid (GGUF Q4_1's form) come back exactly with "minmax";
    onnxruntime's default (integer zero points, range stretched to 0) cannot represent them."""
    from onnx import numpy_helper

    from edge_tslm.export.compact import CompactConfig, dequantize_matmul_nbits, quantize_graph

    rng = np.random.default_rng(0)
    N, K = 48, 128
    q = rng.integers(0, 16, (N, K // 32, 32))
    q[..., 0], q[..., 1] = 0, 15  # as GGUF's quantizer leaves them: the block's min and max are grid ends
    d = rng.uniform(1e-3, 1e-2, (N, K // 32, 1)).astype(np.float16).astype(np.float32)
    m = -rng.uniform(0, 0.08, (N, K // 32, 1)).astype(np.float16).astype(np.float32)
    w = np.ascontiguousarray((q * d + m).reshape(N, K).T.astype(np.float32))  # (K, N)
    sqnr = {}
    for algo in ("minmax", "rtn"):
        qm, info = quantize_graph(_matmul_model(w), CompactConfig(algorithm=algo, fold_zero_points=False), sqnr=True)
        sqnr[algo] = info["weight_sqnr"]["overall_db"]
        x = rng.standard_normal((3, K)).astype(np.float32)
        (y,) = ort.InferenceSession(qm.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        if algo == "minmax":
            inits = {t.name: numpy_helper.to_array(t) for t in qm.graph.initializer}
            w_hat = dequantize_matmul_nbits(inits["w_Q4"], inits["w_scales"], inits["w_zero_points"], K, 4)
            np.testing.assert_allclose(w_hat, w, atol=1e-6)
            np.testing.assert_allclose(y, x @ w, rtol=1e-4, atol=1e-4)
    assert sqnr["minmax"] > 100 > 40 > sqnr["rtn"], sqnr


@pytest.mark.parametrize("bits", [4, 8])
def test_accuracy_level_4_is_set_and_close(bits):
    """accuracy_level=4 (int8 activations; onnxruntime's fast CPU kernels) lands on every MatMulNBits node and
    keeps the product within quantization error of fp32."""
    from onnx import helper

    from edge_tslm.export.compact import CompactConfig, quantize_graph

    rng = np.random.default_rng(1)
    K, N = 128, 64
    w = (rng.standard_normal((K, N)) * 0.05).astype(np.float32)
    qm, _ = quantize_graph(_matmul_model(w), CompactConfig(bits=bits, algorithm="rtn", accuracy_level=4))
    nodes = [n for n in qm.graph.node if n.op_type == "MatMulNBits"]
    assert nodes and all({a.name: helper.get_attribute_value(a) for a in n.attribute}.get("accuracy_level") == 4 for n in nodes)
    x = rng.standard_normal((5, K)).astype(np.float32)
    (y,) = ort.InferenceSession(qm.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    rel = np.linalg.norm(y - x @ w) / np.linalg.norm(x @ w)
    assert rel < (0.15 if bits == 4 else 0.02), rel


@pytest.mark.parametrize("accuracy_level", [None, 4])
def test_folded_zero_points_compute_the_same_product(accuracy_level):
    """Folding the float zero points out (fast kernels) leaves x @ W unchanged: exactly in fp32 compute, within
    the int8 activation rounding at accuracy_level 4. No float zero point is left."""
    from onnx import TensorProto

    from edge_tslm.export.compact import CompactConfig, quantize_graph

    rng = np.random.default_rng(2)
    K, N = 96, 40
    w = (rng.standard_normal((K, N)) * 0.05 + 0.01).astype(np.float32)
    x = rng.standard_normal((2, 3, K)).astype(np.float32)
    ys = {}
    for fold in (False, True):
        qm, info = quantize_graph(_matmul_model(w, ("b", "t")), CompactConfig(fold_zero_points=fold, fold_accuracy_level=accuracy_level if fold else None))
        (ys[fold],) = ort.InferenceSession(qm.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        nodes = [n for n in qm.graph.node if n.op_type == "MatMulNBits"]
        zp = {t.name: t for t in qm.graph.initializer}[nodes[0].input[3]]
        assert len(nodes) == 1 and (zp.data_type == TensorProto.UINT8) == fold  # float zero points only unfolded
    assert info["zero_points_folded"]
    tol = 1e-5 if accuracy_level is None else 2e-2
    rel = np.linalg.norm(ys[True] - ys[False]) / np.linalg.norm(ys[False])
    assert rel < tol, rel


@pytest.mark.parametrize("accuracy_level", [None, 4])
def test_packed_projections_compute_the_same_products(accuracy_level):
    """Three projections of one input (q/k/v) and one of another: packing folds the three into ONE MatMulNBits
    over the stacked weights + one correction + a Split, with the unpacked outputs under their own names."""
    from onnx import TensorProto, helper, numpy_helper

    from edge_tslm.export.compact import CompactConfig, quantize_graph

    rng = np.random.default_rng(3)
    K, Ns = 64, (48, 16, 16)
    ws = [(rng.standard_normal((k, n)) * 0.05 + 0.01).astype(np.float32) for k, n in ((K, Ns[0]), (K, Ns[1]), (K, Ns[2]), (Ns[0], K))]
    nodes = [helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"], name=f"proj{i}") for i in range(3)]
    nodes.append(helper.make_node("MatMul", ["y0", "w3"], ["y3"], name="out_proj"))  # another input: not packed
    g = helper.make_graph(
        nodes, "qkv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["t", K])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(4)],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(ws)],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    x = rng.standard_normal((5, K)).astype(np.float32)
    outs, counts = {}, {}
    for fold in (False, True):
        cfg = CompactConfig(fold_zero_points=fold, fold_accuracy_level=accuracy_level if fold else None, pack_projections=True)
        qm, info = quantize_graph(model, cfg)
        outs[fold] = ort.InferenceSession(qm.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        counts[fold] = sum(n.op_type == "MatMulNBits" for n in qm.graph.node)
    assert counts == {False: 4, True: 2} and len(info["zero_points_folded"]) == 4
    tol = 1e-5 if accuracy_level is None else 2e-2
    for a, b in zip(outs[True], outs[False]):
        assert a.shape == b.shape and np.linalg.norm(a - b) / np.linalg.norm(b) < tol


def test_weight_bits_needs_the_decoder(tmp_path):
    from edge_tslm.export import export_artifact
    from edge_tslm.export.compact import CompactConfig

    with pytest.raises(ValueError, match="decoder"):
        export_artifact(build_tiny(), "onnx", tmp_path, weight_bits=4)
    with pytest.raises(ValueError, match="block_size"):
        CompactConfig(block_size=24)
    with pytest.raises(ValueError, match="bits"):
        CompactConfig(bits=3)


def test_cli_weight_bits_without_decoder_fails(tmp_path):
    import typer
    from typer.testing import CliRunner

    from edge_tslm.cli.export import export
    from edge_tslm.model.artifact import save_pretrained

    src = save_pretrained(build_tiny("flamingo", "tiny-llama"), tmp_path / "model")
    app = typer.Typer()
    app.command()(export)
    res = CliRunner().invoke(app, ["--model", str(src), "--out", str(tmp_path / "o"), "--weight-bits", "4", "--parity-windows", "0"])
    assert res.exit_code != 0 and "decoder" in str(res.exception)
    assert not (tmp_path / "o" / "encoder.onnx").exists()


def test_manifest_is_json_serialisable(compact):
    _, out, manifest = compact
    assert json.loads((out / "manifest.json").read_text())["weight_quantization"]["config"]["bits"] == 4


def test_decoder_halves_compute_what_the_one_graph_does(compact):
    """decoder_lower.onnx + decoder_upper.onnx (cut at the first fusion layer) give decoder.onnx's numbers: the same
    label scores, the same prefill logits and the same greedy tokens; the weights file holds each weight once."""
    from edge_tslm.export import spec
    from edge_tslm.runtime.onnx_backend import OnnxBackend

    model, out, manifest = compact
    assert {spec.DECODER_LOWER_GRAPH, spec.DECODER_UPPER_GRAPH} <= set(manifest["files"])
    lower, _ = _external(out / spec.DECODER_LOWER_GRAPH)
    upper, _ = _external(out / spec.DECODER_UPPER_GRAPH)
    split = min(model.insertion)
    assert [i.name for i in lower.graph.input][3:] == [f"past_{kv}.{i}" for i in range(split) for kv in ("key", "value")]
    assert not any(i.name.startswith("cross_") or i.name == spec.DEC_TS_POSITIONS for i in lower.graph.input), \
        "the lower half never sees the media"
    assert {o.name for o in upper.graph.output} >= {spec.DEC_LOGITS, f"present_key.{split}"}
    one, two = OnnxBackend(out, threads=1, split=False), OnnxBackend(out, threads=1)
    assert two.split and two.decoder is None and one.lower is None, "a backend loads the halves or the whole, not both"
    rng = np.random.default_rng(3)
    labels = list(ACTIVITIES)
    # the same text each window (as with series_text "none"): window 1 fills the prompt-head cache, window 2 is the
    # first with that head cached, and from window 3 on the lower half's output is reused
    for k in range(4):
        series = series_of(rng, 64, 48)
        e1, e2 = one.encode(series), two.encode(series)
        s1, s2 = one.classify(ts_text(2), e1, labels), two.classify(ts_text(2), e2, labels)
        assert max(abs(s1[lab] - s2[lab]) for lab in labels) < 1e-4
        l1, _ = one.prefill(ts_text(2), e1)
        l2, _ = two.prefill(ts_text(2), e2)
        np.testing.assert_allclose(l1, l2, atol=1e-4)
    assert two.lower_hits == 2 and one.lower_hits == 0
    two.classify(ts_text(2, "Other?"), two.encode(series), labels)  # new text: the lower half runs again
    assert two.lower_hits == 2
    assert one.generate(ts_text(2), e1, 8, stop=False) == two.generate(ts_text(2), e2, 8, stop=False)


def test_label_head_scores_what_the_lm_head_does(compact):
    """The compact graphs carry a label head over the tokens where the labels part ways; "labels" scoring through it
    gives the lm_head path's scores and the torch model's, a distribution over the labels, from 3 fed label tokens."""
    import json

    from edge_tslm.export import spec
    from edge_tslm.export.label_head import label_head_tokens
    from edge_tslm.model.batch import encode_target
    from edge_tslm.runtime.onnx_backend import OnnxBackend

    model, out, manifest = compact
    want = label_head_tokens(lambda t: encode_target(model.tokenizer, t), ACTIVITIES)
    for name in (spec.DECODER_GRAPH, spec.DECODER_UPPER_GRAPH):
        m, _ = _external(out / name)
        assert {spec.DEC_LABEL_INDEX, spec.DEC_LABEL_TOKENS} <= {i.name for i in m.graph.input}
        assert json.loads({p.key: p.value for p in m.metadata_props}[spec.LABEL_HEAD_META]) == want
    lower, _ = _external(out / spec.DECODER_LOWER_GRAPH)
    assert spec.DEC_LABEL_INDEX not in {i.name for i in lower.graph.input}
    assert manifest["weight_quantization"]["label_head"][spec.DECODER_UPPER_GRAPH]["token_ids"] == want
    head = OnnxBackend(out, threads=1, label_scoring="labels")
    rows = OnnxBackend(out, threads=1, label_scoring="labels")
    rows.label_head = {}  # as an artifact without a label head: the lm_head's rows
    one = OnnxBackend(out, threads=1, label_scoring="labels", split=False)
    rng = np.random.default_rng(5)
    for k in range(3):
        series = series_of(rng, 96, 96, 96)
        text = ts_text(3, "What is the activity?")
        with torch.no_grad():
            ref = model.classify(text, series, list(ACTIVITIES), scoring="labels")
        got = [be.classify(text, be.encode(series), ACTIVITIES) for be in (head, rows, one)]
        assert head.last_timings["label_head"] == 1.0 and rows.last_timings["label_head"] == 0.0
        full = OnnxBackend(out, threads=1)
        full.classify(text, full.encode(series), ACTIVITIES)
        assert head.last_timings["label_tokens"] < full.last_timings["label_tokens"]  # fewer label tokens fed
        assert np.isclose(sum(np.exp(v) for v in got[0].values()), 1.0)
        assert max(abs(got[0][lab] - got[2][lab]) for lab in ACTIVITIES) < 1e-4  # halves vs one graph
        assert max(abs(got[0][lab] - got[1][lab]) for lab in ACTIVITIES) < 0.05  # fp32 rows vs int8-activation lm_head
        assert max(abs(got[0][lab] - ref[lab]) for lab in ACTIVITIES) <= MAX_LABEL_LOGPROB_DIFF
    assert head.generate(ts_text(1), head.encode(series_of(rng, 64)), 4, stop=False)  # generation feeds the head empty


def _logits_model(w: np.ndarray):
    """hidden (1, T, D) -> Gather(logit_index, axis=1) -> MatMul(w (D, V)) -> logits: a decoder's last step."""
    from onnx import TensorProto, helper, numpy_helper

    from edge_tslm.export import spec

    D, V = w.shape
    g = helper.make_graph(
        [helper.make_node("Gather", ["hidden", spec.DEC_LOGIT_INDEX], ["picked"], name="pick", axis=1),
         helper.make_node("MatMul", ["picked", "w"], [spec.DEC_LOGITS], name="lm_head")],
        "head",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, "T", D]),
         helper.make_tensor_value_info(spec.DEC_LOGIT_INDEX, TensorProto.INT64, ["K"])],
        [helper.make_tensor_value_info(spec.DEC_LOGITS, TensorProto.FLOAT, [1, "K", V])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_label_head_on_an_fp32_lm_head_reads_its_columns():
    import onnxruntime as ort

    from edge_tslm.export import spec
    from edge_tslm.export.label_head import add_label_head

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 40)).astype(np.float32)
    m = _logits_model(w)
    ids = [3, 17, 39]
    assert add_label_head(m, ids)["token_ids"] == ids
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    h = rng.standard_normal((1, 5, 8)).astype(np.float32)
    logits, lab = sess.run([spec.DEC_LOGITS, spec.DEC_LABEL_LOGITS], {
        "hidden": h, spec.DEC_LOGIT_INDEX: np.array([4], np.int64),
        spec.DEC_LABEL_INDEX: np.array([1, 4], np.int64), spec.DEC_LABEL_TOKENS: np.array([2, 0], np.int64)})
    np.testing.assert_allclose(lab[0], h[0, [1, 4]] @ w[:, [39, 3]], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lab[0, 1], logits[0, 0, [39, 3]], rtol=1e-5, atol=1e-5)


def test_a_label_head_the_decoder_cannot_take_is_an_error(tmp_path):
    """compact_decoder asked for a label head on a decoder.onnx without the logit_index -> lm_head step says so."""
    from edge_tslm.export.compact import CompactConfig, compact_decoder

    onnx.save(_matmul_model((np.random.default_rng(1).standard_normal((64, 96)) * 0.02).astype(np.float32)),
              str(tmp_path / "decoder.onnx"))
    with pytest.raises(ValueError, match="label head"):
        compact_decoder(tmp_path, CompactConfig(), label_tokens=[1, 2])
