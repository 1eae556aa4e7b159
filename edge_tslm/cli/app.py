"""`edge-tslm` entry point: registers one command per verb module."""

from __future__ import annotations

import typer

from edge_tslm.cli import answer, bench, calibrate, compress, demo, evaluate, export, stream, train

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Time-series language models, from training to devices.")
app.command("demo")(demo.demo)
app.command("answer")(answer.answer)
app.command("train")(train.train)
app.command("eval")(evaluate.eval_cmd)
app.command("calibrate")(calibrate.calibrate)
app.command("stream")(stream.stream)
app.command("quantize")(compress.quantize)
app.command("prune")(compress.prune)
app.command("compress")(compress.compress)
app.command("export")(export.export)
app.command("bench")(bench.bench)

if __name__ == "__main__":
    app()
