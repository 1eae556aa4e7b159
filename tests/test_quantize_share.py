"""share_xattn_: one module at every insertion point, (n-1) blocks fewer parameters, distilled recovery."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import build_tiny, open_gates, series_of, ts_text  # noqa: E402

from edge_tslm.quantize import distill_loss, is_shared, parameter_count, recover_shared, share_xattn_  # noqa: E402
from edge_tslm.quantize.share import _collate  # noqa: E402
from edge_tslm.train.examples import Example  # noqa: E402


def _examples(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [Example(ts_text(1), tuple(series_of(rng, 40)), "Answer: up" if i % 2 else "Answer: down", "") for i in range(n)]


def _trained_like(seed=0):
    """A tiny Flamingo model whose blocks differ and whose gates are open (as after training)."""
    m = build_tiny("flamingo", seed=seed)
    open_gates(m, 0.5)
    return m


@pytest.mark.parametrize("init", ["mean", "best", 0])
def test_one_module_everywhere_and_fewer_parameters(init, rng):
    m = _trained_like()
    n = len(m.insertion)
    assert n >= 2
    block_params = sum(p.numel() for p in m.xattn[str(m.insertion[0])].parameters())
    before = parameter_count(m)
    rep = share_xattn_(m, init=init, examples=_examples(4))
    assert is_shared(m)
    shared = m.xattn[str(m.insertion[0])]
    assert all(m.xattn[str(i)] is shared for i in m.insertion)
    assert rep.params_before == before and rep.params_after == before - (n - 1) * block_params
    assert parameter_count(m) == rep.params_after
    assert sum(d["trainable"] + d["frozen"] for d in m.parameter_counts().values()) == rep.params_after
    if init == "best":
        assert rep.chosen == int(np.argmin(rep.candidate_losses))

    # the decoder layers' hooks call the shared block: closing its gates gives the backbone's logits
    batch = m._batch(ts_text(1), series_of(rng, 40))
    with torch.no_grad():
        shared.attn_gate.zero_()
        shared.ff_gate.zero_()
        h_shared, _ = m.hidden_states(batch)
        plain = m.decoder()(inputs_embeds=m.new_tokens(batch.input_ids, m.lm.get_input_embeddings()),
                            attention_mask=batch.attention_mask).last_hidden_state
    torch.testing.assert_close(h_shared, plain)


def test_mean_init_is_the_mean():
    m = _trained_like()
    blocks = [m.xattn[str(i)] for i in m.insertion]
    want = torch.stack([b.to_q.weight.detach() for b in blocks]).mean(0)
    share_xattn_(m, init="mean")
    torch.testing.assert_close(m.xattn[str(m.insertion[0])].to_q.weight.detach(), want)


def test_recovery_lowers_the_distillation_loss():
    teacher = _trained_like()
    student = _trained_like()
    share_xattn_(student, init="mean")
    exs = _examples(4)
    batch = _collate(student, exs)
    student.eval()
    with torch.no_grad():
        before = float(distill_loss(student, teacher, batch)["loss"])
    rec = recover_shared(student, teacher, exs, steps=8, lr=3e-3, batch_size=4)
    student.eval()
    with torch.no_grad():
        after = float(distill_loss(student, teacher, batch)["loss"])
    assert after < before
    assert rec["probe_loss_after"] < rec["probe_loss_before"]
    assert len(rec["history"]) == 8
    # only the shared block trained; the rest of the adapter's requires_grad is restored
    assert any(p.requires_grad for p in student.series_encoder.parameters())
    assert not any(p.requires_grad for n, p in student.named_parameters() if n.startswith("lm."))


def test_share_refuses_softprompt_and_twice():
    with pytest.raises(ValueError, match="Flamingo"):
        share_xattn_(build_tiny("softprompt"))
    m = build_tiny("flamingo")
    share_xattn_(m, init="mean")
    with pytest.raises(ValueError, match="already shared"):
        share_xattn_(m)
    with pytest.raises(ValueError, match="separate"):
        recover_shared(m, m, _examples(2), steps=1)
