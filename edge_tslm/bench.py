"""`edge-tslm bench`: size on disk, peak memory, latency (encoder, prefill, per decoded token, classify decision)
and F1 for every artifact present, on every device torch reports; tables, JSON and Pareto plots.

Each (artifact, device) pair runs in a fresh subprocess (``python -m edge_tslm.bench --one <json>``), so its
peak memory is its own. CPU peak: the process's peak RSS (VmHWM) minus its RSS just before the model is
loaded (the interpreter, libraries and test windows are already in). CUDA: torch.cuda.max_memory_allocated
(torch artifacts; ONNX Runtime's CUDA arena is not visible to torch, so ONNX on CUDA reports host RSS only).
MPS: torch.mps.driver_allocated_memory after the run (no peak counter: a lower bound).

The ONNX path never imports torch (what a device runs); the torch path loads the backbone the artifact names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edge_tslm.data.subset import stratified_indices

MARK = "BENCH_RESULT "

# (name, path template) tried for a task, first hit per name; {short} is the artifact stem (har, ecg), as in
# models/flamingo-ecg. runs/compress/... is where benchmarks/compression.py builds its rows; the compact ONNX
# recipes are the README's. Missing ones are skipped with a printed reason.
DEFAULT_ARTIFACTS: tuple[tuple[str, str], ...] = (
    ("fp32", "models/flamingo-{short}"),
    ("int8", "runs/compress/{short}-int8"),
    ("int8", "runs/flamingo-{short}-int8"),
    ("int4", "runs/compress/{short}-int4"),
    ("int4", "runs/flamingo-{short}-int4"),
    ("pruned", "runs/compress/{short}-pruned"),
    ("pruned", "runs/flamingo-{short}-pruned"),
    ("shared", "runs/compress/{short}-shared"),
    ("shared", "runs/flamingo-{short}-shared"),
    ("combined", "runs/compress/{short}-combined"),
    ("onnx", "runs/onnx-{short}"),
    ("compact-onnx", "runs/compactf-{short}"),
    ("compact-onnx", "runs/compact-{short}"),
    ("softprompt-fp32", "models/softprompt-{short}"),
)
SHORT = {"ecg_rhythm": "ecg"}  # task -> artifact stem where they differ
ONNX_FILES = ("encoder.onnx", "cross.onnx", "decoder.onnx", "config.json", "tokenizer/tokenizer.json")
TORCH_FILES = ("config.json", "adapter.safetensors")

# Columns of every row of bench.json["rows"] (the schema the tests hold it to).
ROW_KEYS = (
    "artifact", "path", "kind", "device", "status", "size_mib", "backbone_mib", "peak_mib", "peak_rss_mib",
    "encoder_ms", "prefill_ms", "decode_ms_per_token", "classify_ms_p50", "classify_ms_p95", "macro_f1",
    "accuracy", "n", "load_s", "load_avg_1min", "notes",
)


@dataclass(frozen=True)
class BenchConfig:
    task: str = "har"
    per_class: int = 20  # F1 and classify latency on a seeded stratified test subset of this many per class
    seed: int = 0
    reps: int = 10  # encoder / prefill repetitions (median reported)
    decode_tokens: int = 32  # greedy tokens timed for ms per decoded token
    threads: int = 1
    timeout_s: float = 1800.0

    @classmethod
    def quick(cls, **kw: Any) -> "BenchConfig":
        return cls(**{"per_class": 2, "reps": 3, "decode_tokens": 8, "timeout_s": 600.0, **kw})


# ------------------------------------------------------------------------------------------------ discovery
def artifact_kind(path: Path) -> tuple[str | None, str]:
    """-> ("onnx" | "torch" | None, reason when None)."""
    if not path.exists():
        return None, f"not present at {path}"
    if all((path / f).is_file() for f in ONNX_FILES):
        return "onnx", ""
    if all((path / f).is_file() for f in TORCH_FILES):
        return "torch", ""
    onnx_missing = [f for f in ONNX_FILES if not (path / f).is_file()]
    return None, f"{path} is not a complete artifact (an ONNX one lacks {', '.join(onnx_missing)}; a torch one lacks " \
                 f"{', '.join(f for f in TORCH_FILES if not (path / f).is_file())})"


def discover(task: str, extra: Sequence[tuple[str, str]] = (), root: Path = Path(".")) -> tuple[list[dict], list[dict]]:
    """-> (artifacts to run [{name, path, kind}], skipped [{name, path, reason}]); a name keeps its first hit."""
    found, skipped, names = [], [], set()
    for name, tmpl in list(extra) + list(DEFAULT_ARTIFACTS):
        path = root / tmpl.format(task=task, short=SHORT.get(task, task))
        if name in names:
            continue
        kind, reason = artifact_kind(path)
        if kind is None:
            skipped.append({"artifact": name, "path": str(path), "reason": reason})
            continue
        names.add(name)
        found.append({"artifact": name, "path": str(path), "kind": kind})
    # a name skipped at one path but found at another is not "skipped"
    skipped = [s for s in skipped if s["artifact"] not in names]
    return found, skipped


def devices() -> tuple[list[str], dict[str, str]]:
    """CPU always; CUDA / MPS when torch reports them. -> (devices, {device: why not}) ."""
    out, why = ["cpu"], {}
    try:
        import torch

        if torch.cuda.is_available():
            out.append("cuda")
        else:
            why["cuda"] = "torch.cuda.is_available() is False"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            out.append("mps")
        else:
            why["mps"] = "torch.backends.mps.is_available() is False"
    except ImportError:
        why["cuda"] = why["mps"] = "torch is not installed"
    return out, why


def dir_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20, 1)


# ------------------------------------------------------------------------------------------------ measurement
def _status() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    st = _status()
    if "VmHWM" in st:
        return st["VmHWM"]
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def _median_ms(fn: Callable[[], Any], reps: int) -> float:
    ms = []
    for _ in range(max(1, reps)):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1000)
    return round(float(np.median(ms)), 2)


class _TorchRunner:
    """The torch artifact behind the four timed steps."""

    def __init__(self, path: str, device: str):
        from edge_tslm.model.artifact import from_pretrained

        self.model = from_pretrained(path, device=device)
        self.cfg = self.model.cfg
        self.device = device
        self.notes = "torch prefill includes the encoder"

    def sync(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
        elif self.device == "mps":
            torch.mps.synchronize()

    def example(self, sample, rationale: bool = False):
        from edge_tslm.train.examples import layout_kwargs, make_example

        return make_example(sample, rationale=rationale, **layout_kwargs(self.cfg))

    def encode(self, ex) -> None:
        import torch

        b = self.model._batch(ex.text, ex.series)
        with torch.no_grad():
            if hasattr(self.model, "encode_media"):
                self.model.encode_media(b.series, b.series_mask)
            else:  # SoftPrompt: its encoder over the present series
                present = b.series_mask.any(-1)
                bi, si = present.nonzero(as_tuple=True)
                self.model.soft_encoder(b.series[bi, si], b.series_mask[bi, si], si)
        self.sync()

    def prefill(self, ex):
        import torch

        with torch.no_grad():
            out = self.model.prefill(self.model._batch(ex.text, ex.series))
        self.sync()
        return out

    def decode_ms_per_token(self, ex, n: int) -> float:
        import torch

        logits, state = self.prefill(ex)
        t = time.perf_counter()
        with torch.no_grad():
            for _ in range(n):  # greedy, eos not stopping: a fixed number of steps is timed
                nxt = logits[:, -1].argmax(-1, keepdim=True) if logits.dim() == 3 else logits.argmax(-1, keepdim=True)
                logits, state = self.model.decode(nxt, state)
        self.sync()
        return round((time.perf_counter() - t) * 1000 / n, 2)

    def classify(self, sample, labels) -> str:
        ex = self.example(sample)
        scores = self.model.classify(ex.text, ex.series, list(labels))
        self.sync()
        return max(scores, key=scores.get)


class _OnnxRunner:
    def __init__(self, path: str, device: str, threads: int):
        from edge_tslm.runtime.onnx_backend import OnnxBackend

        self.be = OnnxBackend.from_pretrained(path, threads=threads, device=device)
        self.cfg = self.be.cfg
        self.notes = f"onnxruntime {'/'.join(self.be.providers)}"

    def example(self, sample, rationale: bool = False):
        from edge_tslm.train.examples import layout_kwargs, make_example

        return make_example(sample, rationale=rationale, **layout_kwargs(self.be.cfg))

    def encode(self, ex):
        return self.be.encode(ex.series)

    def prefill(self, ex):
        return self.be.prefill(ex.text, self.be.encode(ex.series))

    def decode_ms_per_token(self, ex, n: int) -> float:
        """The runtime's own greedy loop (KV cache kept in onnxruntime), n tokens whatever the model would stop at."""
        self.be.generate(ex.text, self.be.encode(ex.series), n, stop=False)
        t = self.be.last_timings
        return round(t["decode_ms"] / max(1.0, t["new_tokens"]), 2)

    def classify(self, sample, labels) -> str:
        ex = self.example(sample)
        scores = self.be.classify(ex.text, self.be.encode(ex.series), list(labels))
        return max(scores, key=scores.get)


