"""prune_: reaches the asked sparsity per part, is permanent, leaves state-dict keys and the LM unchanged."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from conftest import build_tiny  # noqa: E402

from edge_tslm.quantize import Int8WeightOnly, prune_, quantize_  # noqa: E402
from edge_tslm.quantize.prune import prunable  # noqa: E402


@pytest.mark.parametrize("variant", ["flamingo", "softprompt"])
def test_unstructured_reaches_sparsity_and_is_permanent(variant):
    m = build_tiny(variant)
    keys = {k: v.shape for k, v in m.state_dict().items()}
    lm = {k: v.clone() for k, v in m.lm.state_dict().items() if "lora_" not in k}
    rep = prune_(m, 0.5)
    parts = {"xattn", "ffn", "encoder"} if variant == "flamingo" else {"ffn", "encoder"}
    for part in parts:
        r = rep.parts[part]
        assert r["tensors"] > 0, part
        assert 0.5 <= r["sparsity"] < 0.52, (part, r)
    if variant == "softprompt":
        assert rep.parts["xattn"]["tensors"] == 0
    assert {k: v.shape for k, v in m.state_dict().items()} == keys  # no weight_orig / weight_mask
    assert not any("_orig" in k or "_mask" in k for k in m.state_dict())
    assert not any(mod._forward_pre_hooks for mod in m.series_encoder.modules()) if variant == "flamingo" else True
    for k, v in m.lm.state_dict().items():  # the frozen LM is never pruned
        if k in lm:
            assert torch.equal(v, lm[k]), k
    for _, mod, pname in prunable(m, "encoder"):
        assert isinstance(getattr(mod, pname), torch.nn.Parameter)


def test_structured_zeroes_whole_output_rows():
    m = build_tiny("flamingo")
    rep = prune_(m, 0.25, structured=True, parts=("xattn", "ffn"))
    for _, mod, pname in prunable(m, "xattn") + prunable(m, "ffn"):
        w = getattr(mod, pname)
        rows = (w.flatten(1) == 0).all(1)
        assert int(rows.sum()) == round(0.25 * w.shape[0])
    assert 0.24 <= rep.parts["xattn"]["sparsity"] <= 0.26
    assert "encoder" not in rep.parts


def test_pruned_model_runs_and_parts_do_not_overlap(rng):
    from conftest import series_of, ts_text

    m = build_tiny("flamingo")
    ids = [id(mod) for part in ("xattn", "ffn", "encoder") for _, mod, _ in prunable(m, part)]
    assert len(ids) == len(set(ids))
    prune_(m, 0.3)
    assert m.classify(ts_text(1), series_of(rng, 40), ["a", "b"])


def test_prune_refuses_quantized_adapter_and_bad_sparsity():
    m = build_tiny("flamingo")
    with pytest.raises(ValueError, match="sparsity"):
        prune_(m, 1.0)
    pytest.importorskip("torchao")
    quantize_(m, Int8WeightOnly(parts=("xattn",)))
    with pytest.raises(RuntimeError, match="prune before quantizing"):
        prune_(m, 0.5)
