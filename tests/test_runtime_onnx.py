"""The torch-free ONNX Runtime backend against the torch model it was exported from.

One tiny-llama Flamingo (gates opened to 0.5 so the series reach the logits, a ChatML chat template and a
custom system prompt so the prompt path is the real one) is exported once per module with
``export_artifact(..., decoder=True)``; then: prompt ids equal ``batch.collate``'s, classify log-likelihoods
equal ``model.classify`` (1e-3), greedy text equals ``model.generate``, a stream gives the torch backend's
window scores, and a process with torch and transformers poisoned loads and runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from conftest import build_tiny, open_gates, series_of, ts_text  # noqa: E402

from edge_tslm.data.hapt import ACTIVITIES  # noqa: E402

FS = 50.0
CLASSIFY_ATOL = 1e-3
SMOLLM2_DIR = Path.home() / ".cache" / "edge_tslm" / "backbones" / "smollm2-135m"
CHATML = (SMOLLM2_DIR / "chat_template.jinja").read_text() if (SMOLLM2_DIR / "chat_template.jinja").is_file() else (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(torch model, artifact dir): tiny-llama Flamingo, gates 0.5, ChatML template, decoder exported."""
    from edge_tslm.export import export_artifact

    model = build_tiny("flamingo", "tiny-llama", labels=ACTIVITIES, task="har", fs=FS, pre_prompt="You classify motion.")
    open_gates(model, 0.5)
    model.tokenizer.chat_template = CHATML
    out = tmp_path_factory.mktemp("onnx_artifact")
    manifest = export_artifact(model, "onnx", out, decoder=True)
    assert manifest["parity_passed"]
    return model, out


@pytest.fixture(scope="module")
def backend(exported):
    from edge_tslm.runtime.onnx_backend import OnnxBackend

    return OnnxBackend.from_pretrained(exported[1], threads=1)


# ---------------------------------------------------------------- tokenizer: the torch path's ids, exactly


def _texts():
    return [ts_text(1), ts_text(3, "What is the activity? Answer: walking or not."), "no series at all, ünïcödé\n"]


@pytest.mark.parametrize("use_jinja", [None, False], ids=["jinja2", "builtin-chatml"])
def test_prompt_ids_equal_collate(exported, use_jinja):
    from edge_tslm.model.batch import collate, encode_target
    from edge_tslm.runtime.tokenizer import PromptTokenizer

    model, art = exported
    pt = PromptTokenizer(art / "tokenizer", use_jinja=use_jinja)
    assert pt.renderer == ("jinja2" if use_jinja is None else "chatml")
    for text in _texts():
        for system in ("", "You classify motion."):
            n = text.count("<ts>")
            b = collate(model.tokenizer, [text], [series_of(np.random.default_rng(0), *[8] * n)], system=system)
            assert pt.prompt_ids(text, system=system) == b.input_ids[0].tolist()
            assert pt.prompt_ids(text, chat_format=False) == collate(
                model.tokenizer, [text], [series_of(np.random.default_rng(0), *[8] * n)], chat_format=False
            ).input_ids[0].tolist()
    for lab in ACTIVITIES:
        assert pt.encode_target(f"Answer: {lab}") == encode_target(model.tokenizer, f"Answer: {lab}")
    ids = pt.prompt_ids(_texts()[1])
    assert pt.decode(ids) == model.tokenizer.decode(ids, skip_special_tokens=True)


def test_bos_rule_matches_encode_prompt(tmp_path):
    """A backbone whose tokenizer adds BOS gets exactly one (prepended, never doubled); one without gets none."""
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    from edge_tslm.backbones import tiny_tokenizer
    from edge_tslm.model.batch import encode_prompt
    from edge_tslm.model.tokens import add_ts_tokens
    from edge_tslm.runtime.tokenizer import PromptTokenizer

    base = tiny_tokenizer()
    tk = base.backend_tokenizer
    tk.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", base.bos_token_id)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    add_ts_tokens(tok)
    tok.save_pretrained(str(tmp_path))
    pt = PromptTokenizer(tmp_path)
    assert pt.wants_bos and tok("a").input_ids[0] == tok.bos_token_id
    for rendered in ("hello <ts> there", "<s>already has one"):
        assert pt.encode_prompt(rendered) == encode_prompt(tok, rendered)
        assert pt.encode_prompt(rendered).count(tok.bos_token_id) == 1


