"""An adapter trained with its cross-attention blocks at some layers continues on a model with them at others."""

import pytest

torch = pytest.importorskip("torch")

from conftest import build_tiny  # noqa: E402
from edge_tslm.config import FusionConfig, parse_fusion_layers  # noqa: E402
from edge_tslm.model.artifact import save_pretrained  # noqa: E402
from edge_tslm.train.recipe import fusion_layers_of, load_adapter, remap_fusion_blocks  # noqa: E402

SMALL_FUSION = dict(heads=2, dim_head=16)


def test_blocks_move_in_order_and_everything_else_loads_as_saved(tmp_path):
    src = build_tiny(seed=1, fusion=FusionConfig(layers=(0, 1), **SMALL_FUSION))
    save_pretrained(src, tmp_path / "a")
    dst = build_tiny(seed=2, fusion=FusionConfig(layers=(2, 3), **SMALL_FUSION))
    load_adapter(dst, tmp_path / "a")
    for s, d in ((0, 2), (1, 3)):
        for (name, p), (name2, q) in zip(src.xattn[str(s)].state_dict().items(), dst.xattn[str(d)].state_dict().items()):
            assert name == name2 and torch.equal(p, q), name
    for (name, p), q in zip(src.series_encoder.state_dict().items(), dst.series_encoder.state_dict().values()):
        assert torch.equal(p, q), name


def test_fewer_target_layers_drop_the_last_blocks_and_more_keep_their_init():
    state = {"xattn.15.w": torch.ones(1), "xattn.20.w": 2 * torch.ones(1), "xattn.25.w": 3 * torch.ones(1), "enc.w": torch.zeros(1)}
    out, moved = remap_fusion_blocks(state, [29, 27])
    assert moved == {15: 27, 20: 29} and fusion_layers_of(out) == [27, 29]
    assert out["xattn.27.w"].item() == 1 and out["xattn.29.w"].item() == 2 and "enc.w" in out
    out, moved = remap_fusion_blocks(state, [24, 26, 28, 29])
    assert moved == {15: 24, 20: 26, 25: 28} and "xattn.29.w" not in out


def test_the_flag_is_parsed_before_any_model():
    assert parse_fusion_layers("29,25,27") == (25, 27, 29) and parse_fusion_layers(" ") is None
    for bad in ("25;27", "25,25", "-3"):
        with pytest.raises(ValueError, match="layer indices"):
            parse_fusion_layers(bad)
