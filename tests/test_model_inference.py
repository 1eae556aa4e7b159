"""classify scores = summed log-probs of 'Answer: <label><eos>' from a full forward; generate is
deterministic, bounded, stops at EOS, and its cached decode matches full forwards."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_BACKBONES, VARIANTS, build_tiny, open_gates, series_of, ts_text  # noqa: E402
from edge_tslm.constants import ANSWER_PREFIX  # noqa: E402
from edge_tslm.model.batch import IGNORE, collate, encode_target  # noqa: E402

LABELS = ("yes", "no", "walking", "walking upstairs", "sitting")


def lively(variant: str, backbone: str):
    """Series must matter: open Flamingo's gates; give SoftPrompt's LoRA non-zero B."""
    model = build_tiny(variant, backbone)
    if variant == "flamingo":
        open_gates(model, 0.5)
    else:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def full_forward_score(model, text, series, label) -> float:
    """Sum of log p(target token | everything before it) from one uncached forward over prompt + target."""
    target = f"{ANSWER_PREFIX} {label}"
    batch = collate(
        model.tokenizer, [text], [series], [target], chat_format=model.cfg.chat_format, system=model.cfg.pre_prompt
    )
    with torch.no_grad():
        hidden, labels = model.hidden_states(batch)
        lp = torch.log_softmax(model.head(hidden).float(), -1)[0]  # (T', V)
    at = (labels[0] != IGNORE).nonzero()[:, 0]  # target positions in the (possibly spliced) sequence
    assert labels[0, at].tolist() == encode_target(model.tokenizer, target)
    return float(lp[at - 1, labels[0, at]].sum())


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("labels", [LABELS, ("walking", "walking upstairs"), ("only",)])
def test_classify_equals_full_forward_log_likelihood(variant, backbone, labels, rng):
    model = lively(variant, backbone)
    text = ts_text(3, "What is the person doing, judging from all three axes?")  # > tiny-gemma3's 32-token window
    series = series_of(rng, 40, 90, 13)
    scores = model.classify(text, series, labels)
    assert list(scores) == list(labels)
    for lab in labels:
        assert scores[lab] == pytest.approx(full_forward_score(model, text, series, lab), abs=1e-4), lab


def test_classify_needs_labels(rng):
    model = build_tiny("flamingo")
    with pytest.raises(ValueError, match="label"):
        model.classify(ts_text(1), series_of(rng, 8), [])


def manual_greedy(model, text, series, n: int) -> list[int]:
    """Greedy decoding by re-running the whole uncached forward for every new token."""
    base = collate(model.tokenizer, [text], [series], chat_format=model.cfg.chat_format, system=model.cfg.pre_prompt)
    ids, out = base.input_ids, []
    for _ in range(n):
        base.input_ids, base.attention_mask = ids, torch.ones_like(ids)
        with torch.no_grad():
            hidden, _ = model.hidden_states(base)
            nxt = int(model.head(hidden[:, -1]).argmax(-1))
        if nxt in model.stop_ids():
            break
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_generate_greedy_matches_uncached_decoding(variant, backbone, rng):
    model = lively(variant, backbone)
    text, series = ts_text(2, "Describe both series in a few words please."), series_of(rng, 60, 24)
    got = model.generate(text, series, max_new_tokens=8)
    assert got == model.generate(text, series, max_new_tokens=8)  # deterministic
    want = model.tokenizer.decode(manual_greedy(model, text, series, 8), skip_special_tokens=True)
    assert got == want


@pytest.mark.parametrize("variant", VARIANTS)
def test_generate_bounded_and_sampling_reproducible(variant, rng):
    model = lively(variant, "tiny-llama")
    text, series = ts_text(1), series_of(rng, 32)
    for n in (0, 1, 5):
        out = model.generate(text, series, max_new_tokens=n)
        assert len(model.tokenizer(out, add_special_tokens=False).input_ids) <= n
    a = model.generate(text, series, max_new_tokens=6, temperature=1.0, top_p=0.9, seed=3)
    assert a == model.generate(text, series, max_new_tokens=6, temperature=1.0, top_p=0.9, seed=3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_generate_stops_at_eos_and_drops_it(variant, rng):
    model = lively(variant, "tiny-llama")
    text, series = ts_text(1), series_of(rng, 32)
    first_two = model.generate(text, series, max_new_tokens=2)
    eos = model.tokenizer.eos_token_id
    calls = {"n": 0}

    def force_eos_on_third_head_call(module, inputs, output):
        calls["n"] += 1
        if calls["n"] >= 3:  # prefill -> token 1, decode -> token 2, decode -> EOS
            output = output.clone()
            output[..., eos] += 1e4
        return output

    lm = model.lm.get_base_model() if hasattr(model.lm, "get_base_model") else model.lm
    handle = lm.get_output_embeddings().register_forward_hook(force_eos_on_third_head_call)
    try:
        out = model.generate(text, series, max_new_tokens=50)
    finally:
        handle.remove()
    assert calls["n"] == 3  # it stopped right at EOS instead of running to max_new_tokens
    assert out == first_two and "</s>" not in out


def test_input_triplet_end_to_end(rng):
    """signals.validate -> prompts.build_model_input -> classify/generate on a 3-axis sample."""
    from edge_tslm.prompts import build_model_input
    from edge_tslm.signals import validate

    model = lively("flamingo", "tiny-llama")
    sig = rng.standard_normal((3, 120)) * 2 + 9.8
    inp = validate(sig, {"fs": 50, "unit": "m/s^2", "channels": ["x", "y", "z"]}, "What is the activity?")
    mi = build_model_input(inp)
    assert mi.text.count("<ts>") == 3
    scores = model.classify(mi.text, list(mi.series), ["walking", "sitting"])
    assert all(np.isfinite(v) and v < 0 for v in scores.values())
    assert isinstance(model.generate(mi.text, list(mi.series), max_new_tokens=3), str)


def test_generation_stops_at_a_new_chat_turn():
    """A chat model that opens a new turn (<|im_start|>) has finished its answer; without a chat format it is text."""
    from conftest import build_tiny

    from edge_tslm.constants import TURN_START_TOKEN

    model = build_tiny("flamingo")
    turn = model.tokenizer.convert_tokens_to_ids(TURN_START_TOKEN)
    if not isinstance(turn, int) or turn == model.tokenizer.unk_token_id:
        model.tokenizer.add_special_tokens({"additional_special_tokens": [TURN_START_TOKEN]})
        turn = model.tokenizer.convert_tokens_to_ids(TURN_START_TOKEN)
    model.cfg = model.cfg.replace(chat_format=True)
    assert turn in model.stop_ids() and model.tokenizer.eos_token_id in model.stop_ids()
    model.cfg = model.cfg.replace(chat_format=False)
    assert turn not in model.stop_ids()
