"""Shared fixtures: tiny random backbones (built in code, offline) and small adapter configs.

Torch is imported lazily, so numpy-only test modules still collect without it. Every model fixture builds a fresh model (tiny LMs build in ~50 ms), so a test may mutate it freely
(set gates, zero embeddings, take optimizer steps) without leaking into another test.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

TINY_BACKBONES = ("tiny-llama", "tiny-gemma3")


def pytest_configure(config):
    """Tiny models are all overhead: one intra-op thread is as fast, and on a busy 2-core box it avoids
    thread spin that made single forwards 100x slower. EDGE_TSLM_TEST_THREADS overrides."""
    import importlib.util
    import os

    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(int(os.environ.get("EDGE_TSLM_TEST_THREADS", "1")))
VARIANTS = ("flamingo", "softprompt")


def small_config(variant: str = "flamingo", backbone: str = "tiny-llama", **changes):
    """A TSLMConfig small enough that a forward pass costs milliseconds on one CPU core."""
    from edge_tslm.config import EncoderConfig, FusionConfig, ResamplerConfig, SoftPromptConfig, TSLMConfig

    cfg = TSLMConfig(
        variant=variant,
        backbone=backbone,
        encoder=EncoderConfig(dim=32, conv_layers=1),
        resampler=ResamplerConfig(num_latents=8, depth=1, heads=2, dim_head=16),
        fusion=FusionConfig(every_k=2, heads=2, dim_head=16),
        softprompt=SoftPromptConfig(encoder_layers=1, heads=2, lora_r=4, lora_alpha=8),
    )
    return cfg.replace(**changes) if changes else cfg


def build_tiny(variant: str = "flamingo", backbone: str = "tiny-llama", seed: int = 0, **changes):
    """A fresh model around a fresh tiny backbone; adapter init is seeded, so two calls give equal models."""
    from edge_tslm.backbones import load_backbone
    from edge_tslm.model import build_model

    import torch

    bb = load_backbone(backbone)  # seeds its own LM init
    torch.manual_seed(seed)
    return build_model(small_config(variant, backbone, **changes), bb).eval()


def open_gates(model, value: float = 1.0) -> None:
    """Set every Flamingo gate to ``value`` so the series actually reach the LM."""
    import torch

    with torch.no_grad():
        for block in model.xattn.values():
            block.attn_gate.fill_(value)
            block.ff_gate.fill_(value)


def load_script(relpath: str):
    """A repo script (e.g. "training/pretrain_ecg_stem.py") as a module, for the helpers and main() it defines."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / relpath
    spec = importlib.util.spec_from_file_location(path.stem + "_script", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def series_of(rng: np.random.Generator, *lengths: int) -> list[np.ndarray]:
    return [rng.standard_normal(n).astype(np.float32) for n in lengths]


def ts_text(n_series: int, question: str = "Which?") -> str:
    """Model-input text with one described ``<ts><endofchunk>`` per series, like prompts.build_model_input."""
    from edge_tslm.constants import END_CHUNK_TOKEN, TS_TOKEN

    parts = [f"s{i}: {TS_TOKEN}{END_CHUNK_TOKEN}" for i in range(n_series)]
    return "Series. " + " ".join(parts) + f" {question}\n"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(params=TINY_BACKBONES)
def backbone_name(request) -> str:
    return request.param


@pytest.fixture(params=VARIANTS)
def variant(request) -> str:
    return request.param


@pytest.fixture
def make_model() -> Callable:
    """Factory: make_model(variant, backbone, **config changes) -> fresh eval-mode model."""
    return build_tiny


@pytest.fixture
def flamingo(backbone_name):
    return build_tiny("flamingo", backbone_name)


@pytest.fixture
def softprompt(backbone_name):
    return build_tiny("softprompt", backbone_name)


@pytest.fixture
def any_model(variant, backbone_name):
    return build_tiny(variant, backbone_name)
