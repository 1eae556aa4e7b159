"""How series reach the LM: gates start at zero, each token sees exactly the series at or before it,
series keep their identity, padding changes nothing, and SoftPrompt splices one token per real patch."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_BACKBONES, build_tiny, open_gates, series_of, ts_text  # noqa: E402
from edge_tslm.backbones import load_backbone  # noqa: E402
from edge_tslm.model.batch import IGNORE, collate  # noqa: E402
from edge_tslm.model.flamingo import ABSENT  # noqa: E402
from edge_tslm.model.fusion import media_allowed  # noqa: E402

COUNTS = (1, 3, 12)  # series per sample in the mixed batch


def logits_of(model, batch) -> torch.Tensor:
    with torch.no_grad():
        hidden, _ = model.hidden_states(batch)
        return model.head(hidden)  # (B, T', V)


def mixed(model, rng, counts=COUNTS, targets=None, lengths=None):
    """A batch whose samples hold 1, 3 and 12 series of different lengths (each >= one patch)."""
    p = model.cfg.encoder.patch_len
    if lengths is None:
        lengths = [list(rng.integers(p, 120, size=n)) for n in counts]
    series = [series_of(rng, *ls) for ls in lengths]
    texts = [ts_text(n, "q" * (3 + 2 * i)) for i, n in enumerate(counts)]
    return texts, series, collate(model.tokenizer, texts, series, targets, chat_format=False)


def perturb_lora(model, seed: int = 0) -> None:
    """LoRA B starts at zero; give it values so the padding/splicing checks exercise the tuned LM too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def changed(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Per position (T,) whether the logits (T, V) differ by more than tol."""
    return (a - b).abs().amax(-1) > tol


# --------------------------------------------------------------------------- gates at zero


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_gates_at_zero_logits_equal_backbone(backbone, rng):
    model = build_tiny("flamingo", backbone)
    for block in model.xattn.values():
        assert block.attn_gate.item() == 0.0 and block.ff_gate.item() == 0.0
    texts, series, batch = mixed(model, rng, counts=(1, 3))
    got = logits_of(model, batch)

    plain, _, _ = load_backbone(backbone)  # a fresh backbone: no hooks, same weights
    with torch.no_grad():
        embeds = model.new_tokens(batch.input_ids, model.lm.get_input_embeddings())  # same <ts> rows
        want = plain(inputs_embeds=embeds, attention_mask=batch.attention_mask).logits
    real = batch.attention_mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-6, rtol=0)

    # text before the first <ts> holds only old tokens: compare with the plain LM on raw ids
    ts0 = int((batch.input_ids[0] == model.ts_id).nonzero()[0])
    with torch.no_grad():
        raw = plain(input_ids=batch.input_ids[:1, :ts0]).logits
    torch.testing.assert_close(got[0, :ts0], raw[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_open_gates_change_only_tokens_after_first_series(backbone, rng):
    model = build_tiny("flamingo", backbone)
    texts, series, batch = mixed(model, rng)
    closed = logits_of(model, batch)
    open_gates(model)
    opened = logits_of(model, batch)
    for b in range(len(texts)):
        n = int(batch.attention_mask[b].sum())
        ts0 = int((batch.input_ids[b] == model.ts_id).nonzero()[0])
        assert ts0 > 0
        torch.testing.assert_close(opened[b, :ts0], closed[b, :ts0], atol=0, rtol=0)  # nothing to see yet
        assert changed(opened[b, ts0:n], closed[b, ts0:n]).all(), f"sample {b}: a token after <ts> ignored the series"


# --------------------------------------------------------------------------- allowed-media mask


def test_media_allowed_unit():
    ts = torch.tensor([[2, 5, ABSENT], [0, ABSENT, ABSENT]])  # (B=2, S=3)
    tok = torch.arange(3, 7)[None].expand(2, -1)  # positions 3..6, as in a decode call starting at 3
    allowed = media_allowed(ts, tok, num_latents=4)  # (2, 4, 12)
    assert allowed.shape == (2, 4, 12)
    per_series = allowed.view(2, 4, 3, 4)
    assert (per_series == per_series[..., :1]).all()  # all latents of a series share a verdict
    want = torch.tensor(
        [
            [[1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0]],  # t=3,4 see series 0; t=5,6 see 0 and 1
            [[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(per_series[..., 0], want)


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_each_token_sees_exactly_the_series_at_or_before_it(backbone, rng):
    model = build_tiny("flamingo", backbone)
    texts, series, batch = mixed(model, rng)
    B, S = batch.series.shape[:2]
    assert S == max(COUNTS)
    ts_pos = model.ts_positions(batch.input_ids, S)  # (B, S)
    for b, n in enumerate(COUNTS):
        pos = (batch.input_ids[b] == model.ts_id).nonzero()[:, 0]
        assert len(pos) == n
        assert torch.equal(ts_pos[b, :n], pos)
        assert (ts_pos[b, n:] == ABSENT).all()
    T = batch.input_ids.shape[1]
    N = model.cfg.resampler.num_latents
    allowed = media_allowed(ts_pos, torch.arange(T)[None].expand(B, -1), N).view(B, T, S, N)
    seen = (batch.input_ids == model.ts_id).long().cumsum(1)  # (B, T): <ts> tokens at or before t
    assert torch.equal(allowed[..., 0].sum(-1), seen)
    # and they are the first `seen` series, in order (every token after the k-th <ts> sees series 0..k-1)
    first_k = torch.arange(S)[None, None] < seen[..., None]
    assert torch.equal(allowed[..., 0], first_k)


def test_ts_positions_refuses_more_markers_than_series(rng):
    model = build_tiny("flamingo")
    batch = collate(model.tokenizer, [ts_text(2)], [series_of(rng, 8, 8)], chat_format=False)
    with pytest.raises(ValueError, match="<ts>"):
        model.ts_positions(batch.input_ids, 1)


# --------------------------------------------------------------------------- perturbing one series


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize("b,k", [(0, 0), (1, 1), (2, 0), (2, 7), (2, 11)])
def test_flamingo_perturbing_series_k_changes_only_tokens_from_its_ts(backbone, b, k, rng):
    model = build_tiny("flamingo", backbone)
    open_gates(model)
    texts, series, batch = mixed(model, rng)
    base = logits_of(model, batch)
    series2 = [list(s) for s in series]
    series2[b][k] = rng.standard_normal(len(series[b][k])).astype(np.float32)
    out = logits_of(model, collate(model.tokenizer, texts, series2, chat_format=False))

    t_k = int((batch.input_ids[b] == model.ts_id).nonzero()[k])
    n = int(batch.attention_mask[b].sum())
    torch.testing.assert_close(out[b, :t_k], base[b, :t_k], atol=1e-6, rtol=0)
    assert changed(out[b, t_k:n], base[b, t_k:n]).all()
    for other in range(len(texts)):
        if other != b:
            torch.testing.assert_close(out[other], base[other], atol=1e-5, rtol=0)


def spliced_start(ids: torch.Tensor, ts_id: int, patches: list[int], k: int) -> int:
    """Where series k's soft tokens start once every earlier <ts> became its patches."""
    t_k = int((ids == ts_id).nonzero()[k])
    return t_k + sum(p - 1 for p in patches[:k])


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize("b,k", [(0, 0), (1, 2), (2, 5)])
def test_softprompt_perturbing_series_k_changes_only_tokens_from_its_splice(backbone, b, k, rng):
    model = build_tiny("softprompt", backbone)
    perturb_lora(model)
    texts, series, batch = mixed(model, rng)
    base = logits_of(model, batch)
    series2 = [list(s) for s in series]
    series2[b][k] = rng.standard_normal(len(series[b][k])).astype(np.float32)
    out = logits_of(model, collate(model.tokenizer, texts, series2, chat_format=False))

    p = model.cfg.encoder.patch_len
    patches = [math.ceil(len(x) / p) for x in series[b]]
    start = spliced_start(batch.input_ids[b], model.ts_id, patches, k)
    n = int(batch.attention_mask[b].sum()) - len(patches) + sum(patches)
    torch.testing.assert_close(out[b, :start], base[b, :start], atol=1e-6, rtol=0)
    # tiny-gemma3's layers are all sliding-window (32): text far after the block is out of its reach
    window = getattr(model.lm.config, "sliding_window", None) or n
    reach = min(n, start + patches[k] + window // 2)
    assert changed(out[b, start:reach], base[b, start:reach]).all()
    for other in range(len(texts)):
        if other != b:
            torch.testing.assert_close(out[other], base[other], atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- series identity


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_flamingo_swapping_two_series_changes_output_through_identity(backbone, rng):
    """A token that sees both series attends over an unordered set of media slots: only the series
    embedding tells A-then-B from B-then-A there."""
    model = build_tiny("flamingo", backbone)
    open_gates(model)
    a, b_ = series_of(rng, 64, 64)
    text = ts_text(2)
    ab = collate(model.tokenizer, [text], [[a, b_]], chat_format=False)
    ba = collate(model.tokenizer, [text], [[b_, a]], chat_format=False)
    t1 = int((ab.input_ids[0] == model.ts_id).nonzero()[1])
    assert changed(logits_of(model, ab)[0, t1:], logits_of(model, ba)[0, t1:]).all()

    block = model.xattn[str(model.insertion[0])]
    x = torch.randn(1, 5, model.lm.config.hidden_size, generator=torch.Generator().manual_seed(0))
    see_all = torch.ones(1, 5, 2 * model.cfg.resampler.num_latents, dtype=torch.bool)

    def cross(batch):
        with torch.no_grad():
            return block(x, model.encode_media(batch.series, batch.series_mask), see_all)

    assert (cross(ab) - cross(ba)).abs().max() > 1e-4
    with torch.no_grad():  # control: without identity embeddings the swap is invisible to such a token
        model.series_encoder.encoder.series_embed.weight.zero_()
    torch.testing.assert_close(cross(ab), cross(ba), atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["flamingo", "softprompt"])
def test_identical_series_get_distinct_encodings(variant, rng):
    model = build_tiny(variant)
    x = series_of(rng, 40)[0]
    batch = collate(model.tokenizer, [ts_text(2)], [[x, x]], chat_format=False)
    with torch.no_grad():
        if variant == "flamingo":
            N = model.cfg.resampler.num_latents
            media = model.encode_media(batch.series, batch.series_mask)  # (1, 2N, D)
            first, second = media[0, :N], media[0, N:]
        else:
            soft, _ = model.soft_encoder(batch.series[0], batch.series_mask[0], torch.arange(2))
            first, second = soft[0], soft[1]
    assert (first - second).abs().max() > 1e-3


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize("variant", ["flamingo", "softprompt"])
def test_padding_does_not_change_a_samples_outputs(variant, backbone, rng):
    model = build_tiny(variant, backbone)
    open_gates(model) if variant == "flamingo" else perturb_lora(model)
    short_text, short_series = ts_text(1, "?"), series_of(rng, 37)
    long_text, long_series = ts_text(12, "a much longer question, longer than the other one?"), series_of(
        rng, *rng.integers(4, 400, size=12)
    )
    alone = collate(model.tokenizer, [short_text], [short_series], chat_format=False)
    both = collate(model.tokenizer, [short_text, long_text], [short_series, long_series], chat_format=False)
    assert both.input_ids.shape[1] > alone.input_ids.shape[1] and both.series.shape[1:] != alone.series.shape[1:]
    a, ab = logits_of(model, alone), logits_of(model, both)
    n = a.shape[1]
    torch.testing.assert_close(ab[0, :n], a[0], atol=1e-5, rtol=1e-5)
    # and the long sample's outputs do not depend on its batch-mate either
    long_alone = logits_of(model, collate(model.tokenizer, [long_text], [long_series], chat_format=False))
    torch.testing.assert_close(ab[1, : long_alone.shape[1]], long_alone[0], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- SoftPrompt splicing


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_softprompt_splices_one_token_per_real_patch_and_aligns_labels(backbone, rng):
    model = build_tiny("softprompt", backbone)
    p = model.cfg.encoder.patch_len
    targets = ["Answer: a", "Answer: bb", "Answer: ccc"]
    texts, series, batch = mixed(model, rng, targets=targets)
    with torch.no_grad():
        embeds, attn, labels = model.splice(batch)
        text_emb = model.new_tokens(batch.input_ids, model.lm.get_input_embeddings())
    for b, ser in enumerate(series):
        patches = [math.ceil(len(x) / p) for x in ser]
        n_text = int(batch.attention_mask[b].sum())
        n = n_text - len(ser) + sum(patches)
        assert int(attn[b].sum()) == n and bool(attn[b, :n].all())
        ts_at = (batch.input_ids[b, :n_text] == model.ts_id).nonzero()[:, 0].tolist()
        src = 0  # walk the text, checking every text token and every soft block lands where it should
        dst = 0
        for k, t in enumerate(ts_at):
            torch.testing.assert_close(embeds[b, dst : dst + t - src], text_emb[b, src:t], atol=0, rtol=0)
            dst += t - src
            with torch.no_grad():
                x = torch.from_numpy(ser[k])[None]
                soft, pm = model.soft_encoder(x, torch.ones_like(x, dtype=torch.bool), torch.tensor([k]))
            assert int(pm.sum()) == patches[k]
            torch.testing.assert_close(embeds[b, dst : dst + patches[k]], soft[0], atol=1e-5, rtol=1e-5)
            assert (labels[b, dst : dst + patches[k]] == IGNORE).all()
            dst += patches[k]
            src = t + 1
        torch.testing.assert_close(embeds[b, dst:n], text_emb[b, src:n_text], atol=0, rtol=0)
        # labels: the target ids, in order, at the very end of the real sequence; IGNORE elsewhere
        tgt = batch.labels[b][batch.labels[b] != IGNORE]
        lab = labels[b, :n]
        assert torch.equal(lab[n - len(tgt) :], tgt)
        assert (lab[: n - len(tgt)] == IGNORE).all() and (labels[b, n:] == IGNORE).all()