def test_builtin_renderer_only_for_chatml(tmp_path):
    from edge_tslm.runtime.tokenizer import PromptTokenizer, is_chatml

    assert is_chatml(CHATML)
    gemma_like = "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    assert not is_chatml(gemma_like)
    from edge_tslm.backbones import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.chat_template = gemma_like
    tok.save_pretrained(str(tmp_path))
    with pytest.raises(ImportError, match="jinja2"):
        PromptTokenizer(tmp_path, use_jinja=False)


@pytest.mark.slow
def test_prompt_ids_equal_collate_smollm2(tmp_path):
    """The real SmolLM2-135M tokenizer (cached by edge_tslm.backbones): ids equal the transformers path's."""
    if not (SMOLLM2_DIR / "tokenizer.json").is_file():
        pytest.skip(f"{SMOLLM2_DIR} not cached (load_backbone('smollm2-135m') once)")
    from transformers import AutoTokenizer

    from edge_tslm.model.batch import collate, encode_target
    from edge_tslm.model.tokens import add_ts_tokens
    from edge_tslm.prompts import build_model_input
    from edge_tslm.runtime.stream import task_question
    from edge_tslm.runtime.tokenizer import PromptTokenizer
    from edge_tslm.signals import SignalMeta, validate

    tok = AutoTokenizer.from_pretrained(str(SMOLLM2_DIR))
    add_ts_tokens(tok)
    tok.save_pretrained(str(tmp_path))
    x = np.random.default_rng(0).normal(0, 0.3, (3, 128)).astype(np.float32)
    mi = build_model_input(validate(x, SignalMeta(fs=FS, unit="g", channels=("x", "y", "z")), task_question("har")))
    for use_jinja in (None, False):
        pt = PromptTokenizer(tmp_path, use_jinja=use_jinja)
        for text, series in [(mi.text, list(mi.series)), *[(t, [x[0]] * t.count("<ts>")) for t in _texts()]]:
            for system in ("", "You read accelerometer windows."):
                b = collate(tok, [text], [series], system=system)
                assert pt.prompt_ids(text, system=system) == b.input_ids[0].tolist()
        for lab in ACTIVITIES:
            assert pt.encode_target(f"Answer: {lab}") == encode_target(tok, f"Answer: {lab}")
        ids = pt.prompt_ids(mi.text)
        assert pt.decode(ids) == tok.decode(ids, skip_special_tokens=True)


# ---------------------------------------------------------------- the backend against the torch model


def test_backend_attributes_and_registry(exported, backend):
    from edge_tslm.runtime.backend import BackendUnavailable, load_backend

    model, art = exported
    assert backend.name == "onnx" and backend.labels == ACTIVITIES and backend.fs == FS and backend.task == "har"
    assert backend.min_length == model.cfg.encoder.patch_len
    assert backend.stop_ids == model.stop_ids()
    assert load_backend(art, "auto", device="cpu").name == "onnx"  # auto prefers ONNX when the artifact has .onnx files
    assert load_backend(art, "onnx", device="auto").providers[-1] == "CPUExecutionProvider"
    with pytest.raises(BackendUnavailable, match="device"):
        load_backend(art, "onnx", device="tpu")


