"""edge-tslm bench: size, peak memory, latency and F1 of every artifact present, on every device torch reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def bench(
    task: Annotated[str, typer.Option(help="har | ecg_rhythm: picks the default artifact paths and the test split")] = "har",
    quick: Annotated[bool, typer.Option("--quick", help="2/class subset, 3 reps, 8 decoded tokens: minutes on a 2-core CPU")] = False,
    per_class: Annotated[Optional[int], typer.Option(help="test windows per class for F1 and classify latency")] = None,
    reps: Annotated[Optional[int], typer.Option(help="encoder/prefill repetitions (median)")] = None,
    decode_tokens: Annotated[Optional[int], typer.Option(help="greedy tokens timed for ms per decoded token")] = None,
    threads: Annotated[int, typer.Option(help="torch / ONNX Runtime intra-op threads")] = 1,
    artifact: Annotated[Optional[list[str]], typer.Option(help="extra NAME=PATH artifact (repeatable)")] = None,
    device: Annotated[Optional[list[str]], typer.Option(help="only these devices (cpu, cuda, mps); default: all available")] = None,
    out: Annotated[Path, typer.Option(help="folder for bench.json, bench.md and the plots")] = Path("benchmarks/results"),
) -> None:
    """Benchmark fp32 / int8 / int4 / pruned / shared / ONNX artifacts; missing ones are skipped with the reason."""
    import sys

    from edge_tslm.bench import BenchConfig, run_bench

    base = BenchConfig.quick(task=task, threads=threads) if quick else BenchConfig(task=task, threads=threads)
    over = {k: v for k, v in (("per_class", per_class), ("reps", reps), ("decode_tokens", decode_tokens)) if v is not None}
    cfg = BenchConfig(**{**base.__dict__, **over})
    extra = []
    for a in artifact or []:
        name, sep, path = a.partition("=")
        if not sep:
            raise typer.BadParameter(f"--artifact takes NAME=PATH, got {a!r}")
        extra.append((name, path))
    res = run_bench(cfg, quick=quick, out_dir=out, extra=extra, device_list=device, echo=typer.echo,
                    command="edge-tslm " + " ".join(sys.argv[1:]))
    typer.echo((out / "bench.md").read_text())
    typer.echo(f"wrote {out / 'bench.json'}, {out / 'bench.md'} and {len(res.get('plots', []))} plots")
