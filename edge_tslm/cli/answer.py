"""edge-tslm answer: one JSON triplet in, the answer (and optionally the rationale) out."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer


def answer(
    model: Annotated[Path, typer.Option(help="artifact directory, e.g. models/flamingo-har")],
    input: Annotated[str, typer.Option("--input", help="JSON triplet file, or '-' for stdin")] = "-",
    rationale: Annotated[bool, typer.Option(help="generate the explanation as well")] = False,
) -> None:
    """Answer the question of a {"signal", "meta", "prompt"} JSON triplet."""
    from edge_tslm.signals import InputError, from_json

    raw = sys.stdin.read() if input == "-" else Path(input).read_text()
    try:
        inp = from_json(raw)
    except InputError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    from edge_tslm.pipeline import TSLMPipeline

    pipe = TSLMPipeline.from_pretrained(model)
    try:  # the model adds its own checks (e.g. at least one patch of samples)
        out = pipe(inp.signal, inp.meta, prompt=inp.prompt, rationale=rationale)
    except InputError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(out, indent=1))
