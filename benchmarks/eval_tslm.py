"""Score a trained TSLM artifact on its task's test split and write benchmarks/results/tslm_<name>.json,
then rebuild tslm.md with the non-LLM baseline beside each task.

    python benchmarks/eval_tslm.py --model models/flamingo-har            # HAPT UCI test subjects
    python benchmarks/eval_tslm.py --model models/flamingo-ecg            # PhysioNet 2017 test split
    python benchmarks/eval_tslm.py --markdown-only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from edge_tslm.data.subset import stratified_subset  # noqa: F401  (shared with eval_runtime.py)
from edge_tslm.machine import machine

RESULTS = Path(__file__).resolve().parent / "results"
BASELINE = {"har": "baseline_har.json", "ecg_rhythm": "baseline_ecg.json"}


def har_baseline_on(indices: list[int]) -> dict:
    """The feature baseline, retrained as in benchmarks/baseline.py, scored on the same test windows."""
    from edge_tslm import baseline as B
    from edge_tslm.data.hapt import ACTIVITIES, hapt_windows
    from edge_tslm.metrics import classification_report

    clf = B.fit_baseline(*B.har_xy(hapt_windows("train")), B.BaselineConfig())
    test = hapt_windows("test")
    X, y = B.har_xy([test[i] for i in indices])
    return classification_report(y, list(clf.predict(X)), ACTIVITIES)


def run(model_dir: Path, split: str, mode: str, limit: int, threads: int, per_class: int = 0, device: str = "cpu",
        without_vector: bool = False, without_offsets: bool = False) -> dict:
    from edge_tslm.evaluate import evaluate
    from edge_tslm.model.artifact import from_pretrained, read_config
    from edge_tslm.train.tasks import get_task

    if threads:
        torch.set_num_threads(threads)
    if device == "cuda":  # "fp32" means fp32: cuDNN would otherwise run the encoder's convolutions in TF32
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    cfg = read_config(model_dir)
    task = get_task(cfg.task)
    info = machine()
    model = from_pretrained(model_dir, device=device)
    if without_vector:  # an ablation: the same weights with the rhythm vector's embedding switched off
        rhythm = getattr(getattr(model, "series_encoder", None), "rhythm", None)
        if rhythm is None:
            raise SystemExit(f"--without-vector: {model_dir} has no rhythm vector (encoder.rhythm_vector is off)")
        with torch.no_grad():
            rhythm.proj[2].weight.zero_()
            rhythm.proj[2].bias.zero_()
    if without_offsets:  # the raw label log-likelihoods' argmax (`edge-tslm calibrate` offsets left out)
        if not model.cfg.label_offsets:
            raise SystemExit(f"--without-offsets: {model_dir} has no label offsets (run `edge-tslm calibrate` first)")
        model.cfg = model.cfg.replace(label_offsets=())
    samples = task.load(split, None)
    subset = stratified_subset(samples, per_class) if per_class else None
    if subset is not None:
        samples = [samples[i] for i in subset]
    t0 = time.time()
    rep = evaluate(model, samples, task.spec.labels, mode=mode, task=cfg.task, limit=limit, progress=True, keep_predictions=True)
    predictions = rep.pop("predictions")  # for benchmarks/score_intervals.py
    elapsed = time.time() - t0
    manifest = json.loads((model_dir / "manifest.json").read_text())
    return {
        "model": str(model_dir),
        "variant": cfg.variant,
        "backbone": cfg.backbone,
        "task": cfg.task,
        "split": split,
        "precision": precision(manifest),
        **({"label": f"{model_dir.name}, rhythm vector switched off"} if without_vector else {}),
        **({"label": f"{model_dir.name}, without its label offsets"} if without_offsets else {}),
        "label_offsets": dict(zip(cfg.labels, model.cfg.label_offsets)),
        **({"calibration": manifest["calibration"]} if "calibration" in manifest and not without_offsets else {}),
        "trained": manifest.get("metrics", {}),
        "metrics": rep,
        "predictions": predictions,
        "subset": None if subset is None else {"per_class": per_class, "seed": 0, "indices": subset},
        "baseline_same_subset": har_baseline_on(subset) if subset is not None and cfg.task == "har" else None,
        "seconds": round(elapsed, 1),
        "ms_per_sample": round(1000 * elapsed / max(1, rep["n"]), 1),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "machine": info,
        "command": "python " + " ".join(sys.argv),
    }


def precision(manifest: dict) -> str:
    """fp32, or the transforms a compressed artifact re-applies on load (e.g. quantize:Int8WeightOnly)."""
    ops = [f"{t.get('op')}:{t.get('config', {}).get('type', '') if isinstance(t.get('config'), dict) else ''}".rstrip(":")
           for t in manifest.get("transforms", [])]
    return ", ".join(ops) or "fp32"


def write_markdown() -> None:
    lines = ["# TSLM results (test splits)", "", "Each row: `python benchmarks/eval_tslm.py --model <artifact>`; "
             "the baseline row: `python benchmarks/baseline.py` (same split).", "",
             "Compressed rows come from `edge-tslm quantize --model models/<name> --bits 8 --out runs/<name>-int8` first. "
             "ms/sample is wall time of the whole evaluation on a shared machine, not a latency benchmark.", "",
             "| task | model | precision | backbone | mode | n | accuracy | macro-F1 | challenge | AF F1 | ms/sample | machine |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    others = []  # rows on another split (checkpoint selection on validation): their own table below
    for f in sorted(RESULTS.glob("tslm_*.json")):
        r = json.loads(f.read_text())
        m = r["metrics"]
        if r.get("split", "test") != "test":
            others.append(f"| {r['split']} | {r['task']} | {Path(r['model']).name} | {m['n']} | {m['accuracy']:.4f} | "
                          f"{m['macro_f1']:.4f} | {m.get('challenge_score', float('nan')):.4f} |")
            continue
        af = m["per_class_f1"].get("atrial fibrillation")
        lines.append(
            f"| {r['task']}{'' if not r.get('subset') else ' (' + str(r['subset']['per_class']) + '/class subset)'} | {r.get('label') or Path(r['model']).name} ({r['variant']}) | {r['precision']} | {r['backbone']} | {m['mode']} | {m['n']} | "
            f"{m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m.get('challenge_score', float('nan')):.4f} | "
            f"{'' if af is None else f'{af:.4f}'} | {r['ms_per_sample']} | {r['machine']['cpu']}, {r['torch_threads']} threads |"
        )
        b = RESULTS / BASELINE.get(r["task"], "-")
        if r.get("baseline_same_subset"):
            bm = r["baseline_same_subset"]
            lines.append(
                f"| {r['task']} | baseline (features + gradient boosting), same subset | – | – | – | {bm['n']} | "
                f"{bm['accuracy']:.4f} | {bm['macro_f1']:.4f} | – | – | – | – |"
            )
        elif b.exists():
            bj = json.loads(b.read_text())
            bm = bj["result"]["test"]
            baf = bm.get("per_class_f1", {}).get("atrial fibrillation")
            lines.append(
                f"| {r['task']} | baseline (features + gradient boosting) | – | – | – | {bm.get('n', '')} | {bm['accuracy']:.4f} | "
                f"{bm['macro_f1']:.4f} | {bm.get('challenge_score', float('nan')):.4f} | {'' if baf is None else f'{baf:.4f}'} | – | – |"
            )
    lines += ["", "Per-class F1 and confusion matrices are in the JSON files beside this one."]
    if others:
        lines += ["", "## Other splits (choosing between checkpoints; `--split val`)", "",
                  "| split | task | model | n | accuracy | macro-F1 | challenge |", "|---|---|---|---:|---:|---:|---:|", *others]
    (RESULTS / "tslm.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--mode", default="classify", choices=["classify", "generate"])
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=0, help="score a seeded stratified subset of N per class")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"], help="cpu | cuda | mps (the torch model's device)")
    ap.add_argument("--without-vector", action="store_true",
                    help="ablation: zero the rhythm vector's embedding (encoder.rhythm_vector models), written as *_novector.json")
    ap.add_argument("--without-offsets", action="store_true",
                    help="ablation: decide by the raw log-likelihoods, leaving out `edge-tslm calibrate`'s label offsets "
                    "(written as *_nooffsets.json)")
    ap.add_argument("--markdown-only", action="store_true")
    a = ap.parse_args()
    if not a.markdown_only:
        res = run(a.model, a.split, a.mode, a.limit, a.threads, a.per_class, a.device, a.without_vector, a.without_offsets)
        # another split, a subset or another device gets its own file, so it never overwrites the whole split's CPU figure
        suffix = ("" if a.split == "test" else f"_{a.split}") + ("" if a.mode == "classify" else f"_{a.mode}") + (f"_pc{a.per_class}" if a.per_class else "") + (
            "" if a.device == "cpu" else f"_{a.device}") + ("_novector" if a.without_vector else "") + (
            "_nooffsets" if a.without_offsets else "")
        (RESULTS / f"tslm_{a.model.name}{suffix}.json").write_text(json.dumps(res, indent=1))
    write_markdown()


if __name__ == "__main__":
    main()
