"""Wall time of one Flamingo training step in fp32 and under bf16 autocast, on this machine's CPU.

    python benchmarks/train_step_time.py [--steps 3] [--threads 2] [--name SUFFIX]
    # -> benchmarks/results/train_step_time[_SUFFIX].json/.md (a suffix keeps another host's figures beside it)

Why: `TrainConfig(bf16=True)` on a CPU without bf16 instructions (AVX512-BF16 or AMX) trains in fp32 with a warning
(`edge_tslm.train.loop.bf16_is_fast`), because torch emulates bf16 there. This measures the two on real HAPT
validation windows (SmolLM2-135M, default Flamingo, batch 8, the `har` layout with the question first and
`series_text="short"`), so the decision rests on a figure anyone can rerun. The bf16 step is timed directly (the
loop's fallback is not used here). The first step of each dtype is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from edge_tslm.config import TSLMConfig
from edge_tslm.machine import machine
from edge_tslm.model import build_model
from edge_tslm.results import write_results
from edge_tslm.train.loop import _collate
from edge_tslm.train.recipe import stage_examples

RESULTS = Path(__file__).resolve().parent / "results"


def step_times(bf16: bool, steps: int, batch: int) -> list[float]:
    torch.manual_seed(0)
    m = build_model(TSLMConfig(train_token_rows=False, question_first=True, series_text="short"))
    if bf16:
        m.lm.to(torch.bfloat16)  # as the training loop does: the frozen backbone held in bf16
    exs = stage_examples("har", "val", None, 0.0, 0, limit=batch * (steps + 1), question_first=True, series_text="short")
    m.train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-5)
    out = []
    for i in range(steps + 1):
        b = _collate(m, exs[i * batch : (i + 1) * batch])
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = m.loss(b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # step 0 warms up
            out.append(round(time.perf_counter() - t, 3))
    return out


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="", help="results file suffix, e.g. the host's ISA")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = {dtype: step_times(dtype == "bf16 autocast", a.steps, a.batch_size) for dtype in ("fp32", "bf16 autocast")}
    res = {"rows": rows, "batch_size": a.batch_size, "threads": a.threads, "machine": machine(),
           "command": "python benchmarks/train_step_time.py " + shlex.join(sys.argv[1:])}
    print(write_results(RESULTS / f"train_step_time{'_' + a.name if a.name else ''}.json", res, markdown))
    return res


def markdown(res: dict) -> str:
    m = res["machine"]
    fp32 = statistics.median(res["rows"]["fp32"])
    lines = ["# Training-step time: fp32 vs bf16 autocast on this CPU", "",
             f"`{res['command'].strip()}`; {m['cpu']}, {res['threads']} threads, batch {res['batch_size']}, "
             f"SmolLM2-135M Flamingo on HAPT validation windows; seconds per step (warm-up step not counted).", "",
             "| dtype | steps (s) | median (s) | × fp32 |", "|---|---|---:|---:|"]
    for dtype, ts in res["rows"].items():
        med = statistics.median(ts)
        lines.append(f"| {dtype} | {', '.join(f'{t:.2f}' for t in ts)} | {med:.2f} | {med / fp32:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
