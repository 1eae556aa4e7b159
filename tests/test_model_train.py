"""Freeze policy: only adapters (and LoRA) train; one optimizer step leaves the backbone bit-identical."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_BACKBONES, VARIANTS, build_tiny, open_gates, series_of, ts_text  # noqa: E402
from edge_tslm.backbones import load_backbone  # noqa: E402
from edge_tslm.model.batch import IGNORE, collate  # noqa: E402

def is_backbone(name: str) -> bool:
    return name.startswith("lm.") and "lora_" not in name

def loss_and_grads(model, batch) -> tuple[float, dict[str, torch.Tensor]]:
    """One backward from zeroed gradients: the loss and a copy of every trainable part's gradient."""
    model.zero_grad(set_to_none=True)
    loss = model.loss(batch)
    loss.backward()
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}

def train_batch(model, rng):
    return collate(
        model.tokenizer,
        [ts_text(1), ts_text(3, "and these?")],
        [series_of(rng, 40), series_of(rng, 12, 80, 33)],
        ["Answer: walking", "Answer: no"],
        chat_format=False,
    )

@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_only_adapters_train(variant, backbone):
    model = build_tiny(variant, backbone)
    named = dict(model.named_parameters())
    assert not any(p.requires_grad for n, p in named.items() if is_backbone(n))
    assert all(p.requires_grad for n, p in named.items() if not is_backbone(n))
    lora = [n for n in named if "lora_" in n]
    assert bool(lora) == (variant == "softprompt")
    parts = {n.split(".")[0] for n, p in named.items() if p.requires_grad}
    want = {"flamingo": {"series_encoder", "xattn", "new_tokens"}, "softprompt": {"soft_encoder", "new_tokens", "lm"}}
    assert parts == want[variant]

@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_one_step_moves_adapters_and_leaves_backbone_bit_identical(variant, backbone, rng):
    model = build_tiny(variant, backbone).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    loss = model.loss(train_batch(model, rng))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if is_backbone(n))
    opt.step()
    for n, p in model.named_parameters():
        if is_backbone(n):
            assert torch.equal(p, before[n]), f"backbone parameter {n} moved"
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    # at init the gates are 0 (Flamingo) and LoRA B is 0 (SoftPrompt): these must get the first signal
    first = {"flamingo": ("attn_gate", "ff_gate"), "softprompt": ("lora_B", "soft_encoder.")}[variant]
    for key in first:
        assert any(key in n for n in moved), f"no {key} parameter moved after one step"

@pytest.mark.parametrize("variant", VARIANTS)
def test_every_adapter_part_gets_gradient_once_signal_flows(variant, rng):
    """With gates open / LoRA B non-zero, no adapter tensor is disconnected from the loss."""
    model = build_tiny(variant).train()
    if variant == "flamingo":
        open_gates(model, 0.5)
    else:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.fill_(0.01)
    model.loss(train_batch(model, rng)).backward()
    dead = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not bool(p.grad.abs().sum() > 0))
    ]
    assert dead == []

@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_is_cross_entropy_on_target_tokens_only(variant, rng):
    model = build_tiny(variant)
    batch = train_batch(model, rng)
    with torch.no_grad():
        loss = model.loss(batch)
        hidden, labels = model.hidden_states(batch)
        lp = torch.log_softmax(model.head(hidden).float(), -1)
    terms = [
        -lp[b, t - 1, labels[b, t]] for b in range(labels.shape[0]) for t in range(1, labels.shape[1]) if labels[b, t] != IGNORE
    ]
    assert len(terms) == len("Answer: walking") + 1 + len("Answer: no") + 1  # char tokenizer + EOS each
    assert float(loss) == pytest.approx(float(torch.stack(terms).mean()), abs=1e-5)

