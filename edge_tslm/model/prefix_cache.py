"""Reuse the KV cache of the prompt text that comes before the first <ts> token.

Every window of a task starts with the same system prompt, pre-prompt and first description words, and in the
Flamingo model no token before the first <ts> can see any media: those positions' keys and values are the
frozen LM's alone, identical from window to window. Computing them once per evaluation or stream instead of once
per window removes about 40 % of a HAR decision's prefill. Enabled only inside ``model.prefix_caching()`` (or by
a long-lived inference object), because changing the weights (training, quantization) invalidates it.
"""

from __future__ import annotations

import copy

import torch


class PrefixCache:
    """One remembered prefix: its token ids and a DynamicCache holding exactly those positions."""

    def __init__(self) -> None:
        self.ids: torch.Tensor | None = None  # (P,)
        self.cache = None
        self.hits = 0

    def lookup(self, ids: torch.Tensor, limit: int):
        """ids (T,) -> (n, cache holding ids[:n]) for the longest reusable prefix n <= limit, or (0, None)."""
        if self.ids is None or limit <= 0:
            return 0, None
        m = min(limit, len(self.ids), len(ids))
        same = (self.ids[:m] == ids[:m]).to(torch.int8)  # (m,)
        n = int(same.cumprod(0).sum())
        if n == 0:
            return 0, None
        self.hits += 1
        return n, _cropped(self.cache, n)

    def store(self, ids: torch.Tensor, cache) -> None:
        """Remember ids (P,) and a copy of ``cache`` cropped to those P positions (``cache`` is left as is)."""
        if len(ids) == 0 or not croppable(cache):
            return
        if self.ids is not None and len(self.ids) >= len(ids) and bool((self.ids[: len(ids)] == ids).all()):
            return  # already holds this prefix
        self.ids, self.cache = ids.detach().clone(), _cropped(cache, len(ids))


def croppable(cache) -> bool:
    """Plain per-layer caches only: a sliding-window layer may already have dropped the prefix's early positions."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)


def _cropped(cache, n: int):
    """A copy of ``cache`` holding its first n positions (``cache`` itself is untouched)."""
    kept = copy.deepcopy(cache)
    extra = kept.get_seq_length() - n
    if extra > 0:
        kept.crop(-extra)  # transformers' crop takes the number of positions to remove, negated
    return kept
