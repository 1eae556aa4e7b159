"""The typer CLI: one small module per verb, heavy imports inside each command."""
