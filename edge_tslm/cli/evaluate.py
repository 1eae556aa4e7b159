"""edge-tslm eval: score an artifact on a task's split (or on any folder the user points at)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def eval_cmd(
    model: Annotated[Path, typer.Option(help="artifact directory, e.g. models/flamingo-har")],
    task: Annotated[Optional[str], typer.Option(help="har | ecg_rhythm | ... (default: the model's own task)")] = None,
    data: Annotated[Optional[Path], typer.Option(help="PhysioNet-2017-format or UCI-HAR-format folder")] = None,
    split: Annotated[str, typer.Option(help="train | val | test | all (all records of a user folder)")] = "test",
    mode: Annotated[str, typer.Option(help="classify (label likelihood) | generate (parse 'Answer:')")] = "classify",
    limit: Annotated[int, typer.Option(help="score only the first N samples (0: all)")] = 0,
    label_scoring: Annotated[str, typer.Option(help="classify: full (answer log-likelihood) | labels (p(label | one of "
                                                    "the labels), edge-tslm stream's default)")] = "full",
    json_out: Annotated[bool, typer.Option("--json", help="end with one JSON object of the metrics")] = False,
    save: Annotated[Optional[Path], typer.Option(help="also write the metrics JSON here")] = None,
) -> None:
    """Macro-F1, accuracy, per-class F1, confusion matrix (and the PhysioNet 2017 challenge score)."""
    from edge_tslm.evaluate import evaluate
    from edge_tslm.model.artifact import from_pretrained, read_config
    from edge_tslm.train.tasks import get_task

    cfg = read_config(model)
    name = task or {"ecg_rhythm": "ecg_rhythm", "har": "har"}.get(cfg.task, cfg.task)
    t = get_task(name)
    samples = t.load(split, str(data) if data else None)
    m = from_pretrained(model)
    rep = evaluate(m, samples, t.spec.labels, mode=mode, task=t.spec.name, limit=limit, progress=not json_out,
                   scoring=label_scoring)
    rep.update({"model": str(model), "task": name, "split": split, "data": str(data) if data else "default"})
    if save:
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(json.dumps(rep, indent=1))
    if json_out:
        typer.echo(json.dumps(rep))
    else:
        typer.echo(f"macro-F1 {rep['macro_f1']:.4f}  accuracy {rep['accuracy']:.4f}  n={rep['n']}")
        if "challenge_score" in rep:
            typer.echo(f"challenge score {rep['challenge_score']:.4f}")
