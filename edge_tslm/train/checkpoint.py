"""Resumable training checkpoints in safetensors + JSON (no pickles): adapter, optimiser, step, RNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from edge_tslm.model.artifact import adapter_state

STATE_FILE = "trainer_state.json"
TENSORS_FILE = "trainer_tensors.safetensors"


def save_checkpoint(model, optimizer: torch.optim.Optimizer, out: Path, state: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in adapter_state(model).items()}
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = v.detach().clone().contiguous() if torch.is_tensor(v) else torch.tensor(v)
    tensors["rng.torch"] = torch.get_rng_state()
    groups = [{k: v for k, v in g.items()} for g in opt["param_groups"]]
    tmp = out / (TENSORS_FILE + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(out / TENSORS_FILE)
    meta = {**state, "param_groups": groups}
    (out / STATE_FILE).write_text(json.dumps(meta, indent=1, default=str))


def load_checkpoint(model, optimizer: torch.optim.Optimizer, path: Path) -> dict[str, Any]:
    tensors = load_file(str(path / TENSORS_FILE))
    meta = json.loads((path / STATE_FILE).read_text())
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}, strict=False)
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    np.random.seed(int(meta.get("step", 0)) + int(meta.get("seed", 0)))
    return meta


def checkpoint_to_artifact(ckpt: Path, like: Path, out: Path) -> Path:
    """A resumable checkpoint (e.g. a stage's `last/`) as an artifact, built from the run's `best/` artifact (`like`,
    for config and backbone), so a checkpoint other than the best can be evaluated and exported."""
    from edge_tslm.model.artifact import from_pretrained, save_pretrained

    tensors = load_file(str(Path(ckpt) / TENSORS_FILE))
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model = from_pretrained(like)
    want = set(adapter_state(model))
    missing, extra = want - set(state), set(state) - want
    if missing or extra:
        raise ValueError(f"{ckpt} does not hold this model's adapter ({len(missing)} weights missing, e.g. "
                         f"{sorted(missing)[:3]}; {len(extra)} it does not have, e.g. {sorted(extra)[:3]}); pass the "
                         "best/ artifact of the same run as `like`")
    model.load_state_dict(state, strict=False)
    meta = json.loads((Path(ckpt) / STATE_FILE).read_text())
    return save_pretrained(model, out, extra={"from_checkpoint": {"path": str(ckpt), "step": meta.get("step")}})
