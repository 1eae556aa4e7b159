"""The torch backend: an edge-tslm artifact run by PyTorch (for CUDA/MPS users who keep torch).

Torch is imported only when a backend is built, so ``edge_tslm.runtime`` stays importable on a
torch-free device. The torch model encodes the series inside its prefill, so ``encode`` here only
packages the series and the encoder's time is counted in ``classify`` (the ONNX backend runs the
encoder graph in ``encode`` and reuses its latents).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge_tslm.runtime.backend import BackendUnavailable, Encoded

__all__ = ["TorchBackend"]


class TorchBackend:
    name = "torch"

    def __init__(self, model: Any, label_scoring: str = "full") -> None:
        """label_scoring: "full" or "labels" (edge_tslm.runtime.label_trie)."""
        from edge_tslm.runtime.label_trie import check_scoring

        cfg = model.cfg
        self.model = model
        self.label_scoring = check_scoring(label_scoring)
        self.labels = tuple(cfg.labels)
        self.fs = float(cfg.fs)
        self.max_seconds = float(cfg.max_seconds)
        self.min_length = int(cfg.encoder.patch_len)
        self.task = str(cfg.task)
        self.series_features = str(cfg.series_features)
        self.question_first = bool(cfg.question_first)
        self.series_text = str(cfg.series_text)
        self.question = ""
        self.last_timings: dict[str, float] = {}
        # a rhythm-vector model measures each series itself: the stream's untrusted flags keep its filled gaps out
        self.reads_untrusted = bool(getattr(cfg.encoder, "rhythm_vector", False))

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: str = "auto", threads: int | None = None, backbone: Any = None,
        memory_arena: bool = True, label_scoring: str = "full",
    ) -> "TorchBackend":
        """memory_arena is onnxruntime's option, accepted so that `--backend auto` can fall back here with it; torch
        manages its own memory."""
        try:
            import torch
        except ImportError:
            raise BackendUnavailable("torch is not installed; pip install torch, or use --backend onnx") from None
        from edge_tslm.model.artifact import from_pretrained

        if threads:
            torch.set_num_threads(int(threads))
        if device == "auto":
            if torch.cuda.is_available():
                device = "cuda"
            elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                device = "mps"
            else:
                device = "cpu"
        return cls(from_pretrained(path, backbone=backbone, device=device), label_scoring=label_scoring)

    def encode(self, series: Sequence[np.ndarray], untrusted: Sequence[np.ndarray | None] | None = None) -> Encoded:
        """The torch model encodes inside prefill (timed under classify); the untrusted flags (per series, (L,) bool
        or None) ride along to its rhythm vector."""
        if untrusted is not None and len(untrusted) != len(series):
            raise ValueError(f"untrusted needs one (L,) flag array (or None) per series; got {len(untrusted)} for {len(series)} series")
        return Encoded(series, None if untrusted is None else tuple(untrusted))

    def classify(self, text: str, encoded: Encoded, labels: Sequence[str]) -> dict[str, float]:
        t = time.perf_counter()
        out = self.model.classify(text, list(encoded.series), list(labels), untrusted=encoded.value, scoring=self.label_scoring)
        self.last_timings = {"classify_with_encode": (time.perf_counter() - t) * 1000}
        return out

    def generate(self, text: str, encoded: Encoded, max_new_tokens: int, *, ground=None, draft=None) -> str:
        out = self.model.generate(text, list(encoded.series), max_new_tokens=int(max_new_tokens), untrusted=encoded.value,
                                  ground=ground, draft=draft)
        self.last_timings = dict(getattr(self.model, "last_generate", {}))
        return out

    def encode_text(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens): what a rationale draft is made of."""
        return self.model.encode_text(text)
