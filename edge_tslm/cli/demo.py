"""edge-tslm demo: the main job on the embedded default — the default backbone, a Flamingo model, real signals."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "flamingo-har"


def demo(
    model: Annotated[Path, typer.Option(help="trained artifact directory")] = DEFAULT_MODEL,
    windows: Annotated[int, typer.Option(help="how many HAPT test-subject windows to answer")] = 6,
    rationale: Annotated[bool, typer.Option(help="also generate the rationale for the first window")] = True,
) -> None:
    """Answer questions about real HAPT accelerometer windows (UCI test subjects) with the Flamingo model."""
    from rich.console import Console
    from rich.table import Table

    from edge_tslm.data.hapt import ACTIVITIES, hapt_windows

    con = Console()
    t0 = time.perf_counter()
    samples = hapt_windows("test")
    # one window per activity, spread over the test subjects
    picks = [next(s for s in samples[i * 97 :] if s.label == act) for i, act in enumerate(ACTIVITIES)][:windows]
    if (model / "config.json").exists():
        from edge_tslm.pipeline import TSLMPipeline

        pipe = TSLMPipeline.from_pretrained(model)
        con.print(f"[bold]model[/] {model} on backbone {pipe.model.info.name} (loaded in {time.perf_counter() - t0:.1f} s)")
    else:
        from edge_tslm.config import TSLMConfig
        from edge_tslm.data.hapt import HAR_TASK
        from edge_tslm.model import build_model
        from edge_tslm.pipeline import TSLMPipeline

        con.print(f"[yellow]{model} not found: using an untrained Flamingo adapter (gates at 0 = the plain backbone)[/]")
        m = build_model(TSLMConfig(variant="flamingo", task="har", labels=HAR_TASK.labels, pre_prompt=HAR_TASK.pre_prompt))
        pipe = TSLMPipeline(m)
    table = Table(title="HAPT test windows (2.56 s, 50 Hz, 3-axis accelerometer)")
    for col in ("subject", "truth", "answer", "p(answer)", "ms"):
        table.add_column(col)
    for k, s in enumerate(picks):
        out = pipe(s.signal, s.meta, s.prompt, rationale=rationale and k == 0)
        table.add_row(s.group, s.label, str(out["answer"]), f"{out['scores'].get(out['answer'], float('nan')):.2f}", f"{out['latency_ms']['total']:.0f}")
        if out["rationale"]:
            con.print(f"[bold]rationale[/] (window 1, truth {s.label}): {out['rationale']}")
    con.print(table)
    con.print(f"total {time.perf_counter() - t0:.1f} s")
