"""patch_len ablation (32 -> 16 -> 8 -> 4) for the Flamingo HAR model: a SHORT training per setting with the
library loop (same steps, batch, seed, examples for each), then encoder latency, classify latency and F1 on a
small seeded test subset. A short-budget ablation: it shows the cost side reliably and the F1 side only
roughly; the budget is a flag and is written into the results.

    python benchmarks/patch_len_ablation.py                               # 30 steps x batch 4, 5/class
    python benchmarks/patch_len_ablation.py --steps 300 --batch 8 --per-class 20 --init scratch

--init flamingo-har (default): every setting starts from models/flamingo-har's trained adapter (resampler,
cross-attention, the encoder's residual convs) with a freshly initialised patch convolution, the one part
whose shape depends on patch_len (re-initialised for patch_len 4 too, so no setting keeps trained patch
weights). The downstream weights were trained behind patch_len 4, which favours 4: stated beside the table.
--init scratch: every adapter from the seeded initialisation (fair, but a short budget then leaves all
settings near chance).
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
OUT = RESULTS / "patch_len"


def median_ms(fn, reps: int) -> float:
    ms = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1000)
    return round(float(np.median(ms)), 2)


def run_setting(p: int, a, base_cfg, train_ex, val_ex, test_samples, labels) -> dict:
    import torch
    from safetensors.torch import load_file

    from edge_tslm.config import EncoderConfig
    from edge_tslm.constants import WEIGHTS_FILE
    from edge_tslm.model.build import build_model
    from edge_tslm.train.loop import TrainConfig, train
    from edge_tslm.evaluate import predict

    torch.manual_seed(a.seed)
    enc = base_cfg.encoder
    cfg = base_cfg.replace(encoder=EncoderConfig(**{**enc.__dict__, "patch_len": p}))
    model = build_model(cfg)  # a fresh backbone each time: fusion hooks are installed on its layers
    if a.init != "scratch":
        state = {k: v for k, v in load_file(str(Path(a.init_model) / WEIGHTS_FILE)).items()
                 if not k.startswith("series_encoder.encoder.patch.")}
        model.load_state_dict(state, strict=False)
    out = Path(a.runs) / f"p{p}"
    if (out / "last").exists():  # a budget is a fresh run, never a resume of an older one
        import shutil

        shutil.rmtree(out)
    tc = TrainConfig(out_dir=str(out), max_steps=a.steps, batch_size=a.batch, warmup_steps=max(1, a.steps // 10),
                     eval_every=10**9, val_batches=max(1, len(val_ex) // a.batch), seed=a.seed, progress=False)
    t0 = time.time()
    tr = train(model, train_ex, val_ex, tc)
    train_s = time.time() - t0
    model.eval()
    # encoder latency: one HAR window (3 x 128 samples) and one long series (3 x 10,000 samples)
    from edge_tslm.train.examples import make_example

    ex = make_example(test_samples[0], fs=cfg.fs, max_seconds=cfg.max_seconds)
    b = model._batch(ex.text, ex.series)
    long = torch.randn(1, 3, 10_000)
    long_mask = torch.ones_like(long, dtype=torch.bool)
    with torch.no_grad():
        model.encode_media(b.series, b.series_mask)
        enc_ms = median_ms(lambda: model.encode_media(b.series, b.series_mask), a.reps)
        enc_long_ms = median_ms(lambda: model.encode_media(long, long_mask), max(1, a.reps // 2))
    predict(model, test_samples[0], labels, "classify")  # warm-up
    y_true, y_pred, ms = [], [], []
    for s in test_samples:
        t = time.perf_counter()
        pred, _, _ = predict(model, s, labels, "classify")
        ms.append((time.perf_counter() - t) * 1000)
        y_true.append(s.label)
        y_pred.append(pred)
    from edge_tslm.metrics import classification_report

    rep = classification_report(y_true, y_pred, labels)
    patches = -(-int(b.series.shape[-1]) // p)
    return {
        "patch_len": p, "patches_per_har_series": patches, "train_steps": tr["step"], "train_s": round(train_s, 1),
        "final_val_loss": round(float(tr["best_val_loss"]), 4), "encoder_ms_har_window": enc_ms,
        "encoder_ms_3x10000": enc_long_ms, "classify_ms_p50": round(float(np.percentile(ms, 50)), 1),
        "classify_ms_p95": round(float(np.percentile(ms, 95)), 1), "macro_f1": round(rep["macro_f1"], 4),
        "accuracy": round(rep["accuracy"], 4), "per_class_f1": rep["per_class_f1"], "n": rep["n"],
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def markdown(res: dict) -> str:
    b, m = res["budget"], res["machine"]
    lines = [
        "# patch_len ablation (Flamingo, HAR) — a SHORT-budget ablation", "",
        f"`{res['command']}` — per setting: {b['steps']} training steps x batch {b['batch']} (seed {b['seed']}, the same "
        f"{b['train_examples']} answer-only HAPT training windows in the same order), init `{b['init']}`; then F1 and "
        f"classify latency on a seeded stratified test subset of {b['per_class']}/class (n = {res['n']}), encoder latency "
        f"median of {b['reps']}; {b['threads']} thread(s); {m['cpu']}, {m['cores']} cores, load average "
        f"{m['load_avg_1min_at_start']} at start"
        + (" (shared machine: latencies are pessimistic)." if m["load_avg_1min_at_start"] > 1.5 else "."), "",
        "| patch_len | patches per HAR series | final val loss | encoder ms (HAR window, 3x128) | encoder ms (3x10,000) | "
        "classify p50 ms | p95 ms | macro-F1 | accuracy | train s | load avg (1 min) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(f"| {r['patch_len']} | {r['patches_per_har_series']} | {r['final_val_loss']:.4f} | "
                     f"{r['encoder_ms_har_window']:.1f} | {r['encoder_ms_3x10000']:.1f} | {r['classify_ms_p50']:.1f} | "
                     f"{r['classify_ms_p95']:.1f} | {r['macro_f1']:.4f} | {r['accuracy']:.4f} | {r['train_s']:.0f} | "
                     f"{r.get('load_avg_1min', '–')} |")
    lines += [
        "", f"This is a {b['steps']}-step budget, far below a real training run (models/flamingo-har: 930 steps x 32 "
        "after a TSQA stage): read the F1 column as \"what a short fine-tune reaches\", not as the setting's "
        "potential; the latency columns do not depend on training.",
    ]
    loads = [r.get("load_avg_1min") for r in res["rows"] if r.get("load_avg_1min") is not None]
    if loads and max(loads) > 1.5 * min(loads):
        lines.append(f"The machine's load changed between rows ({min(loads)} to {max(loads)}, last column; the other "
                     "developers' jobs): latency differences between rows mix patch_len with load. Read them beside "
                     "the patch counts, and rerun on an idle machine for clean timings.")
    if res.get("not_run"):
        lines.append(f"Not run (the run was stopped at its time budget on a shared machine): patch_len "
                     f"{', '.join(str(p) for p in res['not_run'])}.")
    if b["init"] != "scratch":
        lines.append(f"Every setting starts from `{b['init_model']}` with a fresh patch convolution; its other weights "
                     "were trained behind patch_len 4, which favours patch_len 4.")
    return "\n".join(lines) + "\n"


def header(a, *, n, idx, info, train_examples, val_examples, command) -> dict:
    return {
        "budget": {"steps": a.steps, "batch": a.batch, "seed": a.seed, "per_class": a.per_class, "reps": a.reps,
                   "threads": a.threads, "init": a.init, "init_model": a.init_model, "train_examples": train_examples,
                   "val_examples": val_examples},
        "n": n, "subset_indices": idx, "machine": info, "command": command,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patch-lens", default="32,16,8,4")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--per-class", type=int, default=5)
    ap.add_argument("--val", type=int, default=16, help="validation windows for the final val loss")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--init", default="flamingo-har", choices=["flamingo-har", "scratch"])
    ap.add_argument("--init-model", default="models/flamingo-har")
    ap.add_argument("--runs", default="runs/patch_len", help="training outputs (not committed)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--markdown-only", action="store_true")
    ap.add_argument("--from-partial", action="store_true",
                    help="<out>.partial.jsonl -> results, for a run stopped before every setting finished (give the "
                         "same budget flags and the original command with --command)")
    ap.add_argument("--keep-partial", action="store_true",
                    help="append to <out>.partial.jsonl (settings split over several runs with the same budget flags)")
    ap.add_argument("--command", default="", help="with --from-partial: the command that produced the partial rows")
    a = ap.parse_args()
    if a.markdown_only:
        res = json.loads(a.out.with_suffix(".json").read_text())
        a.out.with_suffix(".md").write_text(markdown(res))
        print(markdown(res))
        return
    if a.from_partial:  # an interrupted run: the settings it finished, the rest listed as not run
        rows = [json.loads(x) for x in a.out.with_suffix(".partial.jsonl").read_text().splitlines() if x.strip()]
        wanted = [int(x) for x in a.patch_lens.split(",")]
        rows = sorted({r["patch_len"]: r for r in rows}.values(),  # the last row of a setting, in --patch-lens order
                      key=lambda r: wanted.index(r["patch_len"]) if r["patch_len"] in wanted else 99)
        from edge_tslm.machine import machine

        res = header(a, n=rows[0]["n"] if rows else 0, idx=None, info=machine(), train_examples=a.steps * a.batch,
                     val_examples=a.val, command=a.command or "?")
        res.update(rows=rows, not_run=[p for p in wanted if p not in {r["patch_len"] for r in rows}],
                   assembled_by="python " + " ".join(sys.argv))
        a.out.with_suffix(".json").write_text(json.dumps(res, indent=1))
        a.out.with_suffix(".md").write_text(markdown(res))
        print(markdown(res))
        return
    import torch

    from edge_tslm.machine import machine
    from edge_tslm.model.artifact import read_config
    from edge_tslm.train.recipe import stage_examples
    from edge_tslm.train.tasks import get_task

    torch.set_num_threads(a.threads)
    info = machine()
    base_cfg = read_config(a.init_model)
    task = get_task("har")
    labels = task.spec.labels
    train_ex = stage_examples("har", "train", None, 0.0, a.seed, limit=a.steps * a.batch)
    val_ex = stage_examples("har", "val", None, 0.0, a.seed, limit=a.val)
    test = task.load("test", None)
    idx = stratified_subset(test, a.per_class, a.seed)
    test_samples = [test[i] for i in idx]
    rows = []
    partial = a.out.with_suffix(".partial.jsonl")
    if not a.keep_partial:
        partial.write_text("")
    for p in (int(x) for x in a.patch_lens.split(",")):
        print(f"patch_len {p}: training {a.steps} steps x {a.batch} ...", flush=True)
        r = run_setting(p, a, base_cfg, train_ex, val_ex, test_samples, labels)
        print(json.dumps({k: v for k, v in r.items() if k != "per_class_f1"}), flush=True)
        rows.append(r)
        with partial.open("a") as f:
            f.write(json.dumps(r) + "\n")
    res = header(a, n=len(idx), idx=idx, info=info, train_examples=len(train_ex), val_examples=len(val_ex),
                 command="python " + " ".join(sys.argv))
    res["rows"] = rows
    a.out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    a.out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