@pytest.mark.parametrize("lengths", [(128, 100, 61), (1500, 40)], ids=["three", "ecg-and-tachogram"])
def test_encode_media_equals_encode_media(exported, backend, lengths):
    """Both encode series in groups of similar length (edge_tslm.length_groups), one encoder call per group."""
    model, _ = exported
    series = series_of(np.random.default_rng(3), *lengths)
    media, cross = backend.encode(series).value
    b = model._batch(ts_text(len(lengths)), series)
    with torch.no_grad():
        ref = model.encode_media(b.series, b.series_mask).numpy()
    assert media.shape == ref.shape == (1, len(lengths) * model.cfg.resampler.num_latents, model.cfg.encoder.dim)
    assert np.abs(media - ref).max() < 1e-4
    assert len(cross) == 2 * len(model.insertion) and cross[0].shape[2] == media.shape[1]  # (1, H, S * N, d)


@pytest.mark.parametrize(
    "labels", [ACTIVITIES, ("walk", "walking"), ("yes", "no")], ids=["har", "prefix-of-another", "two"]
)
def test_classify_matches_torch(exported, backend, labels):
    model, _ = exported
    rng = np.random.default_rng(7)
    for n in (1, 3):
        series = series_of(rng, *[128] * n)
        text = ts_text(n, "What is the activity?")
        with torch.no_grad():
            ref = model.classify(text, series, list(labels))
        got = backend.classify(text, backend.encode(series), labels)
        assert list(got) == list(labels)
        diff = max(abs(got[k] - ref[k]) for k in labels)
        assert diff <= CLASSIFY_ATOL, (diff, got, ref)
    assert {"prefill_ms", "label_tokens", "encode_ms"} <= set(backend.last_timings)


@pytest.mark.parametrize(
    "labels", [ACTIVITIES, ("walk", "walking"), ("yes", "no")], ids=["har", "prefix-of-another", "two"]
)
def test_labels_scoring_matches_torch(exported, labels):
    """--label-scoring labels on an artifact without a label head (this fp32 export): the lm_head's logits at the
    prefixes where the labels part ways give the torch model's classify(scoring="labels")."""
    from edge_tslm.runtime.onnx_backend import OnnxBackend

    model, out = exported
    be = OnnxBackend.from_pretrained(out, threads=1, label_scoring="labels")
    assert not be.label_head
    rng = np.random.default_rng(8)
    series = series_of(rng, 128, 128)
    text = ts_text(2, "What is the activity?")
    with torch.no_grad():
        ref = model.classify(text, series, list(labels), scoring="labels")
    got = be.classify(text, be.encode(series), labels)
    assert max(abs(got[k] - ref[k]) for k in labels) <= CLASSIFY_ATOL, (got, ref)
    assert np.isclose(sum(np.exp(v) for v in got.values()), 1.0)


def test_backend_refuses_a_tokenizer_with_another_answer_end_token(exported, tmp_path):
    """config.answer_end_token (the token the training targets ended with) must be the shipped tokenizer's eos."""
    import json
    import shutil

    from edge_tslm.runtime.onnx_backend import OnnxBackend

    _, art = exported
    odd = tmp_path / "odd-end"
    shutil.copytree(art, odd)
    cfg = json.loads((odd / "config.json").read_text())
    cfg["answer_end_token"] = "<|not_this_one|>"
    (odd / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="classify would score the wrong end token"):
        OnnxBackend(odd, threads=1)


def test_label_offsets_written_into_the_artifact_reach_classify(exported, backend, tmp_path):
    """`edge-tslm calibrate` writes config.label_offsets (manifest kept true); the backend adds them as torch does."""
    import json
    import shutil

    from edge_tslm.model.artifact import sha256_file, write_label_offsets
    from edge_tslm.runtime.onnx_backend import OnnxBackend

    model, art = exported
    cal = tmp_path / "calibrated"
    shutil.copytree(art, cal)
    offsets = tuple(float(i) - 2.5 for i in range(len(ACTIVITIES)))
    write_label_offsets(cal, offsets, {"split": "val", "records": 0})
    manifest = json.loads((cal / "manifest.json").read_text())
    assert manifest["files"]["config.json"]["sha256"] == sha256_file(cal / "config.json")
    assert manifest["calibration"]["split"] == "val"
    be = OnnxBackend(cal, threads=1)
    series = series_of(np.random.default_rng(5), 128)
    text = ts_text(1, "What is the activity?")
    raw = backend.classify(text, backend.encode(series), ACTIVITIES)
    got = be.classify(text, be.encode(series), ACTIVITIES)
    assert got == pytest.approx({lab: raw[lab] + o for lab, o in zip(ACTIVITIES, offsets)}, abs=1e-5)
    calibrated = model.cfg.replace(label_offsets=offsets)
    plain, model.cfg = model.cfg, calibrated
    try:
        with torch.no_grad():
            ref = model.classify(text, series, list(ACTIVITIES))
    finally:
        model.cfg = plain
    assert max(abs(got[k] - ref[k]) for k in ACTIVITIES) <= CLASSIFY_ATOL


