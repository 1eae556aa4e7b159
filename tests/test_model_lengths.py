"""Any length: one patch up to 100,000 samples runs (no 4,096 cap); shorter than one patch is refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import build_tiny, open_gates, series_of, ts_text  # noqa: E402
from edge_tslm.model.batch import collate  # noqa: E402

P = 4  # the small configs' patch_len
LENGTHS = (P, P + 1, 2 * P - 1, 100, 4096, 4097, 10_000, 100_000)


@pytest.fixture(scope="module")
def flamingo_model():
    model = build_tiny("flamingo")
    open_gates(model)
    return model


@pytest.mark.parametrize("length", LENGTHS)
def test_series_encoder_takes_any_length(flamingo_model, length, rng):
    enc = flamingo_model.series_encoder
    assert enc.encoder.cfg.patch_len == P
    x = torch.from_numpy(series_of(rng, length)[0])[None]  # (1, L)
    with torch.no_grad():
        h, pm = enc.encoder(x, torch.ones_like(x, dtype=torch.bool), torch.tensor([0]))
        lat = enc(x, torch.ones_like(x, dtype=torch.bool), torch.tensor([0]))
    assert h.shape == (1, math.ceil(length / P), 32) and bool(pm.all())
    assert lat.shape == (1, 8, 32) and bool(torch.isfinite(lat).all())


@pytest.mark.parametrize("length", (P, 4097, 100_000))
def test_flamingo_forward_takes_any_length(flamingo_model, length, rng):
    batch = collate(flamingo_model.tokenizer, [ts_text(1)], [series_of(rng, length)], chat_format=False)
    with torch.no_grad():
        hidden, _ = flamingo_model.hidden_states(batch)
    assert hidden.shape[:2] == batch.input_ids.shape and bool(torch.isfinite(hidden).all())


def test_positions_beyond_the_longest_trained_length_stay_distinct(flamingo_model):
    """Sinusoidal patch positions have no table to outgrow: patches 30,000 apart are still told apart."""
    from edge_tslm.model.encoder import sinusoidal_positions

    pos = sinusoidal_positions(5, 32, torch.device("cpu"), offset=30_000)
    assert torch.isfinite(pos).all() and torch.cdist(pos, pos).fill_diagonal_(1).min() > 1e-3


@pytest.mark.parametrize("variant", ["flamingo", "softprompt"])
def test_shorter_than_one_patch_is_refused(variant, rng):
    model = build_tiny(variant)
    batch = collate(model.tokenizer, [ts_text(1)], [series_of(rng, P - 1)], chat_format=False)
    with pytest.raises(ValueError, match="shorter than one patch"):
        model.hidden_states(batch)


@pytest.mark.parametrize("variant", ["flamingo", "softprompt"])
def test_short_series_is_refused_even_beside_a_long_one(variant, rng):
    """Padding to a batch-mate's length must not smuggle a too-short series past the check."""
    model = build_tiny(variant)
    batch = collate(model.tokenizer, [ts_text(2)], [series_of(rng, 100, P - 2)], chat_format=False)
    with pytest.raises(ValueError, match="shorter than one patch"):
        model.hidden_states(batch)
    batch = collate(
        model.tokenizer, [ts_text(1), ts_text(1)], [series_of(rng, 100), series_of(rng, 1)], chat_format=False
    )
    with pytest.raises(ValueError, match="shorter than one patch"):
        model.hidden_states(batch)


@pytest.mark.parametrize("variant", ["flamingo", "softprompt"])
def test_empty_series_is_refused(variant):
    model = build_tiny(variant)
    with pytest.raises(ValueError):
        model.hidden_states(
            collate(model.tokenizer, [ts_text(1)], [[np.zeros(0, dtype=np.float32)]], chat_format=False)
        )


def test_softprompt_long_series_splices_one_token_per_patch(rng):
    model = build_tiny("softprompt")
    batch = collate(model.tokenizer, [ts_text(1)], [series_of(rng, 4097)], chat_format=False)
    with torch.no_grad():
        hidden, _ = model.hidden_states(batch)
    assert hidden.shape[1] == batch.input_ids.shape[1] - 1 + math.ceil(4097 / P)
    assert bool(torch.isfinite(hidden).all())


@pytest.mark.slow
def test_softprompt_forward_at_100k_samples(rng):
    """25,000 soft tokens through the LM: ~80 s and ~10 GB on 2 CPU cores, hence slow."""
    model = build_tiny("softprompt")
    batch = collate(model.tokenizer, [ts_text(1)], [series_of(rng, 100_000)], chat_format=False)
    with torch.no_grad():
        hidden, _ = model.hidden_states(batch)
    assert hidden.shape[1] == batch.input_ids.shape[1] - 1 + 25_000
    assert bool(torch.isfinite(hidden).all())