def bench_one(artifact: dict, device: str, samples: Sequence, labels: Sequence[str], cfg: BenchConfig) -> dict:
    """Measure one artifact on one device in this process (the subprocess wrapper gives it a clean peak)."""
    from edge_tslm.metrics import classification_report

    if cfg.threads and artifact["kind"] == "torch":
        import torch

        torch.set_num_threads(cfg.threads)
    rss0 = _status().get("VmRSS", 0)
    exact_peak = _reset_peak()
    cuda = device == "cuda" and artifact["kind"] == "torch"
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    t = time.time()
    runner = (_OnnxRunner(artifact["path"], device, cfg.threads) if artifact["kind"] == "onnx"
              else _TorchRunner(artifact["path"], device))
    load_s = round(time.time() - t, 1)
    ex = runner.example(samples[0])
    runner.classify(samples[0], labels)  # warm-up
    encoder_ms = _median_ms(lambda: runner.encode(ex), cfg.reps)
    prefill_ms = _median_ms(lambda: runner.prefill(ex), cfg.reps)
    decode_ms = runner.decode_ms_per_token(ex, cfg.decode_tokens)
    y_true, y_pred, ms = [], [], []
    for s in samples:
        t = time.perf_counter()
        y_pred.append(runner.classify(s, labels))
        ms.append((time.perf_counter() - t) * 1000)
        y_true.append(s.label)
    rep = classification_report(y_true, y_pred, labels)
    peak_rss = _peak_rss()
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        mem_note = "peak_mib: torch.cuda.max_memory_allocated"
    elif device == "mps" and artifact["kind"] == "torch":
        import torch

        peak = torch.mps.driver_allocated_memory()
        mem_note = "peak_mib: torch.mps.driver_allocated_memory at the end (lower bound)"
    else:
        peak = peak_rss - rss0
        mem_note = "peak_mib: peak RSS - RSS before load" + ("" if exact_peak else " (peak since process start)")
    return {
        "artifact": artifact["artifact"], "path": artifact["path"], "kind": artifact["kind"], "device": device,
        "status": "ok", "size_mib": dir_mib(Path(artifact["path"])), "backbone_mib": None,
        "peak_mib": round(peak / 2**20, 1), "peak_rss_mib": round(peak_rss / 2**20, 1),
        "encoder_ms": encoder_ms, "prefill_ms": prefill_ms, "decode_ms_per_token": decode_ms,
        "classify_ms_p50": round(float(np.percentile(ms, 50)), 1), "classify_ms_p95": round(float(np.percentile(ms, 95)), 1),
        "macro_f1": round(rep["macro_f1"], 4), "accuracy": round(rep["accuracy"], 4), "n": rep["n"], "load_s": load_s,
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "notes": f"{runner.notes}; {mem_note}",
    }