@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_shared_prefix_gives_the_same_loss_and_gradients(backbone, rng, monkeypatch):
    """Flamingo runs the text every row shares (before the first <ts>) once and continues each row from its cache:
    the step must be the one the full pass gives."""
    model = build_tiny("flamingo", backbone).train()
    open_gates(model, 0.5)
    batch = train_batch(model, rng)
    ts_pos = model.ts_positions(batch.input_ids, batch.series.shape[1])
    assert model.shared_prefix(batch, ts_pos) == len("Series. s0: ")  # char tokenizer; no BOS

    shared_loss, shared = loss_and_grads(model, batch)
    monkeypatch.setattr(type(model), "shared_prefix", lambda self, b, t: 0)
    plain_loss, plain = loss_and_grads(model, batch)
    assert shared_loss == pytest.approx(plain_loss, rel=1e-5)
    assert shared.keys() == plain.keys() and len(plain) > 4
    for n in plain:
        torch.testing.assert_close(shared[n], plain[n], rtol=1e-4, atol=1e-6, msg=f"gradient of {n} differs")


def test_shared_prefix_stops_at_the_first_target_and_where_rows_differ(rng):
    model = build_tiny("flamingo")
    batch = train_batch(model, rng)
    ts_pos = model.ts_positions(batch.input_ids, batch.series.shape[1])
    one = collate(model.tokenizer, [ts_text(1)], [series_of(rng, 40)], ["Answer: walking"], chat_format=False)
    assert model.shared_prefix(one, model.ts_positions(one.input_ids, 1)) == 0  # one row: nothing to share
    other = collate(model.tokenizer, [ts_text(1), "Other. " + ts_text(1)], [series_of(rng, 40), series_of(rng, 40)],
                    ["Answer: a", "Answer: b"], chat_format=False)
    assert model.shared_prefix(other, model.ts_positions(other.input_ids, 1)) == 0  # differ at the first token
    early = dataclasses.replace(batch, labels=batch.labels.clone())
    early.labels[:, 3] = 0  # a target at position 3 is predicted by position 2, which must be computed per row
    assert model.shared_prefix(early, ts_pos) == 2
    model.set_activation_checkpointing(True)
    assert model.shared_prefix(batch, ts_pos) == 0  # a recomputed layer would extend the cache twice
    model.set_activation_checkpointing(False)
    assert model.shared_prefix(batch, ts_pos) > 0


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_counts_add_up(variant, backbone):
    model = build_tiny(variant, backbone)
    counts = model.parameter_counts()
    params = list(model.parameters())  # unique tensors (tied embedding/head counted once)
    assert sum(c["trainable"] for c in counts.values()) == sum(p.numel() for p in params if p.requires_grad)
    assert sum(c["frozen"] for c in counts.values()) == sum(p.numel() for p in params if not p.requires_grad)
    plain, _, _ = load_backbone(backbone)
    assert counts["lm"] == {"trainable": 0, "frozen": sum(p.numel() for p in plain.parameters())}
    if variant == "softprompt":
        lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
        assert counts["lora"] == {"trainable": lora, "frozen": 0} and lora > 0

@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_activation_checkpointing_gives_the_same_loss_and_gradients(variant, backbone, rng):
    """Recomputing in the backward must not change the step: same loss, same gradient on every trainable part."""

    model = build_tiny(variant, backbone).train()
    if variant == "flamingo":
        open_gates(model, 0.5)  # non-zero gates, so the cross-attention's gradients are not trivially zero
    batch = train_batch(model, rng)

    plain_loss, plain = loss_and_grads(model, batch)
    model.set_activation_checkpointing(True)
    base = model.lm.get_base_model() if hasattr(model.lm, "get_base_model") else model.lm
    is_on = lambda: getattr(base, "is_activation_checkpointing", None) or base.is_gradient_checkpointing  # noqa: E731
    assert is_on()
    from edge_tslm.model.checkpointing import CheckpointableBlock

    blocks = [m for m in model.modules() if isinstance(m, CheckpointableBlock)]
    assert blocks and all(b.recomputes() for b in blocks), "the encoder blocks were not switched to checkpointing"
    ckpt_loss, ckpt = loss_and_grads(model, batch)
    model.set_activation_checkpointing(False)
    assert not is_on() and not any(b.recomputes() for b in blocks)
    assert ckpt_loss == pytest.approx(plain_loss, rel=1e-6)
    assert ckpt.keys() == plain.keys() and len(plain) > 4
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-4, atol=1e-6, msg=f"gradient of {n} differs")
