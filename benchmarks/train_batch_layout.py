"""What a training step costs, and what share of its loss trains the classify path, by how the batch is laid out.

    python benchmarks/train_batch_layout.py [--model models/flamingo-ecg-vd3] [--task ecg_rhythm] [--steps 3] [--threads 2]
    # -> benchmarks/results/train_batch_layout.json/.md

Why: the loss is a mean over target tokens. An answer-only example targets `Answer: <label>` (~3 tokens), a rationale
example its rationale (~80), so in the loop's old mixed batches the classify path's loss (the one validation
early-stops on) got a small share of the gradient, and every row was padded to a rationale's length.
`--group-targets` makes each batch all answer-only or all rationale (`edge_tslm.train.loop.epoch_batches`). And a
Flamingo batch whose rows share their text before the first <ts> (the number-free layouts) runs that text once
(`FlamingoTSLM.shared_prefix`). This times one optimizer step (forward, backward, AdamW) of real training batches
of the artifact's own layout in each arrangement, with the shared prefix on and off; the first step of each row is
a warm-up and is not counted. "Classify share" is the answer-only examples' share of the batch's target tokens.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from edge_tslm.machine import machine
from edge_tslm.model.artifact import from_pretrained
from edge_tslm.model.batch import IGNORE
from edge_tslm.results import write_results
from edge_tslm.train.loop import _collate
from edge_tslm.train.recipe import stage_examples

RESULTS = Path(__file__).resolve().parent / "results"
RATIONALE_PROB = 0.2  # the loop's default share of rationale examples


def layouts(examples, batch: int, steps: int) -> dict[str, list[list]]:
    """(steps + 1) batches per arrangement: all answer-only, all rationale, and mixed as an ungrouped epoch draws
    them at the default share (the most common draw: round(0.2 * batch) rationale examples per batch)."""
    ans = [e for e in examples if not e.rationale]
    rat = [e for e in examples if e.rationale]
    k = round(RATIONALE_PROB * batch)
    n = steps + 1
    need = {"answer-only": (batch * n, 0), "rationale-only": (0, batch * n), "mixed": ((batch - k) * n, k * n)}
    for name, (a, r) in need.items():
        if len(ans) < a or len(rat) < r:
            raise SystemExit(f"{name} batches need {a} answer-only and {r} rationale examples; the split gave {len(ans)} "
                             f"and {len(rat)}: raise --limit")
    return {
        "answer-only": [ans[i * batch : (i + 1) * batch] for i in range(n)],
        "rationale-only": [rat[i * batch : (i + 1) * batch] for i in range(n)],
        "mixed": [ans[i * (batch - k) : (i + 1) * (batch - k)] + rat[i * k : (i + 1) * k] for i in range(n)],
    }


def classify_share(model, exs) -> float:
    """The answer-only examples' share of the batch's target tokens (their share of the token-mean loss)."""
    b = _collate(model, exs)
    per_row = (b.labels[:, 1:] != IGNORE).sum(-1)  # (B,) target tokens of each row
    ans = torch.tensor([not e.rationale for e in exs])
    return float(per_row[ans].sum() / per_row.sum())


def step_times(model, batches, shared: bool) -> tuple[list[float], int, int]:
    """Seconds per optimizer step over batches[1:] (batches[0] warms up), the batches' padded length and the fewest
    positions a batch shared (what `FlamingoTSLM.shared_prefix` runs once)."""
    cls = type(model)
    orig = cls.shared_prefix
    common = min(orig(model, b, model.ts_positions(b.input_ids, b.series.shape[1]))
                 for b in (_collate(model, exs) for exs in batches))
    if not shared:
        cls.shared_prefix = lambda self, batch, ts_pos: 0
    try:
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
        out, length = [], 0
        for i, exs in enumerate(batches):
            b = _collate(model, exs)
            length = max(length, b.input_ids.shape[1])
            t = time.perf_counter()
            model.loss(b).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i:
                out.append(round(time.perf_counter() - t, 3))
        return out, length, common
    finally:
        cls.shared_prefix = orig


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/flamingo-ecg-vd3")
    ap.add_argument("--task", default="ecg_rhythm")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--limit", type=int, default=160, help="training examples drawn (seeded)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = from_pretrained(a.model)
    cfg = model.cfg
    exs = stage_examples(a.task, "train", None, RATIONALE_PROB, 0, limit=a.limit, max_seconds=cfg.max_seconds,
                         features=cfg.series_features, question_first=cfg.question_first, series_text=cfg.series_text)
    model.train()
    rows = []
    for name, batches in layouts(exs, a.batch_size, a.steps).items():
        share = statistics.mean(classify_share(model, b) for b in batches)
        for shared in (True, False):
            ts, length, common = step_times(model, batches, shared)
            rows.append({"batch": name, "shared_prefix": shared, "steps_s": ts, "median_s": statistics.median(ts),
                         "padded_tokens": length, "shared_positions": common, "classify_share": round(share, 4)})
    res = {"model": a.model, "task": a.task, "rows": rows, "batch_size": a.batch_size, "threads": a.threads,
           "rationale_prob": RATIONALE_PROB, "machine": machine(),
           "command": "python benchmarks/train_batch_layout.py " + shlex.join(sys.argv[1:])}
    print(write_results(RESULTS / "train_batch_layout.json", res, markdown))
    return res


def epoch_estimate(res: dict, shared: bool) -> dict[str, float]:
    """Mean step time of an epoch: grouped batches are answer-only with probability 1 - p and rationale with p;
    ungrouped ones are mixed (a batch with at least one rationale, padded to its length) unless all answer-only."""
    med = {r["batch"]: r["median_s"] for r in res["rows"] if r["shared_prefix"] == shared}
    p, b = res["rationale_prob"], res["batch_size"]
    all_answer = (1 - p) ** b
    return {"grouped": (1 - p) * med["answer-only"] + p * med["rationale-only"],
            "ungrouped": all_answer * med["answer-only"] + (1 - all_answer) * med["mixed"]}


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = ["# Training-step time and the classify path's loss share, by batch layout", "",
             f"`{res['command'].strip()}`; {m['cpu']}, {res['threads']} threads, batch {res['batch_size']}, "
             f"`{res['model']}` on {res['task']} training examples (its own text layout); seconds per optimizer step "
             "(warm-up step not counted).", "",
             "| batch | shared prefix | steps (s) | median (s) | padded tokens | shared positions | classify share of the loss |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['batch']} | {'on' if r['shared_prefix'] else 'off'} | {', '.join(f'{t:.2f}' for t in r['steps_s'])} "
                     f"| {r['median_s']:.2f} | {r['padded_tokens']} | {r.get('shared_positions', '–')} | {r['classify_share']:.3f} |")
    old, new = epoch_estimate(res, False)["ungrouped"], epoch_estimate(res, True)["grouped"]
    p = res["rationale_prob"]
    lines += ["", f"Mean step over an epoch with {p:.0%} rationale examples (from the medians; an ungrouped batch is all "
              f"answer-only with probability {(1 - p) ** res['batch_size']:.3f}): ungrouped without the shared prefix "
              f"(the loop before session 15) **{old:.2f} s**, grouped with it **{new:.2f} s** ({old / new:.1f}× as many "
              "steps per hour)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
