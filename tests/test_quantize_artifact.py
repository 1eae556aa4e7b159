"""Compressed artifacts: manifest (transforms, sizes, sha256), and reloads that equal the in-memory model."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")
pytest.importorskip("bitsandbytes")

from conftest import build_tiny, open_gates, series_of, ts_text  # noqa: E402

from edge_tslm.constants import MANIFEST_FILE, WEIGHTS_FILE  # noqa: E402
from edge_tslm.model.artifact import sha256_file  # noqa: E402
from edge_tslm.quantize import (  # noqa: E402
    Int4WeightOnly,
    Int8WeightOnly,
    is_shared,
    load_compressed,
    prune_,
    quantize_,
    save_compressed,
    share_xattn_,
)


def _logits(model, seed=0):
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        last, _ = model.prefill(model._batch(ts_text(2), series_of(rng, 40, 28)))
    return last


@pytest.mark.parametrize(
    "variant,config",
    [
        ("flamingo", Int8WeightOnly()),
        ("flamingo", Int4WeightOnly(group_size=32)),
        ("softprompt", Int8WeightOnly(backend="bnb")),
    ],
)
def test_quantized_round_trip_logits_equal(tmp_path, variant, config):
    m = build_tiny(variant)
    if variant == "flamingo":
        open_gates(m, 0.5)
    rep = quantize_(m, config)
    want = _logits(m)
    out = save_compressed(m, tmp_path / "q", metrics={"note": "test"})
    man = json.loads((out / MANIFEST_FILE).read_text())
    q = [t for t in man["transforms"] if t["op"] == "quantize"]
    assert len(q) == 1 and q[0]["config"]["type"] == type(config).__name__ and q[0]["backend"] == rep.backend
    assert man["files"][WEIGHTS_FILE]["sha256"] == sha256_file(out / WEIGHTS_FILE)
    s = man["sizes"]
    assert s["disk"]["total"] == s["disk"]["artifact_files"] + s["disk"]["backbone_at_quantized_size"]
    assert s["memory_bytes"] == s["backbone_bytes_quantized"] + s["adapter_bytes_quantized"]
    assert "load_compressed" in man["load_with"]
    back = load_compressed(out)
    torch.testing.assert_close(_logits(back), want, rtol=0, atol=0)  # re-quantization is deterministic
    assert json.loads((out / MANIFEST_FILE).read_text())["transforms"] == back.__dict__["_edge_compression"]["transforms"]


def test_shared_pruned_quantized_round_trip(tmp_path):
    m = build_tiny("flamingo")
    open_gates(m, 0.5)
    share_xattn_(m, init="mean")
    prune_(m, 0.3)
    quantize_(m, Int8WeightOnly())
    want = _logits(m)
    out = save_compressed(m, tmp_path / "c")
    man = json.loads((out / MANIFEST_FILE).read_text())
    assert [t["op"] for t in man["transforms"]] == ["share_xattn", "prune", "quantize"]
    from safetensors.torch import load_file

    keys = load_file(str(out / WEIGHTS_FILE))
    assert not any(k.startswith(f"xattn.{i}.") for k in keys for i in m.insertion[1:])  # stored once
    back = load_compressed(out)
    assert is_shared(back)
    torch.testing.assert_close(_logits(back), want, rtol=0, atol=0)
    # a re-save of the reloaded model writes the same adapter tensors
    again = load_file(str(save_compressed(back, tmp_path / "c2") / WEIGHTS_FILE))
    assert set(again) == set(keys) and all(torch.equal(again[k], keys[k]) for k in keys)


def test_plain_artifact_loads_and_sizes_shrink(tmp_path):
    from edge_tslm.model.artifact import save_pretrained

    m = build_tiny("flamingo")
    plain = save_pretrained(m, tmp_path / "p")
    a = load_compressed(plain)
    torch.testing.assert_close(_logits(a), _logits(m))
    fp32 = save_compressed(a, tmp_path / "fp32")
    quantize_(a, Int8WeightOnly())
    q = save_compressed(a, tmp_path / "int8")
    s0 = json.loads((fp32 / MANIFEST_FILE).read_text())["sizes"]
    s1 = json.loads((q / MANIFEST_FILE).read_text())["sizes"]
    assert s1["disk"]["total"] < s0["disk"]["total"]
    assert s1["memory_bytes"] < s0["memory_bytes"] / 2.5
    assert s1["parameters"] == s0["parameters"]
