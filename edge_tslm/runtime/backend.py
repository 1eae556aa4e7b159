"""What the streaming runtime needs from a model, whatever runs it (torch, ONNX Runtime, ...).

A window costs one encoder call; the classify path and the rationale (generated only on demand)
both reuse that encoding. So a backend exposes three steps::

    enc = backend.encode(series)                       # once per window (encoder + resampler)
    logp = backend.classify(text, enc, labels)         # {label: log-likelihood}, one shared prefill
    why = backend.generate(rationale_text, enc, 160)   # only when the stream asks for a rationale

``series`` are the window's z-normalised channels (one 1-D float32 each, at ``backend.fs``);
``text`` is ``prompts.build_model_input``'s text (with one ``<ts><endofchunk>`` per series). The
backend adds its own system prompt / chat template. The runtime times each step itself; a
backend may add finer timings (e.g. prefill vs decode) in ``last_timings``.

No torch here: backends that need it import it inside their own module.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["Backend", "Encoded", "register_backend", "load_backend", "BACKENDS", "BackendUnavailable"]


class Encoded:
    """A window's encoding as the backend keeps it (latents, media, or just the series): opaque to the runtime."""

    __slots__ = ("series", "value")

    def __init__(self, series: Sequence[np.ndarray], value: Any = None) -> None:
        self.series = tuple(series)
        self.value = value


@runtime_checkable
class Backend(Protocol):
    """The interface the Streamer drives. Attributes describe what the model was trained on."""

    name: str  # "torch", "onnx", ... (reported in the start event)
    labels: tuple[str, ...]  # allowed answers; empty -> the answer is generated and parsed
    fs: float  # the model's sampling rate in Hz (0: any rate, inputs are not resampled)
    max_seconds: float  # longest span the model was trained on (0: no limit); longer windows are cropped
    min_length: int  # fewest samples per series the encoder takes (one patch)
    task: str  # the task name in the model's config ("har", "ecg_rhythm", ...), "" if none
    series_features: str  # measured numbers the model reads in each description (prompts.SERIES_FEATURES; "rr_series" adds a series)
    question_first: bool  # the model was trained with the question before the series (prompts.build_model_input)
    series_text: str  # how the model's text describes each series: "full" or "short" (prompts.SERIES_TEXTS)
    question: str  # the question the model was trained with, "" to use the task's default

    def encode(self, series: Sequence[np.ndarray]) -> Encoded:
        """Run the series encoder once for this window. A backend whose encoder measures the series itself (a rhythm
        vector) sets ``reads_untrusted = True`` and takes ``encode(series, untrusted=...)``: per series, the (L,) bool
        flags of the window's filled gaps and noise bursts, so its measurement leaves them out."""
        ...

    def classify(self, text: str, encoded: Encoded, labels: Sequence[str]) -> dict[str, float]:
        """Log-likelihood of ``Answer: <label>`` for each label (one prefill shared by all labels)."""
        ...

    def generate(self, text: str, encoded: Encoded, max_new_tokens: int) -> str:
        """Greedy generation (the rationale, ending with ``Answer: <label>``). A backend that can write measured
        numbers into it takes ``generate(..., ground=fn)``: fn(text so far) -> text to write next, or None
        (edge_tslm.rationale_grounding); the Streamer passes it where the backend's generate has that parameter.
        One that checks drafted tokens takes ``generate(..., draft=fn)``: fn(token ids so far) -> ids likely next
        (edge_tslm.rationale_drafting), passed where the backend also has ``encode_text(text) -> token ids``."""
        ...


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (missing package or artifact files); the message says the fix."""


# name -> "module:callable" taking (artifact path, **options) and returning a Backend.
BACKENDS: dict[str, str | Callable[..., Backend]] = {
    "torch": "edge_tslm.runtime.torch_backend:TorchBackend.from_pretrained",
    "onnx": "edge_tslm.runtime.onnx_backend:OnnxBackend.from_pretrained",  # added with the ONNX export
}


def register_backend(name: str, loader: str | Callable[..., Backend]) -> None:
    """Register a loader (a callable or a ``"module:attr.attr"`` path imported on first use)."""
    BACKENDS[name] = loader


def _resolve(loader: str | Callable[..., Backend]) -> Callable[..., Backend]:
    if callable(loader):
        return loader
    module, _, attr = loader.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _has_onnx(path: Path) -> bool:
    return path.is_dir() and any(path.rglob("*.onnx"))


def load_backend(path: str | Path, kind: str = "auto", **options: Any) -> Backend:
    """Load an artifact with the named backend; ``auto`` prefers ONNX Runtime when the artifact has .onnx files."""
    path = Path(path)
    if not path.exists():
        raise BackendUnavailable(f"model {path} does not exist; pass an artifact directory (e.g. models/flamingo-har)")
    if kind == "auto":
        tried = []
        order = (["onnx"] if _has_onnx(path) else []) + ["torch"]
        for name in order:
            try:
                return load_backend(path, name, **options)
            except BackendUnavailable as e:
                tried.append(f"{name}: {e}")
        raise BackendUnavailable("no backend can run this model — " + "; ".join(tried))
    if kind not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {kind!r}; choose one of {sorted(BACKENDS)} or auto")
    try:
        loader = _resolve(BACKENDS[kind])
    except ImportError as e:
        hint = {
            "torch": "pip install 'edge-tslm[torch]' (torch first), or use --backend onnx with an exported model",
            "onnx": "pip install onnxruntime tokenizers, and export the model with its ONNX graphs",
        }.get(kind, "install its package")
        raise BackendUnavailable(f"the {kind} backend is not available ({e}); {hint}") from None
    return loader(path, **options)