def test_prefix_cache_and_multi_token_decode(exported):
    """The cached prompt head gives the cold backend's scores; decode of T tokens in one call = T calls."""
    from edge_tslm.runtime.onnx_backend import OnnxBackend

    _, art = exported
    rng = np.random.default_rng(13)
    texts = [ts_text(1, "What is the activity?"), ts_text(1, "Which one?")]
    warm = OnnxBackend(art, threads=1)
    for text in texts * 2:
        series = series_of(rng, 128)
        cold = OnnxBackend(art, threads=1)
        a, b = warm.classify(text, warm.encode(series), ACTIVITIES), cold.classify(text, cold.encode(series), ACTIVITIES)
        assert max(abs(a[k] - b[k]) for k in ACTIVITIES) < 1e-5
    assert warm.prefix_hits >= 3  # every call after the first reuses the system turn's K/V
    enc = warm.encode(series_of(rng, 128))
    logits, state = warm.prefill(texts[0], enc)
    toks = np.array([11, 12, 13])
    many, _ = warm.decode(toks, state)  # (3, V)
    one = []
    for t in toks:
        lg, state = warm.decode(np.array([t]), state)
        one.append(lg[0])
    np.testing.assert_allclose(many, np.stack(one), atol=1e-4)


def test_media_change_the_scores(backend):
    """The series reach the answer through the exported cross-attention (gates are open)."""
    rng = np.random.default_rng(11)
    text = ts_text(1)
    a = backend.classify(text, backend.encode(series_of(rng, 128)), ACTIVITIES)
    b = backend.classify(text, backend.encode([np.zeros(128, np.float32) + 3.0]), ACTIVITIES)
    assert max(abs(a[k] - b[k]) for k in ACTIVITIES) > 1e-3


def test_generate_matches_torch_greedy(exported, backend):
    model, _ = exported
    rng = np.random.default_rng(5)
    for n in (1, 2):
        series = series_of(rng, *[96] * n)
        text = ts_text(n, "Explain briefly, then answer.")
        with torch.no_grad():
            ref = model.generate(text, series, max_new_tokens=24)
        got = backend.generate(text, backend.encode(series), 24)
        assert got == ref and len(got) > 0


def test_grounded_generation_writes_the_given_text_and_matches_torch(exported, backend):
    """generate(ground=fn): after each token fn sees the text so far; what it returns is written next (the measured
    numbers of edge_tslm.rationale_grounding), then greedy decoding goes on from it, in torch and ONNX alike."""
    from edge_tslm.rationale_grounding import Grounder, Slot
    import re

    model, _ = exported
    series = series_of(np.random.default_rng(6), 96)
    text = ts_text(1, "Explain briefly, then answer.")
    with torch.no_grad():
        first = model.generate(text, series, max_new_tokens=1)
    assert first
    cue = re.compile("^" + re.escape(first) + "$")  # fires after the first generated token

    def grounder():
        return Grounder([Slot("test", cue, " 71.1 bpm")])

    with torch.no_grad():
        ref_g = grounder()
        ref = model.generate(text, series, max_new_tokens=16, ground=ref_g)
    got_g = grounder()
    got = backend.generate(text, backend.encode(series), 16, ground=got_g)
    assert ref.startswith(first + " 71.1 bpm") and got == ref
    assert ref_g.filled == got_g.filled == ["test"]  # a slot is written once
    t = backend.last_timings
    assert t["forced_tokens"] == len(backend.tokenizer.encode_text(" 71.1 bpm")) > 1
    assert t["decode_calls"] == t["new_tokens"] - t["forced_tokens"]  # the written text went in with the token before it


