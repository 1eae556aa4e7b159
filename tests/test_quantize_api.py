"""quantize_: handlers per (config, backend), what runs on CPU, SQNR, closeness to fp32, clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")
pytest.importorskip("bitsandbytes")

from conftest import build_tiny, open_gates, series_of, ts_text  # noqa: E402

from edge_tslm.quantize import (  # noqa: E402
    Int4WeightOnly,
    Int8WeightOnly,
    QuantizationError,
    config_from_dict,
    config_to_dict,
    module_bytes,
    parameter_count,
    quantize_,
    resolve_backend,
    sizes,
)


def _hidden(model, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    batch = model._batch(ts_text(2), series_of(rng, 40, 33))
    with torch.no_grad():
        h, _ = model.hidden_states(batch)
        return model.head(h).float()


def _flamingo(backbone="tiny-llama"):
    m = build_tiny("flamingo", backbone)
    open_gates(m, 0.5)  # the series must reach the LM for xattn quantization to matter
    return m


@pytest.mark.parametrize("backend", ["torchao", "bnb", "auto"])
def test_int8_runs_on_cpu_and_stays_close(backend):
    ref_model = _flamingo()
    ref = _hidden(ref_model)
    m = _flamingo()
    rep = quantize_(m, Int8WeightOnly(backend=backend))
    assert rep.backend == ("torchao" if backend == "auto" else backend)
    assert set(rep.parts) == {"llm", "xattn", "encoder"}
    assert all(p.layers > 0 for p in rep.parts.values())
    out = _hidden(m)
    rel = float((out - ref).norm() / ref.norm())
    assert rel < 0.03, rel  # int8 per-channel weights: logits within 3% (relative L2) of fp32
    for p in rep.parts.values():  # random Gaussian weights: per-row int8 gives ~44-48 dB
        assert 38 < p.sqnr_db < 60, p.sqnr_db
        assert p.bytes_after < p.bytes_before / 3
    assert sizes(m)["memory_bytes"] < sizes(ref_model)["memory_bytes"] / 2.5


def test_int8_model_still_classifies_and_generates(rng):
    m = _flamingo("tiny-gemma3")
    quantize_(m, Int8WeightOnly())
    scores = m.classify(ts_text(1), series_of(rng, 48), ["walking", "sitting"])
    assert set(scores) == {"walking", "sitting"} and all(math.isfinite(v) for v in scores.values())
    text = m.generate(ts_text(1), series_of(rng, 48), max_new_tokens=4)
    assert isinstance(text, str)


def test_int4_bnb_on_cpu_softprompt(rng):
    ref = _hidden(build_tiny("softprompt"))
    m = build_tiny("softprompt")
    rep = quantize_(m, Int4WeightOnly(group_size=32))  # auto -> bitsandbytes nf4 on CPU
    assert rep.backend == "bnb"
    assert "xattn" not in rep.parts and any("no 'xattn'" in n for n in rep.notes)
    assert 17 < rep.parts["llm"].sqnr_db < 26  # nf4, 32-wide blocks, Gaussian weights: ~21 dB
    rel = float((_hidden(m) - ref).norm() / ref.norm())
    assert rel < 0.5
    # LoRA weights stay fp32 and still train-able in shape; the LM base layers are 4-bit
    assert any("lora_A" in n for n, _ in m.named_parameters())
    assert m.classify(ts_text(1), series_of(rng, 48), ["a", "b"])


def test_sqnr_matches_theory_on_random_weights():
    m = build_tiny("flamingo")
    torch.manual_seed(0)
    with torch.no_grad():
        for mod in m.series_encoder.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.normal_()
    rep = quantize_(m, Int8WeightOnly(parts=("encoder",)))
    # uniform 8-bit rounding with a per-row absmax: 10 log10(12 * 127^2 / (max/std)^2) ~ 43-47 dB for Gaussian
    # rows of 32-64 values (max/std ~ 2.2-2.8)
    assert 40 < rep.parts["encoder"].sqnr_db < 50
    assert rep.parts["encoder"].min_layer_sqnr_db > 30


def test_unsupported_combinations_raise_clearly():
    with pytest.raises(QuantizationError, match="no x86 CPU kernel"):
        resolve_backend(Int4WeightOnly(backend="torchao"), "cpu")
    with pytest.raises(QuantizationError, match="MPS"):
        resolve_backend(Int4WeightOnly(), "mps")
    with pytest.raises(QuantizationError, match="backend 'gguf'"):
        resolve_backend(Int8WeightOnly(backend="gguf"), "cpu")
    m = build_tiny("flamingo")
    with pytest.raises(QuantizationError, match="no x86 CPU kernel"):
        quantize_(m, Int4WeightOnly(backend="torchao"))
    with pytest.raises(QuantizationError, match="tied"):
        quantize_(m, Int8WeightOnly(parts=("lm_head",)))
    with pytest.raises(ValueError, match="unknown parts"):
        quantize_(m, Int8WeightOnly(parts=("decoder",)))
    assert resolve_backend(Int4WeightOnly(), "cuda") == "torchao"
    assert resolve_backend(Int4WeightOnly(backend="bnb"), "cuda") == "bnb"


def test_parts_select_what_is_quantized():
    m = build_tiny("flamingo")
    n_params = parameter_count(m)
    lm_before = module_bytes(m.lm)
    rep = quantize_(m, Int8WeightOnly(parts=("xattn",)))
    assert set(rep.parts) == {"xattn"}
    assert module_bytes(m.lm) == lm_before  # the backbone untouched
    assert parameter_count(m) == n_params  # logical parameter count is unchanged by quantization
    rep2 = quantize_(m, Int8WeightOnly(parts=("xattn", "encoder")))  # composes: quantized layers skipped
    assert rep2.parts["xattn"].layers == 0 and rep2.parts["xattn"].skipped_already_quantized > 0
    assert rep2.parts["encoder"].layers > 0


def test_config_round_trip():
    for c in (Int8WeightOnly(parts=("llm",)), Int4WeightOnly(group_size=64, backend="bnb", bnb_quant_type="fp4")):
        assert config_from_dict(config_to_dict(c)) == c


def test_smollm2_note_is_reported(monkeypatch):
    m = build_tiny("flamingo")
    m.cfg = m.cfg.replace(backbone="smollm2-135m")  # only the name matters for the note
    rep = quantize_(m, Int4WeightOnly(parts=("llm",)))
    assert any("Q4_1" in n and "almost free" in n for n in rep.notes)
