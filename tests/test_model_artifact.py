"""Artifacts: config.json + adapter safetensors (trainable parts only) + manifest.json; exact round trip."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from conftest import VARIANTS, build_tiny, series_of, ts_text  # noqa: E402
from edge_tslm.backbones import load_backbone  # noqa: E402
from edge_tslm.config import TSLMConfig  # noqa: E402
from edge_tslm.constants import CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE  # noqa: E402
from edge_tslm.model import from_pretrained, save_pretrained  # noqa: E402
from edge_tslm.model.artifact import sha256_file  # noqa: E402
from edge_tslm.model.batch import collate  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402


def trained_like(variant: str, backbone: str = "tiny-llama"):
    """A model whose every trainable tensor moved off its init (so a round trip cannot pass by re-init)."""
    model = build_tiny(variant, backbone)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def logits(model, rng_seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(rng_seed)
    batch = collate(model.tokenizer, [ts_text(1), ts_text(3)], [series_of(rng, 50), series_of(rng, 9, 77, 130)], chat_format=False)
    with torch.no_grad():
        hidden, _ = model.hidden_states(batch)
        return model.head(hidden)


@pytest.mark.parametrize("backbone", ["tiny-llama", "tiny-gemma3"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip_is_exact(variant, backbone, tmp_path):
    model = trained_like(variant, backbone)
    out = save_pretrained(model, tmp_path / "art", metrics={"f1": 0.5, "on": "unit test"})
    assert sorted(p.name for p in out.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE])

    loaded = from_pretrained(out)  # the backbone is rebuilt from its name and checked against its sha256
    assert torch.equal(logits(loaded), logits(model))
    assert loaded.cfg == model.cfg
    # every trainable tensor came back bit-identical
    want = {n: p for n, p in model.named_parameters() if p.requires_grad}
    got = dict(loaded.named_parameters())
    for n, p in want.items():
        assert torch.equal(got[n], p), n


@pytest.mark.parametrize("variant", VARIANTS)
def test_artifact_contents(variant, tmp_path):
    model = trained_like(variant)
    out = save_pretrained(model, tmp_path / "art", metrics={"f1": 0.5})

    cfg = json.loads((out / CONFIG_FILE).read_text())
    assert cfg == json.loads(json.dumps(model.cfg.to_dict()))
    assert TSLMConfig.from_dict(cfg) == model.cfg  # the file alone rebuilds the config (tuples included)
    assert cfg["backbone"] == "tiny-llama" and cfg["backbone_sha256"] == model.info.sha256 != ""

    state = load_file(str(out / WEIGHTS_FILE))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(state) == trainable  # the trainable parts, nothing more, nothing less
    lm_keys = [k for k in state if k.startswith("lm.")]
    assert all("lora_" in k for k in lm_keys)
    assert bool(lm_keys) == (variant == "softprompt")
    lm_params = sum(p.numel() for n, p in model.named_parameters() if n.startswith("lm.") and "lora_" not in n)
    assert sum(t.numel() for t in state.values()) < lm_params  # the backbone is named, never copied

    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["variant"] == variant
    assert manifest["backbone"] == {"name": "tiny-llama", "sha256": model.info.sha256, "model_type": "llama"}
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        f = manifest["files"][name]
        assert f["sha256"] == sha256_file(out / name) and f["size_bytes"] == (out / name).stat().st_size
    assert manifest["parameters"] == model.parameter_counts()
    assert manifest["metrics"] == {"f1": 0.5} and manifest["transforms"] == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_wrong_backbone_checksum_is_refused(variant, tmp_path):
    out = save_pretrained(trained_like(variant), tmp_path / "art")
    cfg = json.loads((out / CONFIG_FILE).read_text())
    cfg["backbone_sha256"] = "0" * 64
    (out / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="sha256"):
        from_pretrained(out)


@pytest.mark.parametrize("variant", VARIANTS)
def test_other_answer_end_token_is_refused(variant, tmp_path):
    """A model trained to end answers with one token is refused by a tokenizer that ends them with another (the H100
    adapters ended theirs with <|im_start|>); one recorded with the tokenizer's own eos loads."""
    model = trained_like(variant)
    eos = model.tokenizer.convert_ids_to_tokens(model.tokenizer.eos_token_id)
    model.cfg = model.cfg.replace(answer_end_token=eos)
    out = save_pretrained(model, tmp_path / "art")
    assert from_pretrained(out).cfg.answer_end_token == eos
    cfg = json.loads((out / CONFIG_FILE).read_text())
    cfg["answer_end_token"] = "<|not_this_one|>"
    (out / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"end each answer with '<\|not_this_one\|>'.*ends answers with"):
        from_pretrained(out)


def test_other_backbone_is_refused(tmp_path):
    out = save_pretrained(trained_like("flamingo", "tiny-llama"), tmp_path / "art")
    with pytest.raises(ValueError, match="sha256"):
        from_pretrained(out, backbone=load_backbone("tiny-gemma3"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_weights_missing_or_extra_keys_are_refused(variant, tmp_path):
    out = save_pretrained(trained_like(variant), tmp_path / "art")
    state = load_file(str(out / WEIGHTS_FILE))
    dropped = sorted(state)[0]
    save_file({k: v for k, v in state.items() if k != dropped}, str(out / WEIGHTS_FILE))
    with pytest.raises(ValueError, match="missing") as err:
        from_pretrained(out)
    assert dropped in str(err.value)

    save_file({**state, "stray.weight": torch.zeros(2)}, str(out / WEIGHTS_FILE))
    with pytest.raises(ValueError, match="unexpected"):
        from_pretrained(out)


def test_not_an_artifact(tmp_path):
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE):
        from_pretrained(tmp_path)


def test_unknown_config_key_is_refused(tmp_path):
    out = save_pretrained(trained_like("flamingo"), tmp_path / "art")
    cfg = json.loads((out / CONFIG_FILE).read_text())
    cfg["encoder"]["patch_length"] = 8
    (out / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="patch_length"):
        from_pretrained(out)
