"""Where a benchmark's record goes: the JSON (machine, command, figures) and its Markdown table beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable


def write_results(out: Path, res: dict[str, Any], markdown: Callable[[dict[str, Any]], str]) -> str:
    """Write ``res`` to ``out`` (.json) and ``markdown(res)`` to the .md beside it; returns the Markdown."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    return md


def append_run(path: Path, row: dict[str, Any], key: str, what: str) -> list[dict[str, Any]]:
    """Add ``row`` to the {"what", "runs"} file at ``path``, replacing the run with the same ``row[key]``; -> all runs."""
    path = Path(path)
    rows = json.loads(path.read_text())["runs"] if path.exists() else []
    rows = [r for r in rows if r.get(key) != row[key]] + [row]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"what": what, "runs": rows}, indent=1) + "\n")
    return rows
