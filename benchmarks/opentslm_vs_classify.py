"""The OpenTSLM-style decision (fp32 torch, the full rationale generated before the answer, the answer parsed
from the text) against our classify path (one prefill, label likelihoods) on the SAME HAR test windows.

    python benchmarks/opentslm_vs_classify.py                          # 5 per class, seed 0
    python benchmarks/opentslm_vs_classify.py --per-class 5 --threads 1 --onnx runs/compact-har

Paths:
  opentslm-generate   torch fp32, prompt asks for the rationale, greedy up to 160 new tokens, answer parsed
                      with edge_tslm.prompts.parse_answer (edge_tslm.evaluate.predict mode="generate",
                      rationale=True): what the reference implementation does for every decision.
  classify-torch      torch fp32, edge_tslm.evaluate.predict mode="classify".
  classify-onnx       each ONNX artifact given with --onnx that exists (default runs/compact-har), through
                      edge_tslm.runtime.onnx_backend.OnnxBackend: encode + classify.

ms per decision is the wall time of the whole decision (example building included), one window at a time,
after one warm-up decision per path; the load average beside it says how shared the machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_tslm import stratified_subset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "opentslm_vs_classify"


def pctl(ms: list[float], q: float) -> float:
    return round(float(np.percentile(ms, q)), 1) if ms else float("nan")


def run_path(name: str, decide, samples, labels) -> dict:
    """decide(sample) -> (label or None, generated text); one warm-up call, then every sample timed."""
    from edge_tslm.metrics import classification_report

    decide(samples[0])  # warm-up (not timed, not scored)
    y_true, y_pred, ms, texts = [], [], [], []
    for i, s in enumerate(samples):
        load0 = os.getloadavg()[0]
        t = time.perf_counter()
        pred, text = decide(s)
        ms.append((time.perf_counter() - t) * 1000)
        y_true.append(s.label)
        y_pred.append(pred if pred is not None else "<invalid>")
        texts.append(text)
        print(f"  {name} {i + 1}/{len(samples)}: {ms[-1]:.0f} ms, true {s.label!r} -> {pred!r} (load {load0:.1f})",
              flush=True)
    rep = classification_report(y_true, y_pred, labels)
    rep["confusion"] = rep.pop("confusion_matrix")
    return {
        "path": name, "n": len(samples), "macro_f1": round(rep["macro_f1"], 4), "accuracy": round(rep["accuracy"], 4),
        "n_invalid": sum(p == "<invalid>" for p in y_pred), "ms_p50": pctl(ms, 50), "ms_p95": pctl(ms, 95),
        "ms_mean": round(float(np.mean(ms)), 1), "ms": [round(x, 1) for x in ms], "report": rep,
        "predictions": y_pred, "example_text": next((t for t in texts if t), ""),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("models/flamingo-har"))
    ap.add_argument("--onnx", type=Path, action="append", help="ONNX artifact dir(s); default runs/compact-har")
    ap.add_argument("--per-class", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    ap.add_argument("--max-new-tokens", type=int, default=160, help="rationale budget of the generate path")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--markdown-only", action="store_true")
    a = ap.parse_args()
    if a.markdown_only:
        res = json.loads(a.out.with_suffix(".json").read_text())
        a.out.with_suffix(".md").write_text(markdown(res))
        print(markdown(res))
        return

    import torch

    from edge_tslm import evaluate as E
    from edge_tslm.machine import machine
    from edge_tslm.model.artifact import from_pretrained, read_config
    from edge_tslm.prompts import parse_answer
    from edge_tslm.train.examples import layout_kwargs, make_example
    from edge_tslm.train.tasks import get_task

    torch.set_num_threads(a.threads)
    info = machine()
    cfg = read_config(a.model)
    task = get_task(cfg.task)
    labels = task.spec.labels
    test = task.load("test", None)
    idx = stratified_subset(test, a.per_class, a.seed)
    samples = [test[i] for i in idx]
    model = from_pretrained(a.model)
    paths = []

    def generate(s):
        ex = make_example(s, rationale=True, **layout_kwargs(cfg))
        text = model.generate(ex.text, ex.series, max_new_tokens=a.max_new_tokens)
        return parse_answer(text, labels), text

    def classify(s):
        pred, _, _ = E.predict(model, s, labels, mode="classify")
        return pred, ""

    paths.append(run_path("classify-torch", classify, samples, labels))
    paths.append(run_path("opentslm-generate", generate, samples, labels))
    skipped = {}
    for onnx_dir in a.onnx or [Path("runs/compact-har")]:
        if not onnx_dir.exists():
            skipped[str(onnx_dir)] = "not present"
            print(f"skip {onnx_dir}: not present")
            continue
        from edge_tslm.runtime.onnx_backend import OnnxBackend

        try:
            be = OnnxBackend.from_pretrained(onnx_dir, threads=a.threads)
        except Exception as e:  # an artifact being written by someone else, or a wrong layout
            skipped[str(onnx_dir)] = f"{type(e).__name__}: {e}"
            print(f"skip {onnx_dir}: {e}")
            continue

        def onnx_classify(s, be=be):
            ex = make_example(s, **layout_kwargs(be.cfg))
            scores = be.classify(ex.text, be.encode(ex.series), labels)
            return max(scores, key=scores.get), ""

        r = run_path(f"classify-onnx ({onnx_dir})", onnx_classify, samples, labels)
        r["artifact"] = str(onnx_dir)
        man = onnx_dir / "manifest.json"
        if man.exists():  # which build of the artifact was measured (another process may rebuild it later)
            import hashlib

            r["artifact_manifest_sha256"] = hashlib.sha256(man.read_bytes()).hexdigest()
            r["artifact_precision"] = [f"{e.get('component')}: {e.get('precision')}"
                                       for e in json.loads(man.read_text()).get("exported", [])]
        paths.append(r)

    ref = paths[1]
    for p in paths:
        p["speedup_vs_opentslm_p50"] = round(ref["ms_p50"] / p["ms_p50"], 1)
        p["f1_minus_opentslm_points"] = round(100 * (p["macro_f1"] - ref["macro_f1"]), 1)
    res = {
        "model": str(a.model), "task": cfg.task, "split": "test",
        "subset": {"per_class": a.per_class, "seed": a.seed, "indices": idx, "n": len(idx)},
        "threads": a.threads, "max_new_tokens": a.max_new_tokens, "paths": paths, "skipped": skipped,
        "load_avg_1min_end": round(os.getloadavg()[0], 2), "machine": info, "command": "python " + " ".join(sys.argv),
    }
    a.out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    a.out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


def markdown(res: dict) -> str:
    m = res["machine"]
    s = res["subset"]
    lines = [
        "# OpenTSLM-style decision (rationale, then parsed answer) vs the classify path", "",
        f"`{res['command']}` — `{res['model']}` on HAR {res['split']} windows (HAPT UCI test subjects), seeded "
        f"stratified subset {s['per_class']}/class (seed {s['seed']}, n = {s['n']}), the same windows for every path; "
        f"{res['threads']} thread(s); {m['cpu']}, {m['cores']} cores; load average {m['load_avg_1min_at_start']} at start, "
        f"{res['load_avg_1min_end']} at end (a shared machine: the latencies are pessimistic).", "",
        "| path | n | macro-F1 | accuracy | invalid answers | ms/decision p50 | p95 | speed-up vs OpenTSLM-style (p50) | F1 − OpenTSLM-style (points) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in res["paths"]:
        lines.append(f"| {p['path']} | {p['n']} | {p['macro_f1']:.4f} | {p['accuracy']:.4f} | {p['n_invalid']} | "
                     f"{p['ms_p50']:,.1f} | {p['ms_p95']:,.1f} | x{p['speedup_vs_opentslm_p50']} | "
                     f"{p['f1_minus_opentslm_points']:+.1f} |")
    for k, v in res.get("skipped", {}).items():
        lines.append(f"| classify-onnx ({k}) | – | – | – | – | – | – | – | skipped: {v} |")
    ref = next(p for p in res["paths"] if p["path"] == "opentslm-generate")
    best = max((p for p in res["paths"] if p is not ref), key=lambda p: p["speedup_vs_opentslm_p50"])
    goal_speed = best["speedup_vs_opentslm_p50"] >= 50
    goal_f1 = abs(best["f1_minus_opentslm_points"]) <= 3 or best["f1_minus_opentslm_points"] > 0
    lines += [
        "", f"Goal: >= 50x faster per decision with F1 within 3 points. Measured (fastest path, {best['path']}): "
        f"x{best['speedup_vs_opentslm_p50']} ({'met' if goal_speed else 'missed'}), F1 {best['f1_minus_opentslm_points']:+.1f} "
        f"points vs the OpenTSLM-style path ({'met' if goal_f1 else 'missed'}).", "",
        f"The generate path asks for the rationale (`{res['max_new_tokens']}` new tokens at most, greedy) and parses "
        "`Answer: <label>` from it; an answer the parser cannot map to a label counts as wrong. Example of its text:", "",
        "> " + ref["example_text"].replace("\n", " ")[:600], "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
