"""Which series to encode together: one batch per run of similar lengths (pure Python: the runtime uses it too).

The encoder pads every series of a call to the longest. An ECG (4,500 samples) beside its RR tachogram (120)
would pad the tachogram 37-fold and double the encoder's work, so training and the runtime both encode series
in groups whose lengths stay within `ratio` of the group's shortest."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["length_groups"]


def length_groups(lengths: Sequence[int], ratio: float = 1.5) -> list[list[int]]:
    """Indices of `lengths` split into groups of similar length, each sorted, groups ordered by length."""
    if ratio < 1.0:
        raise ValueError(f"ratio must be >= 1, got {ratio}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] <= ratio * max(1, lengths[groups[-1][0]]):
            groups[-1].append(i)
        else:
            groups.append([i])
    return [sorted(g) for g in groups]