def load_samples(cfg: BenchConfig):
    """The seeded stratified test subset (benchmarks/eval_tslm.py's rule) and the task's labels."""
    from edge_tslm.train.tasks import get_task

    task = get_task(cfg.task)
    test = task.load("test", None)
    idx = stratified_indices([s.label for s in test], cfg.per_class, cfg.seed)
    return [test[i] for i in idx], task.spec.labels, idx


def _one_main(spec: dict) -> None:
    cfg = BenchConfig(**spec["cfg"])
    samples, labels, _ = load_samples(cfg)
    try:
        row = bench_one(spec["artifact"], spec["device"], samples, labels, cfg)
    except Exception as e:  # noqa: BLE001 — reported as the row's status, the other rows still run
        row = failed_row(spec["artifact"], spec["device"], "error", f"{type(e).__name__}: {str(e)[:400]}")
    print(MARK + json.dumps(row), flush=True)


def failed_row(artifact: dict, device: str, status: str, notes: str) -> dict:
    row = {k: None for k in ROW_KEYS}
    row.update({"artifact": artifact["artifact"], "path": artifact["path"], "kind": artifact["kind"], "device": device,
                "status": status, "size_mib": dir_mib(Path(artifact["path"])), "notes": notes})
    return row


def measure(artifact: dict, device: str, cfg: BenchConfig) -> dict:
    """One (artifact, device) in a fresh subprocess."""
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads or 1), "TOKENIZERS_PARALLELISM": "false"}
    spec = {"artifact": artifact, "device": device, "cfg": asdict(cfg)}
    try:
        p = subprocess.run([sys.executable, "-m", "edge_tslm.bench", "--one", json.dumps(spec)], capture_output=True,
                           text=True, timeout=cfg.timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return failed_row(artifact, device, "timed_out", f"over {cfg.timeout_s:.0f} s")
    for line in p.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    return failed_row(artifact, device, "error", (p.stderr or p.stdout)[-400:].strip())


# ------------------------------------------------------------------------------------------------ reporting
def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates, for (cost to minimise, quality to maximise).

    A point is dominated when another has cost <= and quality >= with at least one strict. Ties (equal
    points) are all kept. NaN/None points are never on the front."""
    ok = [i for i, (c, q) in enumerate(points) if c is not None and q is not None and c == c and q == q]
    front = []
    for i in ok:
        ci, qi = points[i]
        dominated = any(points[j][0] <= ci and points[j][1] >= qi and (points[j][0] < ci or points[j][1] > qi)
                        for j in ok if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return str(v)


def markdown(res: dict) -> str:
    cfg, m = res["config"], res["machine"]
    lines = [
        "# edge-tslm bench", "",
        f"`{res['command']}` — task `{cfg['task']}`, {'--quick: ' if res['quick'] else ''}F1 and classify latency on a "
        f"seeded stratified test subset of {cfg['per_class']}/class (n = {res['n']}, seed {cfg['seed']}); encoder and "
        f"prefill: median of {cfg['reps']} runs; decode: {cfg['decode_tokens']} greedy tokens; {cfg['threads']} thread(s). "
        f"{m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB; load average {m['load_avg_1min_at_start']} at start "
        f"(a shared machine: latencies are pessimistic). Each row is a fresh process.", "",
        "| artifact | device | status | size MiB | + backbone MiB | peak MiB | encoder ms | prefill ms | ms/token | "
        "classify p50 ms | p95 ms | macro-F1 | n | load avg |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['artifact']} (`{r['path']}`) | {r['device']} | {r['status']} | {_fmt(r['size_mib'])} | "
            f"{_fmt(r['backbone_mib'])} | {_fmt(r['peak_mib'])} | {_fmt(r['encoder_ms'])} | {_fmt(r['prefill_ms'])} | "
            f"{_fmt(r['decode_ms_per_token'])} | {_fmt(r['classify_ms_p50'])} | {_fmt(r['classify_ms_p95'])} | "
            f"{_fmt(r['macro_f1'], 4)} | {_fmt(r['n'])} | {_fmt(r['load_avg_1min'], 2)} |")
    lines += ["", "Notes per row (how memory was measured, backend): " + "; ".join(
        f"{r['artifact']}/{r['device']}: {r['notes']}" for r in res["rows"]), ""]
    if res["skipped"]:
        lines += ["Skipped artifacts: " + "; ".join(f"{s['artifact']} ({s['reason']})" for s in res["skipped"]), ""]
    if res["devices_skipped"]:
        lines += ["Devices not run here: " + "; ".join(f"{d} ({w})" for d, w in res["devices_skipped"].items()), ""]
    for key, title in (("latency", "F1 vs classify latency (p50)"), ("memory", "F1 vs peak memory")):
        front = res["pareto"][key]
        if front:
            lines.append(f"Pareto front, {title}: " + ", ".join(front) + ".")
    lines += ["", "`size MiB` is the artifact directory; torch artifacts also need the backbone they name "
              "(`+ backbone MiB`, fp32 safetensors in the cache; quantized artifacts re-quantize it at load). "
              "ONNX artifacts carry the whole model. torch `prefill ms` includes the encoder; ONNX `prefill ms` "
              "includes its encoder call too (the backend's prefill takes the encoded window).", "",
              "![F1 vs latency](bench_f1_latency.png) ![F1 vs memory](bench_f1_memory.png)", ""]
    return "\n".join(lines)


def plot(res: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in res["rows"] if r["status"] == "ok"]
    files = []
    for key, col, xlabel, fname in (("latency", "classify_ms_p50", "classify decision p50 (ms, log)", "bench_f1_latency.png"),
                                    ("memory", "peak_mib", "peak memory (MiB, log)", "bench_f1_memory.png")):
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        pts = [(r[col], r["macro_f1"]) for r in rows]
        front = set(pareto_front(pts))
        for i, r in enumerate(rows):
            ax.scatter(r[col], r["macro_f1"], s=60 if i in front else 30, marker="*" if i in front else "o",
                       color="C3" if i in front else "C0")
            ax.annotate(f"{r['artifact']} ({r['device']})", (r[col], r["macro_f1"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        fr = sorted((pts[i] for i in front))
        if fr:
            ax.step(*zip(*fr), where="post", color="C3", alpha=0.6, label="Pareto front")
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"macro-F1 (n = {res['n']})")
        ax.set_title(f"{res['config']['task']}: F1 vs {key}{' (--quick)' if res['quick'] else ''}")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        files.append(str(out_dir / fname))
    return files


def backbone_mib(path: str) -> float | None:
    """fp32 safetensors of the backbone a torch artifact names, from the cache (None if not cached)."""
    try:
        from edge_tslm.backbones import cache_root

        name = json.loads((Path(path) / "config.json").read_text()).get("backbone", "")
        d = cache_root() / "backbones" / name
        return dir_mib(d) if d.is_dir() else None
    except (OSError, ValueError):
        return None


def run_bench(cfg: BenchConfig, *, quick: bool, out_dir: Path, extra: Sequence[tuple[str, str]] = (),
              device_list: Sequence[str] | None = None, echo: Callable[[str], None] = print,
              command: str = "", root: Path = Path(".")) -> dict:
    """Discover, measure each (artifact, device) in a subprocess, write bench.json / bench.md / plots."""
    from edge_tslm.machine import machine

    arts, skipped = discover(cfg.task, extra, root)
    for s in skipped:
        echo(f"skip {s['artifact']}: {s['reason']}")
    devs, why = devices()
    info = machine()  # after devices(): torch is loaded then, so the record names the GPU
    if device_list:
        why.update({d: "not asked for (--device)" for d in devs if d not in device_list})
        devs = [d for d in devs if d in device_list]
    for d, w in why.items():
        echo(f"device {d} not run: {w}")
    _, _, idx = load_samples(cfg)
    rows = []
    for a in arts:
        for d in devs:
            if a["kind"] == "onnx" and d == "mps":
                rows.append(failed_row(a, d, "skipped", "no MPS execution provider in onnxruntime"))
                continue
            echo(f"bench {a['artifact']} ({a['path']}) on {d} ...")
            t = time.time()
            r = measure(a, d, cfg)
            if a["kind"] == "torch":
                r["backbone_mib"] = backbone_mib(a["path"])
            rows.append(r)
            echo(f"  {r['status']} in {time.time() - t:.0f} s: F1 {r.get('macro_f1')}, classify p50 "
                 f"{r.get('classify_ms_p50')} ms, peak {r.get('peak_mib')} MiB")
    res = build_result(rows, cfg, quick=quick, n=len(idx), indices=idx, skipped=skipped, devices_skipped=why,
                       machine_info=info, command=command)
    write_outputs(res, out_dir)
    return res


def build_result(rows, cfg: BenchConfig, *, quick, n, indices, skipped, devices_skipped, machine_info, command) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    label = lambda r: f"{r['artifact']} ({r['device']})"  # noqa: E731
    pareto = {key: [label(ok[i]) for i in pareto_front([(r[col], r["macro_f1"]) for r in ok])]
              for key, col in (("latency", "classify_ms_p50"), ("memory", "peak_mib"))}
    return {"config": asdict(cfg), "quick": quick, "n": n, "subset_indices": list(indices), "rows": rows,
            "skipped": skipped, "devices_skipped": devices_skipped, "pareto": pareto, "machine": machine_info,
            "command": command}


def write_outputs(res: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(res, indent=1))
    (out_dir / "bench.md").write_text(markdown(res))
    res["plots"] = plot(res, out_dir)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        _one_main(json.loads(sys.argv[2]))
    else:
        sys.exit("internal entry point: use `edge-tslm bench`")
