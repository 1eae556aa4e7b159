"""Rewrite README.md's generated results block from the committed benchmarks/results/*.json.

    python benchmarks/report.py            # rewrites the block between the markers in README.md
    python benchmarks/report.py --check    # exit 1 if the README block is not what the JSON files give

Only the text between `<!-- results:start -->` and `<!-- results:end -->` is touched; a README without
both markers (in that order, once each) is refused rather than guessed at.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def replace_block(text: str, block: str, start: str = START, end: str = END) -> str:
    """text with everything between the markers replaced by block (markers kept, text outside untouched)."""
    if text.count(start) != 1 or text.count(end) != 1:
        raise ValueError(f"expected exactly one {start!r} and one {end!r} in the README, found "
                         f"{text.count(start)} and {text.count(end)}")
    i, j = text.index(start), text.index(end)
    if j < i:
        raise ValueError(f"{end!r} comes before {start!r}")
    return text[: i + len(start)] + "\n" + block.strip("\n") + "\n" + text[j:]


def _load(results: Path, name: str) -> dict | None:
    f = results / name
    return json.loads(f.read_text()) if f.exists() else None


def _machine(m: dict) -> str:
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores"


def _f(v, nd=1) -> str:
    return "–" if v is None else (f"{v:,.{nd}f}" if isinstance(v, float) else str(v))


def section_memory(r: dict | None, name: str = "memory_scaling") -> list[str]:
    ckpt = bool(r and r.get("activation_checkpointing"))
    out = ["#### Training-step memory: SoftPrompt vs Flamingo" + (", with activation checkpointing" if ckpt else ""), ""]
    if r is None:
        return out + ["Not run yet: `python benchmarks/memory_scaling.py`.", ""]
    cells = r["cells"]
    lengths = sorted({c["length"] for c in cells})
    resumed = (f" — the last of several runs: {r['resumed_cells']} cells were measured by earlier runs of the same "
               f"script and reused from {name}.partial.jsonl" if r.get("resumed_cells") else "")
    how = ("training with activation checkpointing (LM layers and encoder blocks recomputed in the backward; "
           "Flamingo one series per checkpoint)" if ckpt else "training without activation checkpointing")
    out += [f"`{r['command']}`{resumed} ({r['backbone']}, {r['device']}, batch 1, one training step per fresh process, "
            f"{how}, {_machine(r['machine'])}). Whole-process peak in MiB (model included); "
            f"[table](benchmarks/results/{name}.md), [plot](benchmarks/results/{name}.png).", "",
            "| variant | N | " + " | ".join(f"L={L:,}" for L in lengths) + " |", "|---|---:|" + "---:|" * len(lengths)]
    for v in ("flamingo", "softprompt"):
        for n in sorted({c["n_series"] for c in cells}):
            row = {c["length"]: c for c in cells if c["variant"] == v and c["n_series"] == n}
            if not row:
                continue
            txt = []
            for L in lengths:
                c = row.get(L)
                txt.append("–" if c is None else f"{c['peak_mib']:,.0f}" if c["status"] == "ok"
                           else {"over_cap": f"> {r.get('cap_gb')} GB cap", "timed_out": "timed out",
                                 "skipped": "not run"}.get(c["status"], c["status"]))
            out.append(f"| {v} | {n} | " + " | ".join(txt) + " |")
    out += ["", f"Goal: Flamingo grows <= 10 % across the grid, SoftPrompt several-fold. Measured: {r.get('verdict', '')}", ""]
    return out


def section_opentslm(r: dict | None, name: str = "opentslm_vs_classify", title: str = "") -> list[str]:
    out = [f"#### OpenTSLM-style decision vs the classify path (HAR){title}", ""]
    if r is None:
        return out + ["Not run yet: `python benchmarks/opentslm_vs_classify.py`.", ""]
    s = r["subset"]
    out += [f"`{r['command']}` — the same {s['n']} HAPT test windows ({s['per_class']}/class, seed {s['seed']}), "
            f"{r['threads']} thread(s), {_machine(r['machine'])}, load average {r['machine'].get('load_avg_1min_at_start')} "
            f"(shared machine); [details](benchmarks/results/{name}.md).", "",
            "| path | macro-F1 | ms/decision p50 | speed-up vs OpenTSLM-style | F1 − OpenTSLM-style (points) |",
            "|---|---:|---:|---:|---:|"]
    for p in r["paths"]:
        out.append(f"| {p['path']} | {p['macro_f1']:.4f} | {p['ms_p50']:,.1f} | x{p['speedup_vs_opentslm_p50']} | "
                   f"{p['f1_minus_opentslm_points']:+.1f} |")
    for k, v in r.get("skipped", {}).items():
        out.append(f"| classify-onnx ({k}) | skipped: {v} | | | |")
    ref = [p for p in r["paths"] if p["path"] != "opentslm-generate"]
    best = max(ref, key=lambda p: p["speedup_vs_opentslm_p50"])
    out += ["", f"Goal: >= 50x faster per decision with F1 within 3 points. Measured: x{best['speedup_vs_opentslm_p50']} "
            f"({best['path']}), F1 {best['f1_minus_opentslm_points']:+.1f} points.", ""]
    return out


def section_patch(r: dict | None) -> list[str]:
    out = ["#### patch_len ablation (short budget)", ""]
    if r is None:
        return out + ["Not run yet: `python benchmarks/patch_len_ablation.py`.", ""]
    b = r["budget"]
    out += [f"`{r['command']}` — {b['steps']} steps x batch {b['batch']} per setting (init `{b['init']}`), F1 on "
            f"{r['n']} test windows ({b['per_class']}/class): a short-budget ablation, F1 is indicative only; "
            "[details](benchmarks/results/patch_len.md).", "",
            "| patch_len | encoder ms (3x128) | encoder ms (3x10,000) | classify p50 ms | macro-F1 | load avg |",
            "|---:|---:|---:|---:|---:|---:|"]
    for x in r["rows"]:
        out.append(f"| {x['patch_len']} | {x['encoder_ms_har_window']:.1f} | {x['encoder_ms_3x10000']:.1f} | "
                   f"{x['classify_ms_p50']:.1f} | {x['macro_f1']:.4f} | {x.get('load_avg_1min', '–')} |")
    out.append("")
    loads = [x["load_avg_1min"] for x in r["rows"] if x.get("load_avg_1min") is not None]
    if loads and max(loads) > 1.5 * min(loads):
        out.append("The load changed between rows (other developers' jobs), so latency differences mix patch_len with load.")
    if b["init"] != "scratch":
        out.append(f"Every setting starts from `{b['init_model']}` with a fresh patch convolution; its other weights were "
                   "trained behind patch_len 4, which favours patch_len 4.")
    return out + [""]


def section_bench(r: dict | None, where: str = "", title: str = "`edge-tslm bench`: size, memory, latency, F1 per artifact") -> list[str]:
    out = [f"#### {title}", ""]
    if r is None:
        return out + ["Not run yet: `edge-tslm bench --quick`.", ""]
    c = r["config"]
    d = f"benchmarks/results/{where}"
    task = "HAR" if c.get("task", "har").startswith("har") else "ECG rhythm"
    gpu = f", {r['machine']['gpu']}" if r["machine"].get("gpu") else ""
    out += [f"`{r['command']}` — {'--quick, ' if r['quick'] else ''}F1 on {r['n']} {task} test windows ({c['per_class']}/class), "
            f"{c['threads']} thread(s), {_machine(r['machine'])}{gpu}, load average {r['machine'].get('load_avg_1min_at_start')} "
            f"(shared machine); [table]({d}bench.md), plots: "
            f"[F1 vs latency]({d}bench_f1_latency.png), [F1 vs memory]({d}bench_f1_memory.png).", "",
            "| artifact | device | size MiB (+ backbone) | peak MiB | encoder ms | prefill ms | ms/token | classify p50 / p95 ms | macro-F1 |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for x in r["rows"]:
        if x["status"] != "ok":
            out.append(f"| {x['artifact']} | {x['device']} | {x['status']} | | | | | | |")
            continue
        bb = f" (+{x['backbone_mib']:,.0f})" if x.get("backbone_mib") else ""
        out.append(f"| {x['artifact']} | {x['device']} | {x['size_mib']:,.1f}{bb} | {_f(x['peak_mib'], 0)} | "
                   f"{_f(x['encoder_ms'])} | {_f(x['prefill_ms'])} | {_f(x['decode_ms_per_token'])} | "
                   f"{_f(x['classify_ms_p50'])} / {_f(x['classify_ms_p95'])} | {x['macro_f1']:.4f} |")
    if r.get("skipped"):
        out += ["", "Skipped: " + "; ".join(f"{s['artifact']} ({s['reason']})" for s in r["skipped"]) + "."]
    if r.get("devices_skipped"):
        out += ["Devices not run here: " + "; ".join(f"{d} ({w})" for d, w in r["devices_skipped"].items()) + "."]
    for k in ("latency", "memory"):
        if r["pareto"].get(k):
            out.append(f"Pareto front (F1 vs {k}): {', '.join(r['pareto'][k])}.")
    return out + [""]


def render(results: Path = RESULTS) -> str:
    lines = ["### Benchmarks (generated by `python benchmarks/report.py` from `benchmarks/results/*.json`)", ""]
    lines += section_memory(_load(results, "memory_scaling.json"))
    if (results / "memory_scaling_ckpt.json").exists():
        lines += section_memory(_load(results, "memory_scaling_ckpt.json"), "memory_scaling_ckpt")
    lines += section_opentslm(_load(results, "opentslm_vs_classify.json"))
    for extra in sorted(results.glob("opentslm_vs_classify_*.json")):
        lines += section_opentslm(_load(results, extra.name), extra.stem, f", {extra.stem.removeprefix('opentslm_vs_classify_')}")
    lines += section_patch(_load(results, "patch_len.json"))
    lines += section_bench(_load(results, "bench.json"))
    for sub in sorted(p.parent.name for p in results.glob("bench_*/bench.json")):
        lines += section_bench(_load(results / sub, "bench.json"), f"{sub}/",
                               f"`edge-tslm bench` ({sub.replace('bench_', '').replace('_', ', ')})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    old = a.readme.read_text()
    new = replace_block(old, render(a.results))
    if a.check:
        sys.exit(0 if new == old else 1)
    a.readme.write_text(new)
    print(f"rewrote the results block of {a.readme}")


if __name__ == "__main__":
    main()
