"""training/soup.py: the average of adapters of one recipe, and the refusals that keep it one model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from edge_tslm.constants import MANIFEST_FILE, WEIGHTS_FILE
from edge_tslm.model.artifact import from_pretrained, save_pretrained, write_label_offsets
from edge_tslm.train.soup import soup_artifacts, soup_weights

LABELS = ("walking", "walking upstairs", "walking downstairs", "sitting", "standing", "lying")


def _tiny(stem: bool = True, dropout: float = 0.1):
    from conftest import build_tiny
    from edge_tslm.config import EncoderConfig

    return build_tiny("flamingo", "tiny-llama", fs=50.0, task="har", labels=LABELS,
                      encoder=EncoderConfig(dim=32, conv_layers=1, scale_token=True, minirocket_stem=stem,
                                            dropout=dropout))


def _trained(seed: int, **kw):
    """A tiny model whose trainable weights moved away from the shared start, as a run with this seed would."""
    model = _tiny(**kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_soup_is_the_mean_of_the_trained_weights_and_keeps_the_frozen_stem(tmp_path):
    a, b, c = _trained(1), _trained(2, dropout=0.5), _trained(3)  # dropout is training-only: may differ
    for i, (name, m) in enumerate(zip("abc", (a, b, c))):
        save_pretrained(m, tmp_path / name)
        write_label_offsets(tmp_path / name, (0.0, float(i), 0.0, 0.0, 0.0, 0.0), {"split": "val"})  # each its own
    out = soup_artifacts([tmp_path / n for n in "abc"], tmp_path / "soup", weights=[2, 1, 1])
    soup = from_pretrained(out)
    sa, sb, sc = (dict(m.named_parameters()) for m in (a, b, c))
    moved = 0
    for name, p in soup.named_parameters():
        if not name.startswith("lm.") or "lora_" in name:
            want = (2 * sa[name] + sb[name] + sc[name]) / 4
            torch.testing.assert_close(p, want, rtol=1e-6, atol=1e-6)
            moved += int(sa[name].requires_grad and not torch.equal(p, sa[name]))
    assert moved > 0  # the trained parts really are averaged, not copied from the first
    stems = [load_file(str(tmp_path / n / WEIGHTS_FILE)) for n in ("a", "soup")]
    stem_keys = [k for k in stems[0] if k.startswith("series_encoder.stem.")]
    assert stem_keys and all(torch.equal(stems[0][k], stems[1][k]) for k in stem_keys)
    assert soup.cfg.label_offsets == ()  # fitted to the ingredients, not to their average: calibrate the soup anew
    record = json.loads((out / MANIFEST_FILE).read_text())["soup"]
    assert record == {"of": [str(tmp_path / n) for n in "abc"], "weights": [2.0, 1.0, 1.0]}


def test_soup_refuses_what_would_not_be_one_model(tmp_path):
    a = _trained(1)
    save_pretrained(a, tmp_path / "a")
    save_pretrained(_tiny(stem=False), tmp_path / "nostem")
    with pytest.raises(ValueError, match="one of the adapters being averaged"):
        soup_artifacts([tmp_path / "a", tmp_path / "a"], tmp_path / "a")
    with pytest.raises(ValueError, match="no adapter.safetensors"):
        soup_artifacts([tmp_path / "a", tmp_path / "missing"], tmp_path / "x")
    with pytest.raises(ValueError, match="another config"):
        soup_artifacts([tmp_path / "a", tmp_path / "nostem"], tmp_path / "x")
    state = load_file(str(tmp_path / "a" / WEIGHTS_FILE))
    other = dict(state)
    k = next(k for k in state if k.startswith("series_encoder.stem.") and state[k].is_floating_point())
    other[k] = state[k] + 1.0  # another stem
    with pytest.raises(ValueError, match="frozen"):
        soup_weights([state, other], frozen=("series_encoder.stem.",))
    with pytest.raises(ValueError, match="at least two"):
        soup_weights([state])
    with pytest.raises(ValueError, match="one non-negative number per adapter"):
        soup_weights([state, state], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="one non-negative number per adapter"):
        soup_weights([state, state], weights=[1.0, float("nan")])
    with pytest.raises(ValueError, match="other weights"):
        soup_weights([state, {n: t for n, t in state.items() if n != k}])