def _drafted(backend, text, enc, n, references, ground=None, stop=True, **kw):
    from edge_tslm.rationale_drafting import TemplateDrafter

    got = backend.generate(text, enc, n, draft=TemplateDrafter(references, **kw), ground=ground, stop=stop)
    return got, dict(backend.last_timings)


def test_drafted_generation_writes_the_greedy_text_in_fewer_calls(backend):
    """generate(draft=fn): drafted tokens are checked in the call of the token before them and kept only as far as
    they are the greedy choice, so right, wrong and half-right drafts all give the undrafted text; right ones in
    fewer decoder calls, and a wrong one's tokens are cut from the cache (the text after them is still greedy)."""
    series = series_of(np.random.default_rng(7), 96)
    text = ts_text(1, "Explain briefly, then answer.")
    enc = backend.encode(series)
    ref = backend.generate(text, enc, 24, stop=False)
    ids = backend.tokenizer.encode_text(ref)
    assert backend.tokenizer.decode(ids, skip_special_tokens=True) == ref and len(ids) == 24

    got, t = _drafted(backend, text, enc, 24, [ids], stop=False, max_tokens=8)
    assert got == ref
    # each call feeds the greedy next token and checks up to 8 drafted ones: ceil(24 / 9) calls, every draft kept
    assert t["decode_calls"] == 3 and t["accepted_tokens"] == t["drafted_tokens"] == 24 - 3

    vocab = backend.tokenizer.tk.get_vocab_size()
    wrong = [(i * 7919 + 13) % vocab for i in range(64)]
    wrong = [w for w in wrong if w not in ids]
    after_each = [x for tok in dict.fromkeys(ids) for x in (tok, *wrong[:8])]  # every written token, then wrong ones
    got, t = _drafted(backend, text, enc, 24, [after_each], min_match=1, max_match=1)
    assert got == ref and t["accepted_tokens"] == 0 < t["drafted_tokens"]

    half = list(ids)
    half[12] = wrong[0]  # the draft goes wrong at token 12: its first part is kept, the rest rejected, then redrafted
    got, t = _drafted(backend, text, enc, 24, [half], stop=False, max_tokens=16)
    assert got == ref and 0 < t["accepted_tokens"] < t["drafted_tokens"]
    assert t["decode_calls"] < 24


def test_torch_drafts_give_the_torch_greedy_text(exported, backend):
    """FlamingoTSLM.generate(draft=) checks drafts the same way (its DynamicCache cut back after a rejection): right,
    wrong and half-right drafts give its undrafted greedy text, which is the ONNX backend's."""
    from edge_tslm.rationale_drafting import TemplateDrafter

    model, _ = exported
    series = series_of(np.random.default_rng(7), 96)
    text = ts_text(1, "Explain briefly, then answer.")
    with torch.no_grad():
        ref = model.generate(text, series, max_new_tokens=20)
    ids = backend.encode_text(ref)
    wrong = [t for t in range(100, 400) if t not in ids][:8]
    after_each = [x for tok in dict.fromkeys(ids) for x in (tok, *wrong)]
    half = list(ids)
    half[9] = wrong[0]
    for refs, kw in (([ids], {}), ([after_each], {"min_match": 1, "max_match": 1}), ([half], {})):
        with torch.no_grad():
            got = model.generate(text, series, max_new_tokens=20, draft=TemplateDrafter(refs, max_tokens=6, **kw))
        assert got == ref
        if refs == [ids]:  # the right draft: every drafted token kept, a few calls
            t = model.last_generate
            assert t["accepted_tokens"] == t["drafted_tokens"] > 0 and t["decode_calls"] < t["new_tokens"]
    assert backend.generate(text, backend.encode(series), 20, draft=TemplateDrafter([half], max_tokens=6)) == ref


