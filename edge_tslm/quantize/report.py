"""Sizes, and saving / reloading compressed artifacts.

Storage choice for a quantized artifact: the adapter is stored in **fp32** (exactly the weights that were
quantized: after any pruning/sharing, before quantization) together with the quantization recipe (the
configs, in order, in the manifest's ``transforms``). ``load_compressed`` rebuilds the model on its named,
checksummed backbone, re-shares if the artifact was shared, loads the fp32 adapter and re-applies each
recipe. Weight quantization is deterministic (round-to-nearest with absmax / min-max scales), so the
reloaded model's logits equal the just-quantized model's (tested). Why not int8 + scales on disk:
(1) the backbone is never copied, so it has to be re-quantized at load anyway; (2) the adapter is a few
percent of the bytes; (3) one fp32 source serves every backend and device (torchao, bitsandbytes, an ONNX
export) without a dequantize-requantize round trip that would move weights by an ulp.

Size accounting (manifest ``sizes``):
  memory_bytes        sum of parameter + buffer bytes of the whole model as it sits in memory after
                      the transforms (quantized tensors at their stored size: int8/4-bit data plus
                      scales, zero points, absmax, code tables; shared tensors once)
  disk.artifact_files the files in the artifact directory (config, fp32 adapter, manifest)
  disk.backbone_at_quantized_size
                      the backbone's parameters + buffers at their in-memory (quantized) size, i.e. what
                      a file of the quantized backbone would hold; the backbone itself is not copied
  disk.total          the two added: the on-disk footprint of a deployment that stores the quantized
                      backbone once beside this artifact
  adapter_bytes_quantized  the adapter as it sits in memory (quantized parts at their quantized size)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
from edge_tslm.quantize.api import compression_record, config_from_dict, module_bytes, parameter_count, quantize_

LOADER = "edge_tslm.quantize.load_compressed"
STORAGE_NOTE = (
    "adapter stored in fp32 (after pruning/sharing, before quantization); quantization is re-applied at "
    "load from the recipe in 'transforms' (deterministic): use edge_tslm.quantize.load_compressed"
)
DISK_NOTE = (
    "disk.total = the artifact's files + the backbone counted at its quantized in-memory size (the backbone "
    "is named and checksummed, not copied); adapter file bytes are fp32, see adapter_bytes_quantized for "
    "its quantized size"
)


def _is_backbone(name: str) -> bool:
    return name.startswith("lm.") and "lora_" not in name


def sizes(model: nn.Module, artifact_dir: str | Path | None = None) -> dict[str, Any]:
    """Memory, disk (artifact files + backbone at quantized size) and parameter counts of a model."""
    backbone = module_bytes(model, exclude=lambda n: not _is_backbone(n))
    adapter = module_bytes(model, exclude=_is_backbone)
    out: dict[str, Any] = {
        "memory_bytes": module_bytes(model),
        "backbone_bytes_quantized": backbone,
        "adapter_bytes_quantized": adapter,
        "parameters": {
            "total": parameter_count(model),
            "backbone": _count(model, backbone=True),
            "adapter": _count(model, backbone=False),
        },
    }
    if artifact_dir is not None:
        files = sum(f.stat().st_size for f in Path(artifact_dir).iterdir() if f.is_file())
        out["disk"] = {
            "artifact_files": files,
            "backbone_at_quantized_size": backbone,
            "total": files + backbone,
            "accounting": DISK_NOTE,
        }
    return out


def part_counts(model: nn.Module) -> dict[str, int]:
    """Logical parameters per top-level part (a 4-bit weight counts its unpacked shape; shared once)."""
    seen: set[int] = set()
    out: dict[str, int] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        part = "lora" if "lora_" in name else name.split(".")[0]
        out[part] = out.get(part, 0) + _numel(p)
    return out


def _numel(p: torch.Tensor) -> int:
    qs = getattr(p, "quant_state", None)
    return int(torch.Size(qs.shape).numel()) if type(p).__name__ == "Params4bit" and qs is not None else p.numel()


def _count(model: nn.Module, backbone: bool) -> int:
    seen: set[int] = set()
    n = 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen or _is_backbone(name) != backbone:
            continue
        seen.add(id(p))
        n += _numel(p)
    return n


def _saved_state(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the aliases of a shared cross-attention block: its weights are stored once."""
    from edge_tslm.quantize.share import is_shared

    if not is_shared(model):
        return state
    keep = f"xattn.{model.insertion[0]}."
    return {k: v for k, v in state.items() if not k.startswith("xattn.") or k.startswith(keep)}


def save_compressed(
    model: nn.Module,
    out_dir: str | Path,
    *,
    source: str | Path | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a compressed artifact: config.json, the fp32 adapter, manifest.json with transforms + sizes."""
    from safetensors.torch import save_file

    from edge_tslm import __version__
    from edge_tslm.model.artifact import FORMAT, adapter_state, sha256_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = compression_record(model)
    state = record.get("fp32_adapter") or adapter_state(model)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in _saved_state(model, state).items()}
    (out / CONFIG_FILE).write_text(json.dumps(model.cfg.to_dict(), indent=2))
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": FORMAT, "dtype": "fp32 (see manifest)"})
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
        MANIFEST_PARAMS: part_counts(model),
        MANIFEST_TRANSFORMS: record.get("transforms", []),
        MANIFEST_METRICS: metrics or {},
        "load_with": LOADER,
        "storage": STORAGE_NOTE,
        **({"source": str(source)} if source else {}),
        **(extra or {}),
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    manifest["sizes"] = sizes(model, out)  # counts the manifest's own bytes as written just before
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return out


def read_manifest(path: str | Path) -> dict[str, Any]:
    f = Path(path) / MANIFEST_FILE
    return json.loads(f.read_text()) if f.exists() else {}


def load_compressed(path: str | Path, *, backbone=None, device: str | torch.device = "cpu"):
    """Rebuild any artifact (plain or compressed): re-share, load the fp32 adapter, re-apply quantization.

    The quantization recipe is resolved again on ``device`` (a config with backend "auto" picks that
    device's backend; the manifest names the backend used when the artifact was made).
    """
    from safetensors.torch import load_file

    from edge_tslm.model.artifact import adapter_state, read_config
    from edge_tslm.model.build import build_model
    from edge_tslm.quantize.share import _mark_shared, install_blocks

    cfg = read_config(path)
    transforms = read_manifest(path).get(MANIFEST_TRANSFORMS, [])
    model = build_model(cfg, backbone)
    if any(t.get("op") == "share_xattn" for t in transforms) or getattr(cfg.fusion, "shared", False):
        shared = copy.deepcopy(model.xattn[str(model.insertion[0])])
        install_blocks(model, {i: shared for i in model.insertion})
        _mark_shared(model)
    weights = Path(path) / WEIGHTS_FILE
    state = load_file(str(weights))
    expected = set(_saved_state(model, adapter_state(model)))
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(
            f"{weights} does not fit this model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    model.load_state_dict(state, strict=False)
    model = model.to(device).eval()
    for t in transforms:
        if t.get("op") == "quantize":
            quantize_(model, config_from_dict(t["config"]), device=device)
    compression_record(model)["transforms"] = copy.deepcopy(transforms)
    return model


load_quantized = load_compressed
