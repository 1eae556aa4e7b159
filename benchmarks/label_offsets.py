"""Do label offsets fitted on the validation split raise the test score? (`edge-tslm calibrate`, edge_tslm.calibration)

    python benchmarks/label_offsets.py --model models/flamingo-ecg-rv --threads 1        # torch artifact
    python benchmarks/label_offsets.py --model runs/compactdeep-har --threads 1          # exported ONNX artifact

Scores every record of the validation and test splits with the artifact's classify path (the torch model, or the
torch-free OnnxBackend for an exported artifact), leaving out any offsets already stored in it. Fits the offsets on
validation only (what `edge-tslm calibrate` writes), then scores the test split with and without them. Also prints the
offsets that would be best on the test split itself: a ceiling for this kind of correction, never a result.
Appends one row per model to benchmarks/results/label_offsets.json and rewrites label_offsets.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge_tslm.calibration import f1_per_class, fit_label_offsets, objective_for, objective_name
from edge_tslm.config import TSLMConfig
from edge_tslm.machine import machine
from edge_tslm.results import append_run
from edge_tslm.train.tasks import get_task

RESULTS = Path(__file__).resolve().parent / "results"


def scorer(model_dir: Path, threads: int):
    """-> (config, score(sample) -> raw log-likelihood per label (C,))."""
    cfg = TSLMConfig.from_dict(json.loads((model_dir / "config.json").read_text()))
    labels = list(cfg.labels)
    stored = np.asarray(cfg.label_offsets or [0.0] * len(labels))
    if (model_dir / "encoder.onnx").is_file():
        from edge_tslm.runtime.onnx_backend import OnnxBackend
        from edge_tslm.train.examples import layout_kwargs, make_example

        be = OnnxBackend(model_dir, threads=threads or None)

        def score(s) -> np.ndarray:
            ex = make_example(s, pre_prompt="", **layout_kwargs(cfg))
            got = be.classify(ex.text, be.encode(ex.series), labels)
            return np.array([got[lab] for lab in labels]) - stored

        return cfg, score, "onnx"
    import torch

    from edge_tslm.evaluate import predict
    from edge_tslm.model.artifact import from_pretrained

    if threads:
        torch.set_num_threads(threads)
    model = from_pretrained(model_dir)
    model.set_prefix_caching(True)  # the prompt head before the first series: computed once

    def score(s) -> np.ndarray:
        _, got, _ = predict(model, s, labels)
        return np.array([got[lab] for lab in labels]) - stored

    return cfg, score, "torch"


def split_scores(task, split: str, score, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    samples = task.load(split, None)
    S, y = np.zeros((len(samples), len(labels))), np.zeros(len(samples), np.int64)
    t0 = time.time()
    for i in range(len(samples)):
        s = samples[i]
        S[i], y[i] = score(s), labels.index(s.label)
        if (i + 1) % 100 == 0:
            print(f"  {split} {i + 1}/{len(samples)}  {time.time() - t0:.0f} s", flush=True)
    return S, y


def summary(obj, y: np.ndarray, S: np.ndarray, offsets: np.ndarray, labels: list[str]) -> dict:
    pred = (S + offsets).argmax(1)
    return {"score": round(obj(y, pred), 4), "accuracy": round(float((pred == y).mean()), 4),
            "per_class_f1": {lab: round(float(f), 4) for lab, f in zip(labels, f1_per_class(y, pred, len(labels)))}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    cfg, score, runtime = scorer(a.model, a.threads)
    labels = list(cfg.labels)
    task = get_task(cfg.task)
    obj = objective_for(labels, cfg.task)
    t0 = time.time()
    Sv, yv = split_scores(task, "val", score, labels)
    St, yt = split_scores(task, "test", score, labels)
    off = fit_label_offsets(Sv, yv, obj)
    ceiling = fit_label_offsets(St, yt, obj)
    zero = np.zeros(len(labels))
    row = {
        "model": str(a.model), "runtime": runtime, "task": cfg.task,
        "objective": objective_name(cfg.task),
        "records": {"val": int(len(yv)), "test": int(len(yt))},
        "offsets_fitted_on_val": {lab: float(o) for lab, o in zip(labels, off)},
        "val": {"without": summary(obj, yv, Sv, zero, labels), "with": summary(obj, yv, Sv, off, labels)},
        "test": {"without": summary(obj, yt, St, zero, labels), "with": summary(obj, yt, St, off, labels)},
        "test_ceiling": {"offsets": {lab: float(o) for lab, o in zip(labels, ceiling)},
                         **summary(obj, yt, St, ceiling, labels),
                         "note": "offsets fitted on the test split itself: how far this correction could go, not a result"},
        "seconds": round(time.time() - t0, 1), "machine": machine(),
        "command": "python benchmarks/label_offsets.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    rows = append_run(RESULTS / "label_offsets.json", row, key="model", what=__doc__.split("\n")[0])
    write_markdown(rows)
    print(json.dumps({k: row[k] for k in ("model", "offsets_fitted_on_val", "val", "test")}, indent=1))
    return row


def write_markdown(rows: list[dict]) -> None:
    lines = ["# Label offsets fitted on validation, scored on test", "",
             "`python benchmarks/label_offsets.py --model <artifact>` (each row's command is in label_offsets.json). "
             "Score: the challenge score for ECG rhythm, macro-F1 otherwise. The ceiling column fits the offsets on the "
             "test split itself: how far this correction could go, not a result.", "",
             "| model | runtime | val without → with | **test without → with** | test ceiling | offsets (fitted on val) | machine |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        offs = ", ".join(f"{k} {v:+.2f}" for k, v in r["offsets_fitted_on_val"].items())
        lines.append(f"| {r['model']} | {r['runtime']} | {r['val']['without']['score']:.4f} → {r['val']['with']['score']:.4f} | "
                     f"**{r['test']['without']['score']:.4f} → {r['test']['with']['score']:.4f}** | "
                     f"{r['test_ceiling']['score']:.4f} | {offs} | {r['machine']['cpu']} |")
    (RESULTS / "label_offsets.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