def test_drafts_and_grounding_give_the_grounded_text(backend):
    """With a grounder too: drafted tokens where it writes text are kept if they are that text (no model agreement
    needed), and the result is the grounded greedy text."""
    from edge_tslm.rationale_grounding import Grounder, Slot
    import re

    series = series_of(np.random.default_rng(6), 96)
    text = ts_text(1, "Explain briefly, then answer.")
    enc = backend.encode(series)
    first = backend.generate(text, enc, 3, stop=False)
    cue = re.compile("^" + re.escape(first) + "$")  # fires after the third generated token

    def grounder():
        return Grounder([Slot("test", cue, " 71.1 bpm")])

    ref = backend.generate(text, enc, 20, ground=grounder(), stop=False)
    plain = backend.last_timings
    assert ref.startswith(first + " 71.1 bpm")
    ids = backend.tokenizer.encode_text(ref)
    got, t = _drafted(backend, text, enc, 20, [ids], ground=grounder(), stop=False, max_tokens=6)
    assert got == ref
    assert t["forced_tokens"] == plain["forced_tokens"]  # the written text came from the draft this time
    assert t["accepted_tokens"] == t["drafted_tokens"] and t["decode_calls"] < plain["decode_calls"]
    guess = ids[:3] + backend.tokenizer.encode_text(" 99.9 bpm") + ids[3 + len(backend.tokenizer.encode_text(" 71.1 bpm")):]
    got, t = _drafted(backend, text, enc, 20, [guess], ground=grounder(), stop=False, max_tokens=6)
    assert got == ref  # a draft that disagrees with the written text loses there


def test_bad_input_is_refused(backend):
    with pytest.raises(ValueError, match="patch"):
        backend.encode([np.zeros(2, np.float32)])
    with pytest.raises(ValueError, match="markers"):
        backend.classify(ts_text(2), backend.encode([np.zeros(16, np.float32)]), ACTIVITIES)


def test_missing_decoder_is_backend_unavailable(exported, tmp_path):
    import shutil

    from edge_tslm.runtime.backend import BackendUnavailable, load_backend

    _, art = exported
    partial = tmp_path / "encoder_only"
    partial.mkdir()
    for f in ("encoder.onnx", "config.json"):
        shutil.copy(art / f, partial / f)
    with pytest.raises(BackendUnavailable, match="--decoder"):
        load_backend(partial, "onnx")
    (partial / "prefill.onnx").write_bytes(b"")  # the layout of edge-tslm < 0.4 exports
    with pytest.raises(BackendUnavailable, match="re-export"):
        load_backend(partial, "onnx")


def test_stream_window_scores_equal_torch_backend(exported, backend):
    from test_runtime_stream import har_signal, of

    from edge_tslm.runtime.events import validate_event
    from edge_tslm.runtime.stream import StreamConfig, Streamer
    from edge_tslm.runtime.torch_backend import TorchBackend

    model, _ = exported
    x = har_signal([(0.3, 2.56), (0.02, 2.56)], fs=FS)
    runs = {}
    for be in (TorchBackend(model), backend):
        cfg = StreamConfig(task="har", rationale_on="never", check_events=True)
        st = Streamer(be, cfg, fs=FS)
        events = st.feed(x) + st.finish()
        assert all(validate_event(e) == [] for e in events)
        runs[be.name] = of(events, "window")
    t, o = runs["torch"], runs["onnx"]
    assert len(t) == len(o) == 3
    for wt, wo in zip(t, o):
        assert wt["answer"] == wo["answer"]
        np.testing.assert_allclose([wo["scores"][k] for k in ACTIVITIES], [wt["scores"][k] for k in ACTIVITIES], atol=1e-4)


