"""Peak memory of ONE training step, SoftPrompt vs Flamingo, over N series x L samples (the OpenTSLM paper's
Table 11, on our default backbone). Every cell runs in a fresh subprocess.

    python benchmarks/memory_scaling.py                       # CPU, N = 1..5, L = 10, 100, 1000, 10000
    python benchmarks/memory_scaling.py --device cuda         # same script on a GPU (max_memory_allocated)
    python benchmarks/memory_scaling.py --device mps          # Apple GPU (driver_allocated_memory)
    python benchmarks/memory_scaling.py --markdown-only       # re-render .md + .png from the JSON
    python benchmarks/memory_scaling.py --activation-checkpointing --out benchmarks/results/memory_scaling_ckpt
                                                              # the same grid, training with activation checkpointing

One step = the body of edge_tslm.train.loop.train for a batch of 1: collate (the loop's _collate) -> loss
(model.loss through the loop's _LossModule) -> backward -> clip_grad_norm_ -> AdamW step over the loop's
param_groups. train() itself is not called: at its last step it also writes a checkpoint, which would add
to the peak what is not training.

Memory per device:
  all   the baseline is taken after the model is loaded, its weights paged in, and one warm-up forward +
        backward on the smallest input (N=1, one patch) whose gradients are dropped: that pages in the kernels'
        code, which would otherwise count as ~40 MB of noise in the first step's RSS. No optimizer step is run
        before the measurement, so AdamW's state is part of the measured step.
  cpu   peak RSS during the step minus the idle RSS after the model is loaded (Linux: VmHWM reset through
        /proc/self/clear_refs, so the load's own peak does not count; elsewhere a 2 ms RSS sampler).
        Each subprocess runs under RLIMIT_AS = --cap-gb (address space, which includes the idle process's
        virtual mappings): a cell that needs more is recorded "over the cap", one that runs longer than
        --timeout "timed out".
  cuda  torch.cuda.max_memory_allocated() minus memory_allocated() after load (no RLIMIT_AS: CUDA maps
        huge virtual ranges); a CUDA OOM is recorded "over the cap".
  mps   torch.mps.driver_allocated_memory() sampled after forward, backward and step, minus after load
        (MPS has no peak counter, so this is a lower bound of the peak).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "memory_scaling"
MARK = "CELL_RESULT "
PROMPT = "Which activity is the person doing? Options: walking, sitting, standing, lying."


# ---------------------------------------------------------------------------------------------- in the cell
def _proc_status() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "VmSize", "VmPeak"):
                out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


class _RssPeak:
    """Peak RSS from now on: VmHWM after clear_refs on Linux, else a sampling thread (psutil or ru_maxrss)."""

    def __init__(self) -> None:
        self.thread = None
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.method = "VmHWM after clear_refs"
        except OSError:
            import threading

            self.method = "RSS sampled every 2 ms"
            self.peak, self._stop = self._rss(), False

            def loop():
                while not self._stop:
                    self.peak = max(self.peak, self._rss())
                    time.sleep(0.002)

            self.thread = threading.Thread(target=loop, daemon=True)
            self.thread.start()

    @staticmethod
    def _rss() -> int:
        st = _proc_status()
        if "VmRSS" in st:
            return st["VmRSS"]
        try:
            import psutil

            return psutil.Process().memory_info().rss
        except ImportError:  # macOS without psutil: ru_maxrss is a whole-process peak (bytes on macOS)
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def stop(self) -> int:
        if self.thread is None:
            return _proc_status()["VmHWM"]
        self._stop = True
        self.thread.join()
        return max(self.peak, self._rss())


def make_example(n_series: int, length: int, seed: int = 0):
    """N accelerometer-like series of L samples at 50 Hz, the HAR prompt, an answer-only target."""
    import numpy as np

    from edge_tslm.data.sample import Sample
    from edge_tslm.signals import SignalMeta
    from edge_tslm.train.examples import make_example as mk

    rng = np.random.default_rng(seed)
    t = np.arange(length) / 50.0
    sig = np.stack([np.sin(2 * np.pi * (1 + c) * t) + 0.3 * rng.standard_normal(length) for c in range(n_series)])
    meta = SignalMeta(fs=50.0, unit="g", channels=tuple(f"axis{c}" for c in range(n_series)))
    return mk(Sample(sig.astype("float32"), meta, PROMPT, "walking", "Answer: walking", "har", "synthetic"))


def run_cell(variant: str, n_series: int, length: int, *, device: str = "cpu", backbone: str = "smollm2-135m",
             seed: int = 0, threads: int = 1, warmup: bool = True, train_token_rows: bool = True,
             activation_checkpointing: bool = False) -> dict:
    """Build the model, measure the idle baseline, run one training step, return the step's extra memory."""
    import gc

    import torch

    from edge_tslm.config import TSLMConfig
    from edge_tslm.model.build import build_model
    from edge_tslm.train.loop import TrainConfig, _collate, _LossModule
    from edge_tslm.train.optim import param_groups

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t_load = time.time()
    model = build_model(TSLMConfig(variant=variant, backbone=backbone, train_token_rows=train_token_rows)).to(device)
    model.train()
    tc = TrainConfig(batch_size=1, activation_checkpointing=activation_checkpointing)
    if tc.activation_checkpointing:  # what train() switches on for this setting
        model.set_activation_checkpointing(True)
    opt = torch.optim.AdamW(param_groups(model, tc.lr_encoder, tc.lr_fusion, tc.lr_tokens, tc.weight_decay), betas=(0.9, 0.95))
    net = _LossModule(model)
    ex = make_example(n_series, length, seed)
    batch = _collate(model, [ex])
    lm_tokens = int(batch.input_ids.shape[1])
    with torch.no_grad():  # page in every weight (safetensors may be mmapped), so the baseline holds the whole model
        for t in list(model.parameters()) + list(model.buffers()):
            t.sum()
    if warmup:  # forward + backward on the smallest input pages in the kernels' code (file-backed RSS);
        net(_collate(model, [make_example(1, model.cfg.encoder.patch_len, seed)]).to(device)).backward()
        opt.zero_grad(set_to_none=True)  # no optimizer step: its state is part of the measured step
    load_s = time.time() - t_load
    gc.collect()
    dev = torch.device(device)
    base_status = _proc_status()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        method = "torch.cuda.max_memory_allocated - memory_allocated after load"
    elif dev.type == "mps":
        torch.mps.synchronize()
        base = torch.mps.driver_allocated_memory()
        method = "torch.mps.driver_allocated_memory after forward/backward/step (max) - after load"
    else:
        base = base_status.get("VmRSS") or _RssPeak._rss()
    sampler = _RssPeak() if dev.type == "cpu" else None
    if sampler is not None:
        method = f"peak RSS ({sampler.method}) - RSS after load"
    mps_samples = []
    t0 = time.time()
    b = batch.to(dev)  # the step starts with the batch moving to the device, as in the loop
    loss = net(b)
    if dev.type == "mps":
        torch.mps.synchronize()
        mps_samples.append(torch.mps.driver_allocated_memory())
    loss.backward()
    if dev.type == "mps":
        torch.mps.synchronize()
        mps_samples.append(torch.mps.driver_allocated_memory())
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], tc.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    elif dev.type == "mps":
        torch.mps.synchronize()
        mps_samples.append(torch.mps.driver_allocated_memory())
        peak = max(mps_samples)
    else:
        peak = sampler.stop()
    step_s = time.time() - t0
    # soft tokens the LM sees: SoftPrompt splices every patch; Flamingo feeds only the text tokens
    patches = -(-length // model.cfg.encoder.patch_len)
    seq = lm_tokens + (n_series * (patches - 1) if variant == "softprompt" else 0)
    return {
        "variant": variant, "n_series": n_series, "length": length, "device": device, "backbone": backbone,
        "status": "ok", "step_mib": round((peak - base) / 2**20, 1), "peak_mib": round(peak / 2**20, 1),
        "baseline_mib": round(base / 2**20, 1), "baseline_vmsize_mib": round(base_status.get("VmSize", 0) / 2**20, 1),
        "method": method, "loss": round(float(loss.detach()), 4), "lm_sequence_tokens": seq, "text_tokens": lm_tokens,
        "step_s": round(step_s, 2), "load_s": round(load_s, 1), "torch_threads": torch.get_num_threads(),
        "warmup": warmup, "train_token_rows": train_token_rows, "activation_checkpointing": activation_checkpointing,
    }


def _cell_main(spec: dict) -> None:
    """Subprocess entry: cap the address space first (CPU), then run the cell and print one result line."""
    cap = spec.get("cap_gb", 0)
    if cap and spec["device"] == "cpu":
        import resource

        lim = int(cap * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    try:
        res = run_cell(spec["variant"], spec["n_series"], spec["length"], device=spec["device"],
                       backbone=spec["backbone"], seed=spec.get("seed", 0), threads=spec.get("threads", 1),
                       train_token_rows=spec.get("train_token_rows", True),
                       activation_checkpointing=spec.get("activation_checkpointing", False))
    except (MemoryError, RuntimeError) as e:  # CPU: allocator refused under RLIMIT_AS; CUDA: OOM
        msg = str(e)
        oom = isinstance(e, MemoryError) or any(w in msg for w in ("DefaultCPUAllocator", "can't allocate", "out of memory", "bad_alloc"))
        if not oom:
            raise
        res = {**{k: spec[k] for k in ("variant", "n_series", "length", "device", "backbone")},
               "status": "over_cap", "error": f"{type(e).__name__}: {msg[:300]}"}
    print(MARK + json.dumps(res), flush=True)


def measure_cell(variant: str, n_series: int, length: int, *, device: str = "cpu", backbone: str = "smollm2-135m",
                 cap_gb: float = 10.0, timeout_s: float = 900.0, threads: int = 1, seed: int = 0,
                 train_token_rows: bool = True, activation_checkpointing: bool = False) -> dict:
    """Run one cell in a fresh subprocess under the cap and the timeout; never raises for OOM or timeouts."""
    spec = dict(variant=variant, n_series=n_series, length=length, device=device, backbone=backbone,
                cap_gb=cap_gb, threads=threads, seed=seed, train_token_rows=train_token_rows,
                activation_checkpointing=activation_checkpointing)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads or os.environ.get("OMP_NUM_THREADS", "1")),
           "MKL_NUM_THREADS": str(threads or 1), "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.time()
    try:
        p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--cell", json.dumps(spec)],
                           capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {**{k: spec[k] for k in ("variant", "n_series", "length", "device", "backbone")},
                "status": "timed_out", "timeout_s": timeout_s, "wall_s": round(time.time() - t0, 1)}
    for line in p.stdout.splitlines():
        if line.startswith(MARK):
            return {**json.loads(line[len(MARK):]), "cap_gb": cap_gb if device == "cpu" else None,
                    "wall_s": round(time.time() - t0, 1)}
    tail = (p.stderr or p.stdout)[-600:]
    memory_words = ("MemoryError", "DefaultCPUAllocator", "bad_alloc", "Cannot allocate memory", "out of memory")
    status = "over_cap" if (p.returncode < 0 or any(w in tail for w in memory_words)) else "error"
    return {**{k: spec[k] for k in ("variant", "n_series", "length", "device", "backbone")},
            "status": status, "returncode": p.returncode, "error": tail.strip(), "wall_s": round(time.time() - t0, 1),
            "cap_gb": cap_gb if device == "cpu" else None}


# ---------------------------------------------------------------------------------------------- reporting
def growth(cells: list[dict], variant: str) -> dict | None:
    """Largest over smallest measured figure for one variant: whole-process peak (the paper's figure, model
    included) and the step's own memory (peak minus the idle baseline), over the cells that ran."""
    ok = [c for c in cells if c["variant"] == variant and c["status"] == "ok"]
    if not ok:
        return None
    lo = min(ok, key=lambda c: c["peak_mib"])
    hi = max(ok, key=lambda c: c["peak_mib"])
    slo = min(ok, key=lambda c: c["step_mib"])
    shi = max(ok, key=lambda c: c["step_mib"])
    return {"min_cell": [lo["n_series"], lo["length"]], "min_peak_mib": lo["peak_mib"],
            "max_cell": [hi["n_series"], hi["length"]], "max_peak_mib": hi["peak_mib"],
            "peak_ratio": round(hi["peak_mib"] / lo["peak_mib"], 3),
            "step_min_mib": slo["step_mib"], "step_max_mib": shi["step_mib"],
            "step_max_cell": [shi["n_series"], shi["length"]],
            "step_ratio": round(shi["step_mib"] / max(slo["step_mib"], 1.0), 2),
            "not_measured": [[c["n_series"], c["length"], c["status"]] for c in cells
                             if c["variant"] == variant and c["status"] not in ("ok", "not_run")],
            "not_run": [[c["n_series"], c["length"]] for c in cells if c["variant"] == variant and c["status"] == "not_run"]}


def _cell_text(c: dict | None, key: str = "step_mib") -> str:
    if c is None:
        return "–"
    if c["status"] == "ok":
        return f"{c[key]:,.0f}"
    return {"over_cap": f"over the {c.get('cap_gb') or 'device'} GB cap" if c.get("cap_gb") else "out of memory",
            "timed_out": f"timed out (> {c.get('timeout_s', 0):.0f} s)",
            "skipped": "not run (a smaller N at this L was over the cap / timed out)",
            "not_run": "not run (time budget)"}.get(c["status"], "error")


def write_markdown(res: dict) -> str:
    cells = res["cells"]
    lengths = sorted({c["length"] for c in cells})
    ns = sorted({c["n_series"] for c in cells})
    m = res["machine"]
    lines = [
        "# Training-step memory: SoftPrompt vs Flamingo (N series x L samples)", "",
        f"`{res['command']}` — backbone `{res['backbone']}`, device `{res['device']}`, batch 1, fp32, "
        f"default TSLMConfig of each variant with train_token_rows={res.get('train_token_rows', True)} (True: the <ts>/"
        f"<endofchunk> rows train, so the backward reaches the LM's first layer in both variants), "
        + ("**with activation checkpointing** (TrainConfig(activation_checkpointing=True): LM decoder layers and "
           "encoder blocks keep only their inputs and recompute the rest in the backward), "
           if res.get("activation_checkpointing") else "without activation checkpointing, ") +
        f"one training step (forward + backward + clip + AdamW step) per fresh subprocess; {m['cpu']}, "
        f"{m['cores']} cores, {m['ram_gb']} GB RAM, torch {m['versions'].get('torch')}, load average "
        f"{res['load_avg_1min_start']} -> {res['load_avg_1min_end']}.", "",
        (f"The last of several runs: {res['resumed_cells']} cells were measured by earlier runs of this script "
           f"(each with its command's flags, then `--resume` runs) and reused from "
           f"{res.get('plot', 'memory_scaling.png').replace('.png', '.partial.jsonl')}; each cell's load average is in "
           "the JSON. " if res.get("resumed_cells") else "")
        + f"First table per variant: MiB the step adds to the loaded, warmed-up model "
        f"({cells[0].get('method', '') if cells else ''}; noise about +-10 MiB between identical runs); second: the "
        f"whole process's peak, the paper's kind of figure. "
        f"CPU cap: RLIMIT_AS {res['cap_gb']} GB per subprocess; timeout {res['timeout_s']:.0f} s.", "",
    ]
    for variant in ("flamingo", "softprompt"):
        vc = {(c["n_series"], c["length"]): c for c in cells if c["variant"] == variant}
        if not vc:
            continue
        lines += [f"## {variant}", "", "| N \\ L | " + " | ".join(f"{L:,}" for L in lengths) + " |",
                  "|---|" + "---:|" * len(lengths)]
        for n in ns:
            lines.append(f"| {n} | " + " | ".join(_cell_text(vc.get((n, L))) for L in lengths) + " |")
        lines.append("")
        lines += [f"Whole-process peak RSS (model included), MiB:", "", "| N \\ L | " + " | ".join(f"{L:,}" for L in lengths) + " |",
                  "|---|" + "---:|" * len(lengths)]
        for n in ns:
            lines.append(f"| {n} | " + " | ".join(_cell_text(vc.get((n, L)), "peak_mib") for L in lengths) + " |")
        lines.append("")
        g = res["growth"].get(variant)
        if g:
            lines.append(f"Growth across the measured grid: whole-process peak {g['min_peak_mib']:,.0f} MiB (N={g['min_cell'][0]}, "
                         f"L={g['min_cell'][1]:,}) -> {g['max_peak_mib']:,.0f} MiB (N={g['max_cell'][0]}, "
                         f"L={g['max_cell'][1]:,}) = x{g['peak_ratio']}; the step's own memory "
                         f"{g['step_min_mib']:,.0f} -> {g['step_max_mib']:,.0f} MiB.")
            if g["not_measured"]:
                lines.append(f"Did not fit / finish: {', '.join(f'N={a} L={b:,} ({s})' for a, b, s in g['not_measured'])} "
                             "— over_cap: needs more than the cap; timed_out: ran out of time (see below); skipped: a "
                             "smaller N at the same L already did not fit / finish.")
            if g.get("not_run"):
                lines.append(f"Not run within the time budget: {', '.join(f'N={a} L={b:,}' for a, b in g['not_run'])}.")
            lines.append("")
    slow = [c for c in cells if c["status"] == "timed_out"]
    if slow:
        desc = [f"{c['variant']} N={c['n_series']} L={c['length']:,} (load average {c.get('load_avg_1min')})" for c in slow]
        lines += [f"Timed out: {', '.join(desc)}"
                  " — a timeout on this shared 2-core machine is CPU starvation (niced, 1 thread), not a memory "
                  "verdict: these cells did not reach the cap within the time; rerun them on an idle machine "
                  "(`--resume` reruns only missing cells after deleting their lines from the .partial.jsonl).", ""]
    lines += ["Also in the JSON: absolute peaks, idle baseline, LM sequence length (SoftPrompt splices one token "
              "per patch of 4 samples; Flamingo feeds only text tokens), step seconds (1 thread, shared machine).",
              "", "Goal: Flamingo grows <= 10 % across the grid while SoftPrompt grows several-fold. "
              f"Measured: {res['verdict']}", "", f"![memory scaling]({res.get('plot', 'memory_scaling.png')})", ""]
    return "\n".join(lines)


def verdict(res: dict) -> str:
    g_f, g_s = res["growth"].get("flamingo"), res["growth"].get("softprompt")
    parts = []
    if g_f:
        ok = g_f["peak_ratio"] <= 1.10 and not g_f["not_measured"]
        partial = f" over the {len(g_f.get('not_run', []))} cells measured" if g_f.get("not_run") else " across the grid"
        partial = partial.replace(f"the {len(g_f.get('not_run', []))} cells measured", "the measured cells") + (
            f", {len(g_f['not_run'])} cells not run in the time budget" if g_f.get("not_run") else "")
        judged = ("meets" if ok else "misses") if not g_f.get("not_run") else (
            "within 10 % on the measured cells, the full grid was not run" if ok else "misses")
        parts.append(f"Flamingo whole-process peak x{g_f['peak_ratio']}{partial} ({judged} the "
                     f"<= 10 % goal; the step's own memory {g_f['step_min_mib']:,.0f} -> {g_f['step_max_mib']:,.0f} MiB)")
    if g_s:
        over = [x for x in g_s["not_measured"] if x[2] == "over_cap"]
        late = [x for x in g_s["not_measured"] if x[2] != "over_cap"]
        extra = (f"; {len(over)} cell{'s' if len(over) > 1 else ''} over the {res.get('cap_gb')} GB cap, so its true growth is larger" if over else "")
        extra += (f"; {len(late)} cells timed out or skipped after a timeout (CPU-starved, no memory figure)"
                  if late else "")
        extra += f"; {len(g_s['not_run'])} cells not run in the time budget" if g_s.get("not_run") else ""
        parts.append(f"SoftPrompt whole-process peak x{g_s['peak_ratio']} over the measured cells (step's own memory "
                     f"{g_s['step_min_mib']:,.0f} -> {g_s['step_max_mib']:,.0f} MiB){extra}")
    return "; ".join(parts) + "."


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = res["cells"]
    ns = sorted({c["n_series"] for c in cells})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, variant in zip(axes, ("flamingo", "softprompt")):
        for n in ns:
            pts = sorted((c["length"], c["peak_mib"] / 1024) for c in cells if c["variant"] == variant and c["n_series"] == n
                         and c["status"] == "ok")
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"N={n}")
            for c in cells:
                if c["variant"] != variant or c["n_series"] != n or c["status"] in ("ok", "not_run"):
                    continue
                if c["status"] == "over_cap":  # needs more than the cap: drawn at the cap
                    ax.scatter([c["length"]], [res["cap_gb"] or 1], marker="x", color="red")
                elif n == min(x["n_series"] for x in cells):  # timed out: no memory figure, marked once per L
                    ax.annotate("timed out\n(no figure)", (c["length"], 1.0), fontsize=7, ha="center", color="grey")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{variant} ({res['backbone']}, {res['device']})")
        ax.set_xlabel("samples per series L")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("peak memory of one training step, GiB (model included)")
    if axes[1].get_legend_handles_labels()[0] or axes[0].get_legend_handles_labels()[0]:
        (axes[1] if axes[1].get_legend_handles_labels()[0] else axes[0]).legend(title="red x: over the cap", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | mps")
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--variants", default="flamingo,softprompt")
    ap.add_argument("--series", default="1,2,3,4,5", help="N values")
    ap.add_argument("--lengths", default="10,100,1000,10000", help="L values")
    ap.add_argument("--cap-gb", type=float, default=10.0, help="RLIMIT_AS per CPU subprocess (0: none)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per cell")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT, help="writes <out>.json, .md, .png")
    ap.add_argument("--freeze-token-rows", action="store_true",
                    help="TSLMConfig(train_token_rows=False), as models/flamingo-har was trained: the backward then stops "
                         "at the first fusion block instead of reaching the embeddings (default: the library default, True)")
    ap.add_argument("--activation-checkpointing", action="store_true",
                    help="train the step with TrainConfig(activation_checkpointing=True), both variants")
    ap.add_argument("--order", default="grid", choices=["grid", "corners"],
                    help="grid: L by L, N by N; corners: N=min and N=max at every L, longest L first (for a short time budget)")
    ap.add_argument("--resume", action="store_true", help="reuse the cells in <out>.partial.jsonl, run only the rest")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop starting new cells after this long; the rest are recorded 'not run'")
    ap.add_argument("--markdown-only", action="store_true")
    a = ap.parse_args()
    if a.cell:
        _cell_main(json.loads(a.cell))
        return
    from edge_tslm.machine import machine

    jpath = a.out.with_suffix(".json")
    if a.markdown_only:
        res = json.loads(jpath.read_text())
    else:
        info = machine()
        cells = []
        lengths, ns = [int(x) for x in a.lengths.split(",")], [int(x) for x in a.series.split(",")]
        grid = [(v, n, L) for L in lengths for n in ns for v in a.variants.split(",")]
        if a.order == "corners":  # smallest and largest N at every L, longest L first (the growth figures), then the rest
            edge = {min(ns), max(ns)}
            first = sorted((c for c in grid if c[1] in edge), key=lambda c: (-c[2], c[1]))
            grid = first + [c for c in grid if c[1] not in edge]
        partial = a.out.with_suffix(".partial.jsonl")
        done: dict[tuple[str, int, int], dict] = {}
        if a.resume and partial.exists():  # keep what an interrupted run measured; run only the rest
            for line in partial.read_text().splitlines():
                c = json.loads(line)
                if c["status"] not in ("not_run",):
                    done[(c["variant"], c["n_series"], c["length"])] = c
        else:
            partial.write_text("")
        t_start = time.time()
        failed: dict[tuple[str, int], int] = {}  # (variant, L) -> smallest N over the cap / timed out there
        for c in done.values():
            if c["status"] in ("over_cap", "timed_out"):
                k = (c["variant"], c["length"])
                failed[k] = min(failed.get(k, 10**9), c["n_series"])
        for v, n, L in grid:
            if (v, n, L) in done and done[(v, n, L)]["status"] != "skipped":
                cells.append(done[(v, n, L)])
                continue
            if n > failed.get((v, L), 10**9):  # more series of the same length need more memory and time
                c = {"variant": v, "n_series": n, "length": L, "device": a.device, "backbone": a.backbone,
                     "status": "skipped", "reason": "a smaller N at this L was over the cap / timed out"}
            elif a.max_minutes is not None and time.time() - t_start > 60 * a.max_minutes:
                c = {"variant": v, "n_series": n, "length": L, "device": a.device, "backbone": a.backbone,
                     "status": "not_run", "reason": f"--max-minutes {a.max_minutes} spent (shared machine)"}
            else:
                c = measure_cell(v, n, L, device=a.device, backbone=a.backbone, cap_gb=a.cap_gb,
                                 timeout_s=a.timeout, threads=a.threads, train_token_rows=not a.freeze_token_rows,
                                 activation_checkpointing=a.activation_checkpointing)
                if c["status"] in ("over_cap", "timed_out"):
                    failed[(v, L)] = min(failed.get((v, L), 10**9), n)
            c["load_avg_1min"] = round(os.getloadavg()[0], 2)
            cells.append(c)
            print(json.dumps({k: c.get(k) for k in ("variant", "n_series", "length", "status", "step_mib", "peak_mib",
                                                     "step_s", "wall_s")}), flush=True)
            if c["status"] != "not_run":
                with partial.open("a") as f:
                    f.write(json.dumps(c) + "\n")
        rank = {(v, n, L): i for i, (v, n, L) in enumerate(
            (v, n, L) for L in lengths for n in ns for v in a.variants.split(","))}
        cells.sort(key=lambda c: rank.get((c["variant"], c["n_series"], c["length"]), 10**9))
        res = {"backbone": a.backbone, "device": a.device, "cap_gb": a.cap_gb if a.device == "cpu" else None,
               "timeout_s": a.timeout, "threads": a.threads, "train_token_rows": not a.freeze_token_rows, "machine": info,
               "load_avg_1min_start": info["load_avg_1min_at_start"], "load_avg_1min_end": round(os.getloadavg()[0], 2),
               "command": "python " + " ".join(sys.argv), "cells": cells,
               "resumed_cells": len(done), "activation_checkpointing": a.activation_checkpointing}
    res["growth"] = {v: growth(res["cells"], v) for v in ("flamingo", "softprompt")}
    res["verdict"] = verdict(res)
    res["plot"] = a.out.with_suffix(".png").name
    jpath.write_text(json.dumps(res, indent=1))
    a.out.with_suffix(".md").write_text(write_markdown(res))
    plot(res, a.out.with_suffix(".png"))
    print(write_markdown(res))


if __name__ == "__main__":
    main()
