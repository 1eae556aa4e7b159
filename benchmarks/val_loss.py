"""The validation loss a training run's early stopping saw, recomputed for any artifact on this machine.

    python benchmarks/val_loss.py --model models/flamingo-ecg-rr --limit 128 --threads 1

The same examples as `training/curriculum.py --val-limit N` (seeded, answer-only targets, the model's own text
layout; the loop scores the first val_batches x batch_size = 64 of them), the same mean target-token loss (`edge_tslm.train.loop.evaluate_loss`), fp32 on the CPU (`--bf16`: under bf16 autocast, as a `--bf16` run scores it; `--seed`: the run's subset). It tells whether
an adapter trained elsewhere (an H100 with bf16 autocast) starts where the log says when training continues here.
Appends one row per run to benchmarks/results/val_loss.json (machine and command included).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from edge_tslm.machine import machine
from edge_tslm.results import append_run

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=128, help="validation examples (curriculum.py --val-limit)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="curriculum.py --seed: the validation subset follows it")
    ap.add_argument("--bf16", action="store_true", help="score under bf16 autocast, as a --bf16 run's validation does")
    a = ap.parse_args(argv)
    from edge_tslm.model.artifact import from_pretrained
    from edge_tslm.train.loop import TrainConfig, evaluate_loss
    from edge_tslm.train.recipe import stage_examples
    from edge_tslm.train.tasks import get_task

    torch.set_num_threads(a.threads)
    model = from_pretrained(a.model)
    cfg = model.cfg
    t0 = time.time()
    task = get_task(cfg.task)
    val = stage_examples(cfg.task, "val", None, 0.0, a.seed, limit=a.limit, max_seconds=cfg.max_seconds,
                         features=cfg.series_features, question_first=cfg.question_first, series_text=cfg.series_text)
    tc = TrainConfig(batch_size=a.batch_size, bf16=a.bf16)
    if a.bf16:
        model.lm.to(torch.bfloat16)  # as the training loop holds the frozen backbone under --bf16
    loss = evaluate_loss(model, val, tc)  # the first val_batches x batch_size of them, as the training loop does
    row = {"model": str(a.model), "task": task.spec.name, "seed": a.seed, "bf16": a.bf16, "examples": min(len(val), tc.val_batches * tc.batch_size),
           "val_loss": round(loss, 4),
           "seconds": round(time.time() - t0, 1), "machine": machine(),
           "command": "python benchmarks/val_loss.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    append_run(RESULTS / "val_loss.json", row, key="command", what=__doc__.split("\n")[0])
    print(json.dumps({k: row[k] for k in ("model", "examples", "val_loss", "seconds")}))
    return row


if __name__ == "__main__":
    main()