def test_no_torch_process_runs_the_artifact(exported, backend):
    """torch and transformers poisoned in sys.modules: the ONNX backend still loads, classifies and generates, and
    the task questions come without scipy (its ~75 MB of RSS stay out of a stream that does not resample)."""
    _, art = exported
    series = series_of(np.random.default_rng(9), 128)
    want = backend.classify(ts_text(1), backend.encode(series), ACTIVITIES)
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "import numpy as np\n"
        "import edge_tslm.runtime.onnx_backend\n"
        "from edge_tslm.runtime import load_backend\n"
        "be = load_backend(sys.argv[1], 'onnx', threads=1)\n"
        "x = np.asarray(json.loads(sys.argv[2]), np.float32)\n"
        f"text = {ts_text(1)!r}\n"
        "enc = be.encode([x])\n"
        "out = be.classify(text, enc, be.labels)\n"
        "be.generate(text, enc, 4)\n"
        "from edge_tslm.runtime.stream import task_question\n"
        "task_question('har'); task_question('ecg_rhythm')\n"
        "from edge_tslm.signals import resample\n"
        "resample(np.ones((1, 600), np.float32), 300, 150)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'scipy') and sys.modules[m] is not None]\n"
        "assert not bad, bad\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(art), json.dumps(series[0].tolist())], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert max(abs(got[k] - want[k]) for k in ACTIVITIES) < 1e-6


def test_without_the_memory_arena_the_scores_are_the_same(exported, backend, tmp_path):
    """`edge-tslm stream --no-arena` (OnnxBackend memory_arena=False) trades a little latency for a lower peak RSS,
    never the answers; the torch loader accepts the option too, so `--backend auto` can fall back with it."""
    from edge_tslm.runtime.backend import load_backend

    lean = load_backend(exported[1], "onnx", threads=1, memory_arena=False)
    series = series_of(np.random.default_rng(11), 128)
    text = ts_text(1, "What is the activity?")
    a = backend.classify(text, backend.encode(series), ACTIVITIES)
    b = lean.classify(text, lean.encode(series), ACTIVITIES)
    assert max(abs(a[k] - b[k]) for k in ACTIVITIES) <= 1e-5
    from edge_tslm.model.artifact import save_pretrained

    torch_art = save_pretrained(exported[0], tmp_path / "torch-artifact")
    assert load_backend(torch_art, "torch", memory_arena=False).labels == tuple(ACTIVITIES)


def test_a_rationale_prompt_does_not_shorten_the_window_prompts_cached_head(exported):
    """Question first, then the window's numbers: a rationale prompt ("... Explain briefly") shares only the
    question; it reuses that part, leaves the head the windows share cached, and gives the cold backend's text."""
    from edge_tslm.constants import END_CHUNK_TOKEN, TS_TOKEN
    from edge_tslm.runtime.onnx_backend import OnnxBackend

    _, art = exported
    question = "Which activity is the person doing right now? Options: walking, sitting, standing."
    window = lambda v, extra="": f"{question}{extra}\nx: mean {v} g, the same description every window {TS_TOKEN}{END_CHUNK_TOKEN}\n"  # noqa: E731
    rng = np.random.default_rng(5)
    warm = OnnxBackend(art, threads=1)
    for v in ("0.993", "0.951"):
        warm.classify(window(v), warm.encode(series_of(rng, 128)), ACTIVITIES)
    head = list(warm._prefix_ids)
    series = series_of(rng, 128)
    text = window("0.97", " Explain briefly, then answer.")
    got = warm.generate(text, warm.encode(series), 6, stop=False)
    cold = OnnxBackend(art, threads=1)
    assert got == cold.generate(text, cold.encode(series), 6, stop=False)
    rationale_ids = warm._prompt(text, 1)[0]
    shared = next(i for i, (p, q) in enumerate(zip(head, rationale_ids)) if p != q)
    assert shared < len(head)  # the rationale prompt shares less than the windows do ...
    assert warm._prefix_ids == head  # ... and the windows' head stays cached whole
    hits = warm.prefix_hits
    warm.classify(window("0.96"), warm.encode(series_of(rng, 128)), ACTIVITIES)
    assert warm.prefix_hits == hits + 1 and warm._prefix_ids == head
