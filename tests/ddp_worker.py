"""Train a tiny Flamingo with edge_tslm.train.loop.train; run under torchrun (DDP, gloo) or in-process.

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT_DIR --batch-size 2 --steps 6 [--activation-checkpointing]

The data are built so that a per-process batch of B under world W and a one-process batch of B*W are
the same computation: every text has the same token count, every series the same length (no padding) and
every target the same number of tokens, so the mean of the ranks' mean losses is the global mean loss and
DDP's averaged gradient is the one-process gradient.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

N_TRAIN = 19  # not a multiple of the global batch: the leftover must be dropped the same way everywhere
LABELS = ("left", "rest", "jump")  # equal length: the character-level tiny tokenizer gives equal target lengths


def make_examples(n: int, seed: int):
    from conftest import ts_text
    from edge_tslm.train.examples import Example

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        x = rng.standard_normal(32).astype(np.float32) + (i % len(LABELS))
        out.append(Example(ts_text(1), (x,), f"Answer: {label}", label))
    return out


def train_config(out_dir: str, batch_size: int, steps: int, **changes):
    from edge_tslm.train.loop import TrainConfig

    base = dict(
        out_dir=out_dir,
        max_steps=steps,
        batch_size=batch_size,
        lr_encoder=3e-3,
        lr_fusion=3e-3,
        lr_tokens=3e-3,
        warmup_steps=2,
        eval_every=1000,  # evaluate only at the last step
        val_batches=2,
        log_every=1,
        progress=False,
        seed=0,
    )
    base.update(changes)
    return TrainConfig(**base)


def build_model():
    from conftest import build_tiny, open_gates

    model = build_tiny("flamingo", "tiny-llama")
    open_gates(model, 0.5)  # every adapter part gets a gradient from step 1
    return model


def run(out_dir: str, batch_size: int, steps: int, checkpointing: bool = False) -> dict:
    from edge_tslm.train.loop import train

    cfg = train_config(out_dir, batch_size, steps, activation_checkpointing=checkpointing)
    return train(build_model(), make_examples(N_TRAIN, 0), make_examples(4, 1), cfg)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--activation-checkpointing", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    res = run(a.out_dir, a.batch_size, a.steps, a.activation_checkpointing)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    print(f"rank {os.environ.get('RANK', '0')} done: {res}", flush=True)


if __name__ == "__main__":
    main()
