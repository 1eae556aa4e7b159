"""Artifacts are directories: config.json + the trainable parts as safetensors + manifest.json.

The backbone is named and checksummed, never copied. No pickles anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from edge_tslm import __version__
from edge_tslm.backbones import file_sha256
from edge_tslm.config import TSLMConfig
from edge_tslm.constants import (
    CONFIG_FILE,
    MANIFEST_BACKBONE,
    MANIFEST_FILE,
    MANIFEST_FILES,
    MANIFEST_FORMAT,
    MANIFEST_METRICS,
    MANIFEST_PARAMS,
    MANIFEST_SHA256,
    MANIFEST_SIZE_BYTES,
    MANIFEST_TRANSFORMS,
    WEIGHTS_FILE,
)

FORMAT = "edge-tslm/1"


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parts only: everything not in the backbone, plus LoRA weights."""
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if model.is_adapter_param(k)}


sha256_file = file_sha256  # one checksum for backbones and artifacts


def save_pretrained(
    model: torch.nn.Module,
    out_dir: str | Path,
    *,
    metrics: dict[str, Any] | None = None,
    transforms: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the artifact directory; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(model.cfg.to_dict(), indent=2))
    save_file(adapter_state(model), str(out / WEIGHTS_FILE), metadata={"format": FORMAT})
    files = {
        f.name: {MANIFEST_SIZE_BYTES: f.stat().st_size, MANIFEST_SHA256: sha256_file(f)}
        for f in (out / CONFIG_FILE, out / WEIGHTS_FILE)
    }
    info = model.info
    manifest = {
        MANIFEST_FORMAT: FORMAT,
        "edge_tslm_version": __version__,
        "variant": model.cfg.variant,
        MANIFEST_BACKBONE: {"name": info.name, "sha256": info.sha256, "model_type": info.model_type},
        MANIFEST_FILES: files,
        MANIFEST_PARAMS: model.parameter_counts(),
        MANIFEST_TRANSFORMS: transforms or [],
        MANIFEST_METRICS: metrics or {},
        **(extra or {}),
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return out


def read_config(path: str | Path) -> TSLMConfig:
    f = Path(path) / CONFIG_FILE
    if not f.exists():
        raise FileNotFoundError(f"{path} is not an edge-tslm artifact: {CONFIG_FILE} is missing")
    return TSLMConfig.from_dict(json.loads(f.read_text()))


def from_pretrained(path: str | Path, *, backbone=None, device: str | torch.device = "cpu"):
    """Rebuild the model its config names, on its checksummed backbone, and load the trainable parts."""
    from edge_tslm.model.build import build_model

    manifest = Path(path) / MANIFEST_FILE
    if manifest.exists() and json.loads(manifest.read_text()).get(MANIFEST_TRANSFORMS):
        from edge_tslm.quantize import load_compressed  # quantized / pruned / shared: re-applied from the recipe

        return load_compressed(path, backbone=backbone, device=device)
    cfg = read_config(path)
    model = build_model(cfg, backbone)
    weights = Path(path) / WEIGHTS_FILE
    state = load_file(str(weights))
    expected = set(adapter_state(model))
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(
            f"{weights} does not fit this model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    model.load_state_dict(state, strict=False)
    return model.to(device).eval()


def write_label_offsets(path: str | Path, offsets: tuple[float, ...], record: dict[str, Any]) -> TSLMConfig:
    """Store fitted label offsets in an artifact's config.json (torch or exported) and keep its manifest true:
    config.json's size and checksum, plus a "calibration" record of how the offsets were fitted."""
    path = Path(path)
    cfg = read_config(path).replace(label_offsets=tuple(float(o) for o in offsets))  # validated: one per label
    f = path / CONFIG_FILE
    f.write_text(json.dumps(cfg.to_dict(), indent=2))
    mf = path / MANIFEST_FILE
    if mf.exists():
        manifest = json.loads(mf.read_text())
        manifest.setdefault(MANIFEST_FILES, {})[CONFIG_FILE] = {MANIFEST_SIZE_BYTES: f.stat().st_size,
                                                                 MANIFEST_SHA256: sha256_file(f)}
        manifest["calibration"] = record
        mf.write_text(json.dumps(manifest, indent=2))
    return cfg
