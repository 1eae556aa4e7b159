"""Curriculum training: each stage starts from the previous stage's best checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from edge_tslm.train.examples import Example, make_example
from edge_tslm.train.loop import TrainConfig, train
from edge_tslm.train.tasks import get_task


def stage_examples(task_name: str, split: str, data_path: str | None, rationale_prob: float, seed: int, limit: int = 0) -> list[Example]:
    """Answer-only examples (the classify path) mixed with rationale examples (the explanation on demand)."""
    task = get_task(task_name)
    samples = task.load(split, data_path)
    n = min(len(samples), limit) if limit else len(samples)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(samples))[:n] if limit else range(n)
    return [
        make_example(samples[i], rationale=bool(rng.random() < rationale_prob), fs=task.fs, max_seconds=task.max_seconds)
        for i in idx
    ]


def run_curriculum(
    model,
    stages: Sequence[str],
    out_dir: str | Path,
    *,
    data_paths: dict[str, str] | None = None,
    train_cfg: TrainConfig = TrainConfig(),
    stage_steps: dict[str, int] | None = None,
    stage_time_s: dict[str, float] | None = None,
    rationale_prob: float = 0.2,
    val_limit: int = 64,
) -> dict:
    """Train stage after stage; the final model carries the last task's labels and sampling rate."""
    out = Path(out_dir)
    results = {}
    for k, name in enumerate(stages):
        task = get_task(name)
        path = (data_paths or {}).get(name)
        model.cfg = model.cfg.replace(
            task=task.spec.name, labels=task.spec.labels, pre_prompt=task.spec.pre_prompt, fs=task.fs, max_seconds=task.max_seconds
        )
        tr = stage_examples(name, "train", path, rationale_prob, train_cfg.seed)
        va = stage_examples(name, "val", path, 0.0, train_cfg.seed, limit=val_limit)
        cfg = replace(
            train_cfg,
            out_dir=str(out / f"stage{k + 1}-{name}"),
            max_steps=(stage_steps or {}).get(name, train_cfg.max_steps),
            time_limit_s=(stage_time_s or {}).get(name, train_cfg.time_limit_s),
        )
        results[name] = train(model, tr, va, cfg, metrics_extra={"stage": name})
        best = Path(cfg.out_dir) / "best"
        model = _reload(model, best)
    (out / "curriculum.json").write_text(json.dumps({"stages": list(stages), "results": results}, indent=1))
    return {"model": model, "results": results}


def _reload(model, best: Path):
    """Continue from the stage's best weights (not its last step)."""
    from safetensors.torch import load_file

    from edge_tslm.constants import WEIGHTS_FILE

    model.load_state_dict(load_file(str(best / WEIGHTS_FILE)), strict=False)
    return model
