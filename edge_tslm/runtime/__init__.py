"""Torch-free streaming runtime: ring buffer -> windows -> quality -> backend -> JSONL events.

Imports numpy only (resampling included); a backend brings its own engine (onnxruntime,
or torch for ``torch_backend``), imported when it is loaded.
"""

from edge_tslm.runtime.backend import Backend, BackendUnavailable, Encoded, load_backend, register_backend
from edge_tslm.runtime.events import SCHEMA, check_event, dumps, validate_event, write_events
from edge_tslm.runtime.quality import Quality, QualityConfig, check_window
from edge_tslm.runtime.ring import RingBuffer, Window, Windower
from edge_tslm.runtime.sources import Chunk, SourceError, SourceIssue, open_source, read_csv, read_jsonl, read_wfdb, replay
from edge_tslm.runtime.stream import TASKS, StreamConfig, Streamer

__all__ = [
    "Backend",
    "BackendUnavailable",
    "Encoded",
    "load_backend",
    "register_backend",
    "SCHEMA",
    "check_event",
    "validate_event",
    "dumps",
    "write_events",
    "Quality",
    "QualityConfig",
    "check_window",
    "RingBuffer",
    "Window",
    "Windower",
    "Chunk",
    "SourceIssue",
    "SourceError",
    "open_source",
    "read_csv",
    "read_jsonl",
    "read_wfdb",
    "replay",
    "TASKS",
    "StreamConfig",
    "Streamer",
]
