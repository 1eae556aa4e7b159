"""The seeded stratified evaluation subset, shared by benchmarks/eval_tslm.py (torch) and eval_runtime.py (torch-free)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def stratified_subset(samples: Sequence[Any], per_class: int, seed: int = 0) -> list[int]:
    """A fixed, seeded subset with up to per_class samples of each label (sorted by index).

    ``samples``: anything with a ``.label`` (Samples, or lazy records whose label is known without reading
    the signal); the same labels and seed give the same indices whichever is passed.
    """
    return stratified_indices([s.label for s in samples], per_class, seed)


def stratified_indices(labels: Sequence[str], per_class: int, seed: int = 0) -> list[int]:
    """stratified_subset over the labels alone."""
    rng = np.random.default_rng(seed)
    idx: list[int] = []
    for lab in sorted(set(labels)):
        members = [i for i, l in enumerate(labels) if l == lab]
        idx += list(rng.choice(members, size=min(per_class, len(members)), replace=False))
    return sorted(int(i) for i in idx)
