"""Weight averaging ("model soup", Wortsman et al. 2022) of adapters fine-tuned from one starting adapter.

Runs of one recipe that differ only in seed or regularisation land in the same basin when they start from the same
adapter, and their average is one model of the same size and speed; it often generalises better than any one of
them and moves less with the seed. Only adapters that can be averaged are accepted: the same config apart from
training-only settings (dropout, augmentation), the same weights by name and shape, and frozen parts (a pretrained stem) that are
identical, since averaging a frozen part would silently make a stem nobody trained.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file

from edge_tslm.config import TSLMConfig
from edge_tslm.constants import MANIFEST_FILE, MANIFEST_TRANSFORMS, WEIGHTS_FILE
from edge_tslm.model.artifact import from_pretrained, read_config, save_pretrained

# config fields that do not change what an adapter computes at inference
TRAINING_ONLY = ("encoder.dropout", "encoder.augment_rotate_deg", "encoder.augment_warp")


def _inference_config(cfg: TSLMConfig) -> dict[str, Any]:
    """The config without training-only fields and without label offsets (fitted per model: a soup drops them)."""
    d = cfg.to_dict()
    for dotted in TRAINING_ONLY:
        part, key = dotted.split(".")
        d.get(part, {}).pop(key, None)
    d.pop("label_offsets", None)
    return d


def soup_weights(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float] | None = None,
                 frozen: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """The weighted average of adapter states with the same names and shapes; names starting with a `frozen`
    prefix must be equal in every state and are copied, not averaged."""
    if len(states) < 2:
        raise ValueError(f"a soup needs at least two adapters, got {len(states)}")
    w = [1.0] * len(states) if weights is None else [float(x) for x in weights]
    if len(w) != len(states) or not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"weights must be one non-negative number per adapter with a positive sum, got {list(w)}")
    names = set(states[0])
    for i, s in enumerate(states[1:], 1):
        if set(s) != names:
            diff = sorted(names ^ set(s))[:3]
            raise ValueError(f"adapter {i} has other weights than adapter 0 (e.g. {diff}); only runs of one "
                             "architecture can be averaged")
    out: dict[str, torch.Tensor] = {}
    total = sum(w)
    for k in sorted(names):
        ts = [s[k] for s in states]
        if any(t.shape != ts[0].shape for t in ts):
            raise ValueError(f"{k} has shapes {[tuple(t.shape) for t in ts]}; only runs of one architecture can be "
                             "averaged")
        if k.startswith(tuple(frozen)) or not ts[0].is_floating_point():
            if any(not torch.equal(t, ts[0]) for t in ts[1:]):
                raise ValueError(f"{k} is frozen (or not a float) but differs between the adapters: they read "
                                 "different stems or buffers, so their average would be a model nobody trained")
            out[k] = ts[0].clone()
            continue
        acc = torch.zeros_like(ts[0], dtype=torch.float64)
        for wi, t in zip(w, ts):
            acc += (wi / total) * t.to(torch.float64)
        out[k] = acc.to(ts[0].dtype)  # (same shape as every input)
    return out


def soup_artifacts(paths: Sequence[str | Path], out: str | Path, weights: Sequence[float] | None = None) -> Path:
    """Average the adapters of `paths` (torch artifacts of one recipe) into a new artifact at `out`. Label offsets
    stored in the ingredients were fitted to them, not to their average, so the soup has none: calibrate it anew."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ValueError(f"a soup needs at least two adapters, got {len(paths)}")
    if Path(out).resolve() in {p.resolve() for p in paths}:
        raise ValueError(f"--out {out} is one of the adapters being averaged; write the soup to a new directory")
    for p in paths:
        if not (p / WEIGHTS_FILE).is_file():
            raise ValueError(f"{p} has no {WEIGHTS_FILE}: a soup averages torch artifacts (a run's --export or "
                             "models/<name>), not exported ONNX ones; export the soup afterwards")
        manifest = p / MANIFEST_FILE
        if manifest.is_file() and json.loads(manifest.read_text()).get(MANIFEST_TRANSFORMS):
            raise ValueError(f"{p} is quantized or pruned (its manifest lists transforms): average the full-precision "
                             "adapters, then quantize the soup")
    cfgs = [read_config(p) for p in paths]
    ref = _inference_config(cfgs[0])
    for p, c in zip(paths[1:], cfgs[1:]):
        other = _inference_config(c)
        if other != ref:
            diff = sorted(k for k in set(ref) | set(other) if ref.get(k) != other.get(k))
            raise ValueError(f"{p} has another config than {paths[0]} (differs in {diff}); only runs of one "
                             "architecture and task can be averaged")
    model = from_pretrained(paths[0])
    frozen = tuple(model.PRETRAINED_PARTS) + (() if cfgs[0].train_token_rows else ("new_tokens",))
    states = [load_file(str(p / WEIGHTS_FILE)) for p in paths]
    model.load_state_dict(soup_weights(states, weights, frozen), strict=False)
    model.cfg = model.cfg.replace(label_offsets=())
    record = {"soup": {"of": [str(p) for p in paths],
                       "weights": [1.0] * len(paths) if weights is None else [float(x) for x in weights]}}
    return save_pretrained(model, out, extra=record)
