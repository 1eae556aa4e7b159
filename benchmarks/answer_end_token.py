"""Which token does an adapter end its answer with, and does scoring it change the classify path's decisions?

    python benchmarks/answer_end_token.py --model models/flamingo-ecg-rr --per-class 50 --threads 1

Training appends the tokenizer's eos (`model.batch.encode_target`) to every target, and classify scores
'Answer: <label>' plus that eos. This reads, on the first validation examples, the probability the adapter gives each
candidate end token right after the label, then scores the seeded stratified test subset (eval_tslm's) twice: with
the tokenizer's eos (what classify does) and with each other candidate in its place. It explains a validation loss far
above the one logged in training (`benchmarks/val_loss.py`) when the adapter learned another end token.
Appends one row per model to benchmarks/results/answer_end_token.json and rewrites answer_end_token.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edge_tslm.machine import machine
from edge_tslm.results import append_run

RESULTS = Path(__file__).resolve().parent / "results"
CANDIDATES = ("<|im_end|>", "<|im_start|>")


@torch.no_grad()
def end_token_probs(model, examples, candidates) -> dict[str, float]:
    """Mean probability of each candidate as the token after the answer's last label token."""
    from edge_tslm.model.batch import IGNORE
    from edge_tslm.train.loop import _collate

    ids = [model.tokenizer.convert_tokens_to_ids(c) for c in candidates]
    probs = []
    for ex in examples:
        b = _collate(model, [ex])
        hidden, labels = model.hidden_states(b)
        keep = labels[:, 1:] != IGNORE  # (1, T-1): positions that predict a target token
        h = hidden[:, :-1][keep]  # (K, D)
        p = torch.softmax(model.head(h[-1:]).float(), -1)[0]  # at the label's last token: predicts the end token
        probs.append([float(p[i]) for i in ids])
    return {c: round(float(np.mean([row[k] for row in probs])), 4) for k, c in enumerate(candidates)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--per-class", type=int, default=25)
    ap.add_argument("--val", type=int, default=16, help="validation examples for the end-token probabilities")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    from edge_tslm.data.subset import stratified_subset
    from edge_tslm.evaluate import evaluate
    from edge_tslm.model.artifact import from_pretrained
    from edge_tslm.train.recipe import stage_examples
    from edge_tslm.train.tasks import get_task

    torch.set_num_threads(a.threads)
    model = from_pretrained(a.model)
    cfg = model.cfg
    task = get_task(cfg.task)
    tk = model.tokenizer
    default = tk.eos_token
    t0 = time.time()
    val = stage_examples(cfg.task, "val", None, 0.0, 0, limit=a.val, max_seconds=cfg.max_seconds, features=cfg.series_features,
                         question_first=cfg.question_first, series_text=cfg.series_text)
    probs = end_token_probs(model, val, CANDIDATES)
    samples = task.load("test", None)
    idx = stratified_subset(getattr(samples, "records", samples), a.per_class)
    sub = [samples[i] for i in idx]
    scored = {}
    try:
        for end in CANDIDATES:
            tk.eos_token = end  # encode_target appends tokenizer.eos_token_id to each label
            rep = evaluate(model, sub, task.spec.labels, task=cfg.task)
            scored[end] = {"macro_f1": round(rep["macro_f1"], 4), "accuracy": round(rep["accuracy"], 4),
                           **({"challenge_score": round(rep["challenge_score"], 4)} if "challenge_score" in rep else {}),
                           "per_class_f1": {k: round(v, 4) for k, v in rep["per_class_f1"].items()}}
    finally:
        tk.eos_token = default
    row = {"model": str(a.model), "trained": json.loads((a.model / "manifest.json").read_text()).get("metrics", {}),
           "tokenizer_eos": default, "end_token_probability": probs, "val_examples": len(val),
           "test_subset": {"per_class": a.per_class, "n": len(sub)}, "scored_with": scored,
           "seconds": round(time.time() - t0, 1), "machine": machine(),
           "command": "python benchmarks/answer_end_token.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    rows = append_run(RESULTS / "answer_end_token.json", row, key="model", what=__doc__.split("\n")[0])
    write_markdown(rows)
    print(json.dumps({k: row[k] for k in ("model", "end_token_probability", "scored_with")}, indent=1))
    return row


def write_markdown(rows: list[dict]) -> None:
    lines = ["# The token each adapter ends its answer with", "",
             "`python benchmarks/answer_end_token.py --model <artifact> --per-class N` (commands in answer_end_token.json). "
             "p: mean probability of the token right after the label on validation examples. Scores: the seeded "
             "stratified test subset, classify path, with the label followed by each end token.", "",
             "| model | trained val loss | p(<\\|im_end\\|>) | p(<\\|im_start\\|>) | subset n | score with <\\|im_end\\|> (classify's) | score with <\\|im_start\\|> | machine |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        key = "challenge_score" if "challenge_score" in r["scored_with"]["<|im_end|>"] else "macro_f1"
        s = r["scored_with"]
        lines.append(f"| {r['model']} | {r['trained'].get('val_loss', float('nan')):.4f} | "
                     f"{r['end_token_probability']['<|im_end|>']:.4f} | {r['end_token_probability']['<|im_start|>']:.4f} | "
                     f"{r['test_subset']['n']} | {key} {s['<|im_end|>'][key]:.4f} | {key} {s['<|im_start|>'][key]:.4f} | "
                     f"{r['machine']['cpu']} |")
    (RESULTS / "answer_end_token.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
