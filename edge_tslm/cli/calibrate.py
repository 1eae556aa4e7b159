"""edge-tslm calibrate: fit one decision offset per label on a validation split and store it in the artifact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated, Optional

import typer


def calibrate(
    model: Annotated[Path, typer.Option(help="trained artifact directory, e.g. models/flamingo-ecg-rv")],
    out: Annotated[Optional[Path], typer.Option(help="write the calibrated artifact here (default: update --model in place)")] = None,
    data: Annotated[Optional[Path], typer.Option(help="PhysioNet-2017-format or UCI-HAR-format folder (default: the task's own)")] = None,
    split: Annotated[str, typer.Option(help="the labelled split the offsets are fitted on; never the one you report")] = "val",
    limit: Annotated[int, typer.Option(help="fit on the first N records only (0: all)")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads (0: torch's default)")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="end with one JSON object: offsets and the split's scores")] = False,
) -> None:
    """Offsets that maximise the task's score (challenge score for ECG rhythm, macro-F1 otherwise) on --split."""
    import numpy as np
    import torch

    from edge_tslm.calibration import fit_label_offsets, objective_for, objective_name
    from edge_tslm.evaluate import label_scores
    from edge_tslm.model.artifact import from_pretrained, read_config, write_label_offsets
    from edge_tslm.train.tasks import get_task

    if split == "test":
        raise typer.BadParameter("fitting offsets on the test split would grade the model on what it was tuned to; "
                                 "use --split val (or train)", param_hint="--split")
    if (model / "encoder.onnx").is_file():
        raise typer.BadParameter(f"{model} is an exported ONNX artifact; calibrate the torch artifact it was exported from, "
                                 "then export it again (the offsets travel in config.json)", param_hint="--model")
    cfg = read_config(model)
    if not cfg.labels:
        raise typer.BadParameter(f"{model} has no labels (it was not trained for a classification task)", param_hint="--model")
    if threads:
        torch.set_num_threads(threads)
    task = get_task(cfg.task)
    samples = task.load(split, str(data) if data else None)
    m = from_pretrained(model)
    labels = list(cfg.labels)
    scores, y = label_scores(m, samples, labels, limit=limit, progress=not json_out)
    stored = np.asarray(cfg.label_offsets or [0.0] * len(labels))  # (C,)
    raw = scores - stored  # (N, C): the log-likelihoods themselves, whatever offsets were stored
    objective = objective_for(labels, cfg.task)
    offsets = fit_label_offsets(raw, y, objective)
    before, after = objective(y, raw.argmax(1)), objective(y, (raw + offsets).argmax(1))
    record = {"split": split, "data": str(data) if data else "default", "records": int(len(y)),
              "objective": objective_name(cfg.task),
              "score_without": round(before, 4), "score_with": round(after, 4),
              "offsets": {lab: float(o) for lab, o in zip(labels, offsets)}}
    target = model
    if out:
        shutil.copytree(model, out, dirs_exist_ok=True)
        target = out
    write_label_offsets(target, tuple(offsets), record)
    if json_out:
        typer.echo(json.dumps({"model": str(target), **record}))
    else:
        typer.echo(f"{record['objective']} on {split} ({len(y)} records): {before:.4f} -> {after:.4f}")
        typer.echo("offsets: " + ", ".join(f"{lab} {o:+.2f}" for lab, o in zip(labels, offsets)))
        typer.echo(f"written to {target / 'config.json'}")
