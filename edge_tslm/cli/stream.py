"""edge-tslm stream: a file, a WFDB record or stdin in; one JSON line per window (and per event) out."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer


def stream(
    model: Annotated[Path, typer.Option(help="artifact directory (edge-tslm artifact, or one with its ONNX export)")],
    input: Annotated[str, typer.Option("--input", "-i", help="CSV, WFDB record (.hea) or JSON-lines file; '-' for stdin")] = "-",
    task: Annotated[str, typer.Option(help="har (activity segments) | afib (AF episodes and burden)")] = "har",
    fmt: Annotated[str, typer.Option(help="auto | csv | wfdb | jsonl")] = "auto",
    column: Annotated[Optional[list[str]], typer.Option(help="signal column (name or index); repeat for several")] = None,
    time_column: Annotated[Optional[str], typer.Option(help="time column in seconds (default: one named t/time/timestamp)")] = None,
    time_scale: Annotated[float, typer.Option(help="multiply the time column by this to get seconds (0.001 for ms)")] = 1.0,
    fs: Annotated[Optional[float], typer.Option(help="input sampling rate in Hz (default: from the file or its timestamps)")] = None,
    realtime: Annotated[bool, typer.Option(help="replay the file at the speed it was recorded")] = False,
    speed: Annotated[float, typer.Option(help="replay speed factor with --realtime (2: twice as fast)")] = 1.0,
    backend: Annotated[str, typer.Option(help="auto | onnx | torch")] = "auto",
    window_s: Annotated[Optional[float], typer.Option(help="window length in s (default: 2.56 for har, 30 for afib)")] = None,
    hop_s: Annotated[Optional[float], typer.Option(help="hop between windows in s (default: 1.28 for har, 10 for afib)")] = None,
    rationale: Annotated[str, typer.Option(help="when to explain: label_change | af | never | always")] = "label_change",
    ground_numbers: Annotated[bool, typer.Option("--ground-numbers/--model-numbers",
                                                 help="afib rationales: write the window's measured numbers (beats, rate, "
                                                      "RR variability) where the rationale states them, the model writing "
                                                      "the rest; --model-numbers: the model's own estimates, flagged when "
                                                      "they are off")] = True,
    draft_tokens: Annotated[int, typer.Option(help="rationales: tokens of the window's template rationale drafted and "
                                                   "checked in each decoder call (the same text in fewer calls); 0: "
                                                   "none")] = 16,
    smoothing: Annotated[int, typer.Option(help="majority vote over the last N windows for segments/episodes")] = 1,
    min_af_windows: Annotated[int, typer.Option(help="consecutive AF windows that make an episode")] = 3,
    unit: Annotated[Optional[str], typer.Option(help="unit of the signal (default: g for har, mV for afib)")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for the backend (0: its default)")] = 0,
    arena: Annotated[bool, typer.Option("--arena/--no-arena",
                                        help="onnxruntime's memory arena; --no-arena frees every buffer after each call "
                                             "(a lower peak RSS for a little latency)")] = True,
    label_scoring: Annotated[str, typer.Option(help="full: each label's answer log-likelihood over the vocabulary; labels: "
                                                    "p(label | one of the labels), from logits only where the labels "
                                                    "part ways (faster: the artifact's label head when it has one; "
                                                    "whole-split F1 within 0.002 of full's on HAR and ECG, README)")] = "labels",
    gait_reference: Annotated[Optional[str], typer.Option(help="har_gait models: the wearer's gait frame, 'x,y,z' as a "
                                                          "previous stream's summary gives it, or 'scan' to take it from "
                                                          "this file's first ~30 s of walking before streaming (files "
                                                          "only). Default: the stream sets it once the wearer has walked "
                                                          "~30 s, and reads earlier windows as worn (flagged)")] = None,
) -> None:
    """Stream windows through a model: answers, rationales on demand, quality flags, latency, then a summary."""
    from edge_tslm.runtime.backend import BackendUnavailable, load_backend
    from edge_tslm.runtime.events import write_events
    from edge_tslm.runtime.label_trie import check_scoring
    from edge_tslm.runtime.sources import SourceError, open_source, replay
    from edge_tslm.gait_frame import parse_reference
    from edge_tslm.runtime.stream import StreamConfig, Streamer, scan_gait_reference

    try:
        ref = None if gait_reference in (None, "scan") else tuple(parse_reference(gait_reference))
        if gait_reference == "scan" and input == "-":
            raise ValueError("--gait-reference scan reads the input twice: give a file, not stdin")
        cfg = StreamConfig(
            task=task,
            window_s=window_s,
            hop_s=hop_s,
            rationale_on=rationale,
            ground_numbers=ground_numbers,
            draft_tokens=draft_tokens,
            smoothing=smoothing,
            min_af_windows=min_af_windows,
            unit=unit,
            gait_reference=ref,
        )
        source = open_source(
            input,
            fmt,
            columns=column or None,
            time_column=time_column,
            chunk_size=max(1, int(fs / 10)) if (realtime and fs) else None,
            fs=fs,
            time_scale=time_scale,
        )
        items = replay(source, fs=fs, speed=speed) if realtime else source
        opts: dict = {"threads": threads} if threads else {}
        if not arena:
            opts["memory_arena"] = False
        opts["label_scoring"] = check_scoring(label_scoring)
        be = load_backend(model, backend, **opts)
        if gait_reference == "scan":
            scan = open_source(input, fmt, columns=column or None, time_column=time_column, fs=fs, time_scale=time_scale)
            ref = scan_gait_reference(scan, fs, float(getattr(be, "fs", 0.0) or 0.0))
            cfg = replace(cfg, gait_reference=tuple(float(v) for v in ref))
    except (ValueError, SourceError, BackendUnavailable) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    try:
        write_events(Streamer(be, cfg, fs=fs).run(items), sys.stdout)
    except SourceError as e:  # raised lazily by a reader (unknown column, missing wfdb)
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    except BrokenPipeError:  # e.g. piped into `head`
        raise typer.Exit(0)
