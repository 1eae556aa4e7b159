"""collate: exactly one BOS, <ts> count checked, labels only on the target, series padded with a mask."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import series_of, ts_text  # noqa: E402
from edge_tslm.backbones import tiny_tokenizer  # noqa: E402
from edge_tslm.model.batch import IGNORE, collate, encode_prompt, encode_target  # noqa: E402
from edge_tslm.model.tokens import add_ts_tokens  # noqa: E402

CHAT = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture
def tok():
    t = tiny_tokenizer()
    add_ts_tokens(t)
    return t


@pytest.fixture
def bos_tok():
    """Like Llama/SmolLM tokenizers: adds BOS by itself, and its chat template writes BOS too."""
    from tokenizers.processors import TemplateProcessing

    t = tiny_tokenizer()
    t._tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", t.bos_token_id)])
    t.chat_template = CHAT
    add_ts_tokens(t)
    assert t("a").input_ids[:1] == [t.bos_token_id]
    return t


@pytest.mark.parametrize(
    "text,chat",
    [
        ("hello <ts><endofchunk> q", False),  # the tokenizer would add BOS
        ("<s>hello <ts><endofchunk> q", False),  # the text already has it
        ("hello <ts><endofchunk> q", True),  # the chat template writes BOS and the tokenizer would add one
    ],
)
def test_exactly_one_bos(bos_tok, text, chat, rng):
    b = collate(bos_tok, [text], [series_of(rng, 8)], ["Answer: x"], chat_format=chat)
    ids = b.input_ids[0].tolist()
    assert ids[0] == bos_tok.bos_token_id and ids.count(bos_tok.bos_token_id) == 1


def test_no_bos_where_the_backbone_wants_none(tok):
    ids = encode_prompt(tok, "hello")
    assert tok.bos_token_id not in ids and ids == tok("hello", add_special_tokens=False).input_ids


def test_ts_count_mismatch_raises(tok, rng):
    with pytest.raises(ValueError, match="sample 1: its text has 1 <ts> markers but 2 series"):
        collate(tok, [ts_text(1), ts_text(1)], [series_of(rng, 8), series_of(rng, 8, 8)], chat_format=False)
    with pytest.raises(ValueError, match="2 <ts> markers but 1 series"):
        collate(tok, [ts_text(2)], [series_of(rng, 8)], chat_format=False)


def test_labels_only_on_target(tok, rng):
    texts = [ts_text(1, "short?"), ts_text(2, "a longer question?")]
    targets = ["Answer: walking upstairs", "Answer: no"]
    b = collate(tok, texts, [series_of(rng, 8), series_of(rng, 8, 9)], targets, chat_format=False)
    for i, (text, target) in enumerate(zip(texts, targets)):
        prompt = encode_prompt(tok, text)
        tgt = encode_target(tok, target)
        n = len(prompt) + len(tgt)
        assert tgt[-1] == tok.eos_token_id
        assert b.input_ids[i, :n].tolist() == prompt + tgt
        assert (b.labels[i, : len(prompt)] == IGNORE).all()
        assert b.labels[i, len(prompt) : n].tolist() == tgt
        assert (b.labels[i, n:] == IGNORE).all() and (b.attention_mask[i, n:] == 0).all()
        assert (b.attention_mask[i, :n] == 1).all() and (b.input_ids[i, n:] == tok.pad_token_id).all()
    assert collate(tok, texts[:1], [series_of(rng, 8)], chat_format=False).labels is None


def test_series_padded_with_mask(tok, rng):
    ser = [series_of(rng, 5), series_of(rng, 12, 7, 30)]
    b = collate(tok, [ts_text(1), ts_text(3)], ser, chat_format=False)
    assert b.series.shape == (2, 3, 30) and b.series_mask.shape == (2, 3, 30) and b.series.dtype == torch.float32
    for i, s in enumerate(ser):
        for k in range(3):
            n = len(s[k]) if k < len(s) else 0
            assert b.series_mask[i, k].sum() == n and bool(b.series_mask[i, k, :n].all())
            if n:
                assert np.array_equal(b.series[i, k, :n].numpy(), s[k])
            assert (b.series[i, k, n:] == 0).all()
    moved = b.to("cpu")
    assert torch.equal(moved.series, b.series) and moved.labels is None


def test_sample_without_series(tok):
    b = collate(tok, ["no series here"], [[]], chat_format=False)
    assert b.series.shape[:2] == (1, 1) and not b.series_mask.any()


def test_empty_series_is_refused(tok):
    with pytest.raises(ValueError, match="sample 0 series 0 is empty"):
        collate(tok, [ts_text(1)], [[np.zeros(0, dtype=np.float32)]], chat_format=False)
