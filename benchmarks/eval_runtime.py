"""Score an exported ONNX artifact with the torch-free runtime (OnnxBackend.classify) and write
benchmarks/results/runtime_<name>.json: F1, accuracy, per-class F1, confusion, challenge score (ECG), the subset,
artifact size on disk, peak RSS, ms per sample, machine, command.

    python benchmarks/eval_runtime.py --artifact runs/compact-har --per-class 50
    python benchmarks/eval_runtime.py --artifact runs/onnx-har --per-class 50     # fp32 export, same windows

The windows are the seeded stratified subset benchmarks/eval_tslm.py scores (edge_tslm.data.subset), and each
window's text is exactly the torch path's: make_example(sample, pre_prompt="", fs, max_seconds) from the
artifact's config, with the config's pre_prompt as the system turn (as FlamingoTSLM._batch does). torch is
never imported: the RSS is that of a device process (numpy + onnxruntime + tokenizers + the data loaders).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from edge_tslm.config import TSLMConfig
from edge_tslm.data.subset import stratified_subset
from edge_tslm.machine import machine
from edge_tslm.metrics import challenge_score, classification_report
from edge_tslm.score_intervals import prediction_record
from edge_tslm.runtime.onnx_backend import OnnxBackend
from edge_tslm.train.examples import layout_kwargs, make_example
from edge_tslm.train.tasks import get_task

RESULTS = Path(__file__).resolve().parent / "results"
ECG_TASKS = ("ecg_rhythm", "physionet2017")  # as edge_tslm.evaluate (which imports torch)


def peak_rss_mib() -> float:
    from edge_tslm.runtime.events import peak_rss_mb

    return peak_rss_mb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # VmHWM; else Linux ru_maxrss (KiB)


def artifact_size(path: Path, manifest: dict) -> dict:
    """Sizes from the manifest, checked against the disk (a file changed since the export is an error)."""
    files = {k: v["size_bytes"] for k, v in manifest["files"].items()}
    for name, size in files.items():
        if (path / name).stat().st_size != size:
            raise SystemExit(f"{path / name} is not the size its manifest records; re-export")
    total = sum(files.values())
    return {"files": files, "total_bytes": total, "total_mib": round(total / 2**20, 2)}


def standing_calibration(samples, n: int, reference: np.ndarray | None = None) -> tuple[dict[int, np.ndarray], set[int]]:
    """Per HAR subject, the rotation that turns the mean gravity direction of its first ``n`` standing windows onto
    the training subjects' mean standing direction (benchmarks/har_posture_probe.py), and the indices of those
    calibration windows, which are not scored: a wearer who stands still at the start of a stream."""
    from har_posture_probe import standing_reference

    from edge_tslm.gait_frame import rotation_onto

    ref = standing_reference() if reference is None else reference
    first: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if s.label == "standing" and len(first.setdefault(s.group, [])) < n:
            first[s.group].append(i)
    rot: dict[str, np.ndarray] = {}
    for group, idx in first.items():
        m = np.mean([samples[i].signal.astype(np.float64).mean(1) for i in idx], 0)
        rot[group] = rotation_onto(m / np.linalg.norm(m), ref)
    return {i: rot[s.group] for i, s in enumerate(samples) if s.group in rot}, {i for v in first.values() for i in v}


def run(artifact: Path, split: str, per_class: int, limit: int, threads: int, label_scoring: str = "full",
        calibrate_standing: int = 0, rotate: bool = True) -> dict:
    manifest = json.loads((artifact / "manifest.json").read_text())
    cfg = TSLMConfig.from_dict(json.loads((artifact / "config.json").read_text()))
    rss_start = peak_rss_mib()
    t_load = time.perf_counter()
    be = OnnxBackend.from_pretrained(artifact, threads=threads or None, label_scoring=label_scoring)
    load_s = time.perf_counter() - t_load
    rss_loaded = peak_rss_mib()
    task = get_task(cfg.task)
    labels = list(task.spec.labels)
    samples = task.load(split, None)
    subset = stratified_subset(getattr(samples, "records", samples), per_class) if per_class else None
    idx = subset if subset is not None else list(range(len(samples)))
    rotations: dict[int, np.ndarray] = {}
    if calibrate_standing:
        if cfg.task != "har":
            raise SystemExit(f"--calibrate-standing rotates accelerometer windows; {artifact} is a {cfg.task!r} model")
        rotations, held = standing_calibration(samples, calibrate_standing)
        idx = [i for i in idx if i not in held]
        rotations = rotations if rotate else {}  # rotate=False: the same windows scored as recorded (the control)
    if limit:
        idx = idx[:limit]
    y_true, y_pred, ids, stage = [], [], [], {"encode_ms": [], "prefill_ms": [], "decode_ms": []}
    t0 = time.perf_counter()
    for j, i in enumerate(idx):
        s = samples[i]
        if i in rotations:  # (3, 3) @ (3, L): the wearer's gravity direction as the training subjects' standing one
            s = dataclasses.replace(s, signal=(rotations[i] @ s.signal.astype(np.float64)).astype(np.float32))
        ex = make_example(s, pre_prompt="", **layout_kwargs(cfg))
        enc = be.encode(ex.series)
        enc_ms = be.last_timings["encode_ms"]
        scores = be.classify(ex.text, enc, labels)
        stage["encode_ms"].append(enc_ms)
        stage["prefill_ms"].append(be.last_timings["prefill_ms"])
        if "decode_ms" in be.last_timings:  # backends that score labels in a call of their own
            stage["decode_ms"].append(be.last_timings["decode_ms"])
        y_true.append(s.label)
        y_pred.append(max(scores, key=scores.get))
        ids.append(s.group)
        if (j + 1) % 25 == 0:
            print(f"  {j + 1}/{len(idx)}  {1000 * (time.perf_counter() - t0) / (j + 1):.0f} ms/sample", flush=True)
    elapsed = time.perf_counter() - t0
    rep = classification_report(y_true, y_pred, labels)
    rep["confusion"] = rep.pop("confusion_matrix")
    rep["n_invalid"] = 0  # classify always returns an allowed label
    predictions = prediction_record(ids, y_true, y_pred, labels)  # for score_intervals.py
    rep["mode"] = "classify"
    if cfg.task in ECG_TASKS:
        rep["challenge_score"] = challenge_score(y_true, y_pred, all_labels=labels + ["<invalid>"])
    return {
        "artifact": str(artifact),
        "source_artifact": manifest.get("source_artifact"),
        "backbone": cfg.backbone,
        "task": cfg.task,
        "split": split,
        "runtime": f"OnnxBackend (onnxruntime, {be.providers[0]}), torch-free",
        "decoder_precision": next((r["precision"] for r in manifest["exported"] if r["component"] == "decoder"), None),
        "encoder_precision": next((r["precision"] for r in manifest["exported"] if r["component"] == "encoder"), None),
        "weight_quantization": {
            k: manifest["weight_quantization"][k] for k in ("config", "weight_sqnr", "note") if k in manifest["weight_quantization"]
        }
        if "weight_quantization" in manifest
        else None,
        "metrics": rep,
        "predictions": predictions,
        "subset": None if subset is None else {"per_class": per_class, "seed": 0, "indices": subset},
        "limit": limit or None,
        "calibrate_standing": ({"windows_per_subject": calibrate_standing, "rotated": rotate} if calibrate_standing else None),
        "artifact_size": artifact_size(artifact, manifest),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_mib_before_load": round(rss_start, 1),
        "peak_rss_mib_after_load": round(rss_loaded, 1),
        "load_seconds": round(load_s, 2),
        "seconds": round(elapsed, 1),
        "ms_per_sample": round(1000 * elapsed / max(1, len(idx)), 1),
        "stage_ms_median": {k: round(float(np.median(v)), 1) for k, v in stage.items() if v},
        "ort_threads": threads or "onnxruntime default",
        "label_scoring": label_scoring,
        "label_head": bool(be.label_head),
        "torch_imported": "torch" in sys.modules,
        "machine": machine(),
        "command": "python " + " ".join(sys.argv),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifact", type=Path, required=True, help="an `edge-tslm export --target onnx --decoder` directory")
    ap.add_argument("--split", default="test")
    ap.add_argument("--per-class", type=int, default=0, help="the seeded stratified subset of N per class (eval_tslm's)")
    ap.add_argument("--limit", type=int, default=0, help="score only the first N windows (smoke runs)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (0: its default)")
    ap.add_argument("--name", default="", help="results file suffix (default: the artifact directory name)")
    ap.add_argument("--calibrate-standing", type=int, default=0,
                    help="HAR: rotate each subject by its first N standing windows (not scored) onto the training subjects' standing direction")
    ap.add_argument("--no-rotate", action="store_true", help="with --calibrate-standing: leave out the same windows, rotate nothing (the control)")
    ap.add_argument("--label-scoring", default="full", choices=("full", "labels"),
                    help="full: answer log-likelihood; labels: p(label | one of the labels) (edge_tslm.runtime.label_trie)")
    a = ap.parse_args()
    if a.calibrate_standing < 0:
        ap.error(f"--calibrate-standing takes a number of standing windows >= 0, got {a.calibrate_standing}")
    if a.no_rotate and not a.calibrate_standing:
        ap.error("--no-rotate is the control of --calibrate-standing N: pass both")
    res = run(a.artifact, a.split, a.per_class, a.limit, a.threads, a.label_scoring, a.calibrate_standing, not a.no_rotate)
    name = a.name or a.artifact.name
    out = RESULTS / f"runtime_{name}.json"
    out.write_text(json.dumps(res, indent=1))
    m = res["metrics"]
    print(
        f"{name}: n={m['n']} macro-F1 {m['macro_f1']:.4f} acc {m['accuracy']:.4f}"
        + (f" challenge {m['challenge_score']:.4f}" if "challenge_score" in m else "")
        + f" | {res['artifact_size']['total_mib']} MiB on disk, peak RSS {res['peak_rss_mib']} MiB, "
        f"{res['ms_per_sample']} ms/sample -> {out}"
    )


if __name__ == "__main__":
    main()
