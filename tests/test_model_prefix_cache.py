"""Reusing the KV of the text before the first <ts> changes no number: classify and generate inside
model.prefix_caching() equal the uncached calls, across windows that differ after the shared prefix."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_BACKBONES, build_tiny, open_gates, series_of  # noqa: E402

LABELS = ("walking", "walking upstairs", "sitting")


def _prompts():
    q = "Which activity? Options: walking, walking upstairs, sitting."
    # same opening words, different numbers after them (as real series descriptions differ per window)
    return [f"Accelerometer.\nx: mean {m} g <ts><endofchunk>\ny: mean {m / 2} g <ts><endofchunk>\n{q}" for m in (0.97, -0.31, 0.5)]


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_classify_with_prefix_cache_equals_without(backbone, rng):
    model = build_tiny("flamingo", backbone)
    open_gates(model, 0.5)  # media must matter, or a wrong cache could not show
    windows = [(text, series_of(rng, 40, 90)) for text in _prompts()]
    plain = [model.classify(t, s, LABELS) for t, s in windows]
    with model.prefix_caching():
        cached = [model.classify(t, s, LABELS) for t, s in windows]
        hits = model._prefix.hits
    # the first window fills the cache, the others reuse it; Gemma-3's sliding-window layers are not cached
    assert hits == (len(windows) - 1 if backbone == "tiny-llama" else 0)
    for p, c in zip(plain, cached):
        for lab in LABELS:
            assert c[lab] == pytest.approx(p[lab], abs=1e-4), lab
    assert model._prefix is None  # off again after the block


def test_generate_with_prefix_cache_equals_without(rng):
    model = build_tiny("flamingo")
    open_gates(model, 0.5)
    windows = [(text, series_of(rng, 40, 90)) for text in _prompts()[:2]]
    plain = [model.generate(t, s, max_new_tokens=8) for t, s in windows]
    with model.prefix_caching():
        cached = [model.generate(t, s, max_new_tokens=8) for t, s in windows]
    assert cached == plain


def test_prefix_cache_never_covers_a_ts_token(rng):
    """A prompt that starts with its series has nothing cacheable; the prefix stops before the first <ts>."""
    model = build_tiny("flamingo")
    open_gates(model, 0.5)
    text = "<ts><endofchunk> what is it?"
    s = series_of(rng, 40)
    plain = model.classify(text, s, LABELS)
    with model.prefix_caching():
        first = model.classify(text, s, LABELS)
        again = model.classify(text, series_of(rng, 40), LABELS)
        assert model._prefix.hits <= 1
    for lab in LABELS:
        assert first[lab] == pytest.approx(plain[lab], abs=1e-4)
    assert again != first
