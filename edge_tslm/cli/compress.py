"""edge-tslm quantize / prune / compress: artifact directory in, new artifact directory out.

Each writes a manifest with what was done (the transforms, in order), sizes (on disk with the backbone at
its quantized size, in memory, parameters), sha256 of the files, and macro-F1 before/after on the model's
task test split when --eval-limit > 0; then prints a table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

DEFAULT_QUANT_PARTS = "llm,xattn,encoder"
DEFAULT_PRUNE_PARTS = "xattn,ffn,encoder"


def quantize(
    model: Annotated[Path, typer.Option(help="source artifact directory")],
    out: Annotated[Path, typer.Option(help="new artifact directory")],
    bits: Annotated[int, typer.Option(help="8 (int8 per channel) | 4 (4-bit groups: bnb nf4 on CPU, torchao int4 on CUDA)")] = 8,
    backend: Annotated[str, typer.Option(help="auto | torchao | bnb")] = "auto",
    parts: Annotated[str, typer.Option(help="comma-separated: llm, xattn, encoder (lm_head if untied)")] = DEFAULT_QUANT_PARTS,
    group_size: Annotated[int, typer.Option(help="4-bit group (block) size")] = 32,
    device: Annotated[str, typer.Option(help="cpu | cuda | mps")] = "cpu",
    eval_limit: Annotated[int, typer.Option(help="F1 before/after on the first N test samples (0: skip)")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="end with one JSON object")] = False,
) -> None:
    """Weight-only quantization of an artifact (recipe stored; re-applied at load)."""
    from edge_tslm.quantize import quantize_

    cfg = _quant_config(bits, backend, parts, group_size)
    _run(model, out, [lambda m: quantize_(m, cfg, device=device)], eval_limit, device, json_out)


def prune(
    model: Annotated[Path, typer.Option(help="source artifact directory")],
    out: Annotated[Path, typer.Option(help="new artifact directory")],
    sparsity: Annotated[float, typer.Option(help="share of weights (or rows, --structured) zeroed per tensor")] = 0.5,
    structured: Annotated[bool, typer.Option(help="zero whole output rows (L1 norm) instead of single weights")] = False,
    parts: Annotated[str, typer.Option(help="comma-separated: xattn, ffn, encoder")] = DEFAULT_PRUNE_PARTS,
    eval_limit: Annotated[int, typer.Option(help="F1 before/after on the first N test samples (0: skip)")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="end with one JSON object")] = False,
) -> None:
    """Magnitude pruning of the adapter (the frozen LM is never pruned), made permanent."""
    from edge_tslm.quantize import prune_

    p = _split(parts)
    _run(model, out, [lambda m: prune_(m, sparsity, structured, p)], eval_limit, "cpu", json_out)


def compress(
    model: Annotated[Path, typer.Option(help="source artifact directory")],
    out: Annotated[Path, typer.Option(help="new artifact directory")],
    share: Annotated[bool, typer.Option(help="one shared cross-attention block (Flamingo)")] = False,
    share_init: Annotated[str, typer.Option(help="best | mean | <block position>")] = "best",
    recover_steps: Annotated[int, typer.Option(help="distilled recovery steps after sharing (task train split)")] = 0,
    recover_lr: Annotated[float, typer.Option()] = 1e-4,
    sparsity: Annotated[float, typer.Option(help="prune this share of adapter weights (0: no pruning)")] = 0.0,
    structured: Annotated[bool, typer.Option(help="structured (row) pruning")] = False,
    bits: Annotated[int, typer.Option(help="8 | 4 | 0 (no quantization)")] = 8,
    backend: Annotated[str, typer.Option(help="auto | torchao | bnb")] = "auto",
    parts: Annotated[str, typer.Option(help="quantized parts: llm, xattn, encoder")] = DEFAULT_QUANT_PARTS,
    group_size: Annotated[int, typer.Option(help="4-bit group (block) size")] = 32,
    device: Annotated[str, typer.Option(help="cpu | cuda | mps")] = "cpu",
    eval_limit: Annotated[int, typer.Option(help="F1 before/after on the first N test samples (0: skip)")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="end with one JSON object")] = False,
) -> None:
    """Share (+ recover) -> prune -> quantize, in that order (quantization last), into one artifact."""
    from edge_tslm.quantize import prune_, quantize_, recover_shared, share_xattn_

    steps: list[Callable] = []
    if share:
        init: Any = int(share_init) if share_init.lstrip("-").isdigit() else share_init

        def do_share(m):
            exs = _train_examples(m, 4) if init == "best" and _task(m) is not None else []
            rep = share_xattn_(m, init=init, examples=exs or None)  # "best" without data falls back to "mean"
            if recover_steps:
                from edge_tslm.quantize import load_compressed

                teacher = load_compressed(model, device=device)  # the unshared source, a separate copy
                exs = _train_examples(m, recover_steps * 4)
                recover_shared(m, teacher, exs, recover_steps, lr=recover_lr)
            return rep

        steps.append(do_share)
    if sparsity > 0:
        steps.append(lambda m: prune_(m, sparsity, structured))
    if bits:
        cfg = _quant_config(bits, backend, parts, group_size)
        steps.append(lambda m: quantize_(m, cfg, device=device))
    if not steps:
        raise typer.BadParameter("nothing to do: pass --share, --sparsity > 0 or --bits 8/4")
    _run(model, out, steps, eval_limit, device, json_out)


# ------------------------------------------------------------------------------------------ helpers


def _split(parts: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in parts.split(",") if p.strip())


def _quant_config(bits: int, backend: str, parts: str, group_size: int):
    from edge_tslm.quantize import Int4WeightOnly, Int8WeightOnly

    if backend not in ("auto", "torchao", "bnb"):
        raise typer.BadParameter(f"--backend must be auto, torchao or bnb, got {backend!r}")
    if bits == 8:
        return Int8WeightOnly(parts=_split(parts), backend=backend)  # type: ignore[arg-type]
    if bits == 4:
        return Int4WeightOnly(group_size=group_size, parts=_split(parts), backend=backend)  # type: ignore[arg-type]
    raise typer.BadParameter(f"--bits must be 8 or 4, got {bits}")


def _task(model):
    from edge_tslm.train.tasks import get_task

    name = model.cfg.task
    if not name:
        return None
    try:
        return get_task(name)
    except ValueError:
        return None


def _train_examples(model, n: int):
    from edge_tslm.train.examples import layout_kwargs, make_example

    t = _task(model)
    if t is None:
        raise typer.BadParameter("recovery / best-block choice needs the artifact's task (config.task) for its train split")
    samples = t.load("train", None)
    idx = range(0, len(samples), max(1, len(samples) // n))
    cfg = model.cfg
    return [make_example(samples[i], **layout_kwargs(cfg)) for i in list(idx)[:n]]


def _f1(model, limit: int) -> dict[str, Any] | None:
    if limit <= 0:
        return None
    from edge_tslm.evaluate import evaluate

    t = _task(model)
    if t is None:
        return {"skipped": "the artifact names no task (config.task)"}
    rep = evaluate(model, t.load("test", None), t.spec.labels, task=t.spec.name, limit=limit)
    return {"macro_f1": rep["macro_f1"], "accuracy": rep["accuracy"], "n": rep["n"], "task": t.spec.name, "split": "test"}


def _peak_rss() -> int:
    import resource
    import sys

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)  # bytes (Linux reports KiB)


def _run(src: Path, out: Path, steps: list[Callable], eval_limit: int, device: str, json_out: bool) -> None:
    from edge_tslm.quantize import QuantizationError, load_compressed, save_compressed, sizes
    from edge_tslm.quantize.report import read_manifest

    if out.resolve() == src.resolve():
        raise typer.BadParameter("--out must be a new directory, not the source artifact")
    m = load_compressed(src, device=device)
    before = {**sizes(m, src), "f1": _f1(m, eval_limit)}
    reports = []
    try:
        for step in steps:
            reports.append(step(m))
    except (QuantizationError, ValueError, RuntimeError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    f1_after = _f1(m, eval_limit)
    metrics: dict[str, Any] = {}
    if f1_after is not None:
        metrics = {"f1_before": before["f1"], "f1_after": f1_after}
    notes = [n for r in reports for n in getattr(r, "notes", [])]
    out_dir = save_compressed(m, out, source=src, metrics=metrics, extra={"notes": notes} if notes else None)
    after = {**read_manifest(out_dir)["sizes"], "f1": f1_after}
    peak = _peak_rss()
    result = {"source": str(src), "out": str(out_dir), "before": before, "after": after, "peak_rss_bytes": peak, "notes": notes}
    sqnr = {
        f"{r.config['type']} {part}": p.to_dict()["sqnr_db"]
        for r in reports if hasattr(r, "parts") and hasattr(r, "backend") for part, p in r.parts.items()
    }
    result["sqnr_db"] = sqnr
    _table(before, after, peak, notes, sqnr)
    if json_out:
        typer.echo(json.dumps(result))


def _mb(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def _table(before: dict, after: dict, peak: int, notes: list[str], sqnr: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="compression")
    t.add_column("")
    t.add_column("before", justify="right")
    t.add_column("after", justify="right")
    rows = [
        ("size on disk (artifact + backbone at its quantized size)", _mb(before["disk"]["total"]), _mb(after["disk"]["total"])),
        ("  of which artifact files", _mb(before["disk"]["artifact_files"]), _mb(after["disk"]["artifact_files"])),
        ("in memory (params + buffers)", _mb(before["memory_bytes"]), _mb(after["memory_bytes"])),
        ("parameters", f"{before['parameters']['total']:,}", f"{after['parameters']['total']:,}"),
        ("  adapter", f"{before['parameters']['adapter']:,}", f"{after['parameters']['adapter']:,}"),
    ]
    fb, fa = before.get("f1"), after.get("f1")
    if fb and "macro_f1" in fb:
        rows.append((f"macro-F1 ({fb['task']} {fb['split']}, n={fb['n']})", f"{fb['macro_f1']:.4f}", f"{fa['macro_f1']:.4f}"))
    for name, db in sqnr.items():
        rows.append((f"weight SQNR {name} (dB)", "", f"{db:.1f}" if isinstance(db, float) else str(db)))
    for r in rows:
        t.add_row(*r)
    t.caption = f"peak RSS of this process: {_mb(peak)} (includes loading the fp32 source)"
    console = Console(stderr=False)
    console.print(t)
    for n in notes:
        console.print(f"[yellow]note:[/] {n}")
