"""CUDA paths on tiny models: the same answers as on the CPU, a bf16 training step, bitsandbytes nf4 and the
bench's CUDA memory counter. Marked `gpu`: run with `pytest -m gpu` on a machine with CUDA; skipped elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import VARIANTS, build_tiny, open_gates, series_of, ts_text  # noqa: E402
from edge_tslm.model.batch import collate  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (torch.cuda.is_available() is False here)"),
]
LABELS = ["walking", "sitting", "lying"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_classify_on_cuda_matches_cpu(variant):
    rng = np.random.default_rng(0)
    text, series = ts_text(2), series_of(rng, 64, 40)
    cpu = build_tiny(variant)
    if variant == "flamingo":
        open_gates(cpu, 0.5)
    want = cpu.classify(text, series, LABELS)
    gpu = cpu.to("cuda")
    assert gpu.device.type == "cuda"
    got = gpu.classify(text, series, LABELS)
    assert list(got) == list(want)
    # TF32 may be on for CUDA matmuls: scores are sums of log-probs, compare with a tolerance that admits it
    np.testing.assert_allclose([got[k] for k in LABELS], [want[k] for k in LABELS], rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_training_step_on_cuda(variant):
    model = build_tiny(variant).to("cuda").train()
    rng = np.random.default_rng(1)
    batch = collate(model.tokenizer, [ts_text(1), ts_text(1, "and this?")], [series_of(rng, 40), series_of(rng, 24)],
                    ["Answer: walking", "Answer: lying"], chat_format=False).to("cuda")
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model.loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(not torch.equal(p, trained[n]) for n, p in model.named_parameters() if n in trained)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad), "master weights stay fp32"


@pytest.mark.parametrize("kind", ["bnb-nf4", "torchao-int8"])
def test_quantized_model_classifies_on_cuda(kind):
    from edge_tslm.quantize.api import Int4WeightOnly, Int8WeightOnly, quantize_

    pytest.importorskip("bitsandbytes" if kind.startswith("bnb") else "torchao", reason=f"{kind.split('-')[0]} is not installed")
    model = build_tiny("flamingo")
    open_gates(model, 0.5)
    rng = np.random.default_rng(2)
    text, series = ts_text(1), series_of(rng, 64)
    want = model.classify(text, series, LABELS)
    model = model.to("cuda")
    cfg = Int4WeightOnly(parts=("llm",), backend="bnb") if kind == "bnb-nf4" else Int8WeightOnly(parts=("llm",), backend="torchao")
    rep = quantize_(model, cfg, device="cuda")
    got = model.classify(text, series, LABELS)
    assert list(got) == list(want)
    assert all(np.isfinite(v) and v < 0 for v in got.values())  # log-probabilities from the CUDA kernels
    assert rep is not None
    if kind == "torchao-int8":  # per-channel int8 keeps a tiny LM's scores close
        np.testing.assert_allclose([got[k] for k in LABELS], [want[k] for k in LABELS], rtol=0.05, atol=0.05)


def test_cuda_peak_memory_counter_sees_a_model():
    torch.cuda.reset_peak_memory_stats()
    model = build_tiny("flamingo").to("cuda")
    rng = np.random.default_rng(3)
    model.classify(ts_text(1), series_of(rng, 64), LABELS)
    torch.cuda.synchronize()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    assert torch.cuda.max_memory_allocated() >= params
