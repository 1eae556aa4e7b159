"""The compression table: fp32 vs int8 vs int4 vs pruned vs shared vs all combined, for HAR and ECG rhythm.

Each row is one artifact built by one CLI command from the committed fp32 adapter (models/flamingo-<task>),
then scored on the same seeded stratified test subset in a fresh process, which also measures its peak memory
(VmHWM reset after the model is loaded, so the row's memory is that of answering, not of building it).

    python benchmarks/compression.py --task har --row int4        # build (if missing) + score one row
    python benchmarks/compression.py --task har --task ecg_rhythm # every row of both tasks
    python benchmarks/compression.py --markdown-only              # rebuild compression.md/json from the rows

Rows land in benchmarks/results/compression/<task>_<row>.json; the compact ONNX row (4-bit decoder, the
runtime's artifact) is read from benchmarks/results/runtime_compact-<task>.json (benchmarks/eval_runtime.py).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ROWS_DIR = RESULTS / "compression"
RUNS = ROOT / "runs" / "compress"
SOURCE = {"har": "models/flamingo-har", "ecg_rhythm": "models/flamingo-ecg"}
SHORT = {"har": "har", "ecg_rhythm": "ecg"}
RECOVER = ["--recover-steps", "40"]
# row -> CLI verb + options (the source and --out are added); fp32 is the committed artifact itself
ROWS: dict[str, list[str]] = {
    "fp32": [],
    "int8": ["quantize", "--bits", "8"],
    # 4-bit (bitsandbytes nf4 on CPU) for the LM's linear layers; the 5M-parameter adapter stays fp32 (19 MiB)
    "int4": ["quantize", "--bits", "4", "--parts", "llm"],
    "pruned": ["prune", "--sparsity", "0.5"],
    "shared": ["compress", "--share", *RECOVER, "--bits", "0"],
    "combined": ["compress", "--share", *RECOVER, "--sparsity", "0.5", "--bits", "4", "--parts", "llm"],
}


def build_cmd(task: str, row: str) -> list[str] | None:
    if not ROWS[row]:
        return None
    return ["edge-tslm", *ROWS[row][:1], "--model", SOURCE[task], "--out", str(artifact(task, row).relative_to(ROOT)), *ROWS[row][1:]]


def artifact(task: str, row: str) -> Path:
    return ROOT / SOURCE[task] if row == "fp32" else RUNS / f"{SHORT[task]}-{row}"


def build(task: str, row: str) -> float:
    cmd = build_cmd(task, row)
    if cmd is None or (artifact(task, row) / "manifest.json").exists():
        return 0.0
    exe = str(Path(sys.executable).parent / cmd[0])
    t0 = time.time()
    subprocess.run([exe, *cmd[1:]], cwd=ROOT, check=True)
    return round(time.time() - t0, 1)


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def score(task: str, row: str, per_class: int, threads: int) -> dict:
    """Load the artifact, reset the peak-RSS counter, evaluate the subset; runs in its own process."""
    import torch

    from edge_tslm.data.subset import stratified_subset
    from edge_tslm.evaluate import evaluate
    from edge_tslm.machine import machine
    from edge_tslm.quantize import load_compressed
    from edge_tslm.quantize.report import read_manifest, sizes
    from edge_tslm.train.tasks import get_task

    torch.set_num_threads(threads)
    src = artifact(task, row)
    t = get_task(task)
    samples = t.load("test", None)
    idx = stratified_subset(samples, per_class)
    t0 = time.time()
    model = load_compressed(src)
    load_s = time.time() - t0
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand back what building the quantized copy freed
    rss_loaded = _status_kib("VmRSS") * 1024
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    t0 = time.time()
    rep = evaluate(model, [samples[i] for i in idx], t.spec.labels, task=task, progress=False)
    eval_s = time.time() - t0
    man = read_manifest(src)
    return {
        "task": task,
        "row": row,
        "artifact": str(src.relative_to(ROOT)),
        "build_command": " ".join(build_cmd(task, row) or ["(committed artifact)"]),
        "score_command": f"python benchmarks/compression.py --task {task} --row {row} --per-class {per_class}",
        "transforms": man.get("transforms", []),
        "sizes": sizes(model, src),
        "rss_after_load_bytes": rss_loaded,
        "peak_rss_answering_bytes": _status_kib("VmHWM") * 1024,
        "load_s": round(load_s, 1),
        "metrics": rep,
        "subset": {"per_class": per_class, "seed": 0, "n": len(idx)},
        "ms_per_sample": round(1000 * eval_s / max(1, len(idx)), 1),
        "torch_threads": threads,
        "loadavg": os.getloadavg(),
        "machine": machine(),
    }


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def write_tables() -> None:
    rows = [json.loads(f.read_text()) for f in sorted(ROWS_DIR.glob("*.json"))]
    order = list(ROWS) + ["compact-onnx"]
    per_class = {r["task"]: r["subset"]["per_class"] for r in rows}  # the torch rows' subset, per task
    for rt in sorted(RESULTS.glob("runtime_compact*.json")):  # benchmarks/eval_runtime.py on compact ONNX exports
        r = json.loads(rt.read_text())
        if r["task"] in per_class and (r.get("subset") or {}).get("per_class") == per_class[r["task"]]:
            rows.append(_onnx_row(r["task"], r, rt.stem.removeprefix("runtime_")))  # only ONNX rows scored on the same windows
    rows.sort(key=lambda r: (list(SOURCE).index(r["task"]), order.index(r["row"] if r["row"] in order else "compact-onnx")))
    fp32_disk = {r["task"]: r["disk_total_bytes"] for r in map(_flat, rows) if r["row"] == "fp32"}
    fp32_f1 = {r["task"]: r["macro_f1"] for r in map(_flat, rows) if r["row"] == "fp32"}
    lines = [
        "# Compression: fp32 vs int8 vs int4 vs pruned vs shared vs combined",
        "",
        "Generated by `python benchmarks/compression.py --markdown-only` from `benchmarks/results/compression/*.json`; "
        "each row's build and score commands are in its JSON. F1 is macro-F1 on the same seeded stratified test subset "
        "per task (HAR: UCI test subjects; ECG: the PhysioNet 2017 record-level test split). Peak memory is the peak RSS "
        "of the scoring process while answering (counter reset after loading); for the ONNX rows it is the whole "
        "torch-free scoring process's peak (benchmarks/eval_runtime.py). Pruning zeroes weights inside dense tensors: "
        "it changes neither the parameter count nor the size here.",
        "",
        "Size columns: *weights* = every weight at its stored/quantized width (torch rows: the backbone counted at its "
        "quantized in-memory size; the torch artifacts store only the adapter and re-quantize the named fp32 backbone "
        "at load, so their real disk need also includes the 513 MiB fp32 backbone cache); *files* = bytes the artifact "
        "directory really holds. The compact ONNX row holds every weight itself.",
        "",
        "| task | row | transforms | params | weights MiB | ÷ fp32 | files MiB | peak RSS MiB | n | macro-F1 | Δ F1 (pts) | ms/sample | machine |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in map(_flat, rows):
        base_disk, base_f1 = fp32_disk.get(r["task"]), fp32_f1.get(r["task"])
        ratio = f"1/{base_disk / r['disk_total_bytes']:.1f}" if base_disk else "–"
        d = "–" if base_f1 is None else f"{100 * (r['macro_f1'] - base_f1):+.1f}"
        params = f"{r['params']:,}" if r["params"] else "–"
        lines.append(
            f"| {r['task']} | {r['row']} | {r['transforms']} | {params} | {_mib(r['disk_total_bytes'])} | {ratio} | "
            f"{_mib(r['files_bytes'])} | {_mib(r['peak_rss'])} | {r['n']} | {r['macro_f1']:.4f} | {d} | {r['ms']} | {r['cpu']} |"
        )
    lines += ["", "Goal (issue 4): the compact artifact ≤ 1/5 of the fp32 size with an F1 drop ≤ 3 points on both tasks."]
    (RESULTS / "compression.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "compression.json").write_text(json.dumps([_flat(r) for r in rows], indent=1))
    print("\n".join(lines))


def _onnx_row(task: str, rt: dict, name: str = "") -> dict:
    return {"task": task, "row": f"onnx {name or Path(rt['artifact']).name}", "onnx": rt}


def _flat(r: dict) -> dict:
    if "onnx" in r:
        o = r["onnx"]
        q = o.get("weight_quantization", {}).get("config", {})
        keep = f", {'+'.join(q.get('keep_scopes', []))} {q.get('keep_bits')}-bit" if q.get("keep_scopes") else ""
        fold = " (zero points folded)" if q.get("fold_zero_points") and q.get("algorithm") == "minmax" else ""
        acc = (f", accuracy_level {q.get('accuracy_level')} / LM {q.get('fold_accuracy_level')}"
               if q.get("accuracy_level") is not None or q.get("fold_accuracy_level") is not None else "")
        tr = (f"ONNX: LM {q.get('bits')}-bit {q.get('algorithm')}{fold} b{q.get('block_size')}{keep}{acc}, "
              f"encoder {o.get('encoder_precision')}")
        size = o["artifact_size"]["total_bytes"]
        return {
            "task": r["task"], "row": r["row"], "transforms": tr, "params": o.get("parameters", 0),
            "disk_total_bytes": size, "files_bytes": size, "peak_rss": int(o["peak_rss_mib"] * 2**20),
            "n": o["metrics"]["n"], "macro_f1": o["metrics"]["macro_f1"], "ms": o.get("ms_per_sample", "–"),
            "cpu": o["machine"]["cpu"],
        }
    tr = ", ".join(t["op"] + (f":{t['config']['type']}" if isinstance(t.get("config"), dict) else "") for t in r["transforms"]) or "fp32"
    s = r["sizes"]
    return {
        "task": r["task"], "row": r["row"], "transforms": tr, "params": s["parameters"]["total"],
        "disk_total_bytes": s["disk"]["total"], "files_bytes": s["disk"]["artifact_files"],
        "peak_rss": r["peak_rss_answering_bytes"], "n": r["metrics"]["n"], "macro_f1": r["metrics"]["macro_f1"],
        "ms": r["ms_per_sample"], "cpu": r["machine"]["cpu"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", action="append", choices=list(SOURCE))
    ap.add_argument("--row", action="append", choices=list(ROWS))
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--score-only", action="store_true", help="internal: score in this process")
    ap.add_argument("--markdown-only", action="store_true")
    a = ap.parse_args()
    if not a.markdown_only:
        ROWS_DIR.mkdir(parents=True, exist_ok=True)
        for task in a.task or list(SOURCE):
            for row in a.row or list(ROWS):
                if a.score_only:
                    res = score(task, row, a.per_class, a.threads)
                    (ROWS_DIR / f"{task}_{row}.json").write_text(json.dumps(res, indent=1))
                    print(f"{task} {row}: macro-F1 {res['metrics']['macro_f1']:.4f} (n={res['metrics']['n']})")
                    continue
                secs = build(task, row)
                if secs:
                    print(f"built {task} {row} in {secs} s")
                cmd = [sys.executable, __file__, "--task", task, "--row", row, "--per-class", str(a.per_class),
                       "--threads", str(a.threads), "--score-only"]
                subprocess.run(cmd, cwd=ROOT, check=True)
    write_tables()


if __name__ == "__main__":
    main()
