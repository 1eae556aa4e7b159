"""The machine a figure was measured on: CPU model, cores, RAM, devices and library versions."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Sequence

DEFAULT_PACKAGES = ("numpy", "scipy", "torch", "transformers", "onnxruntime", "scikit-learn", "wfdb", "sleepecg")


def machine(packages: Sequence[str] = DEFAULT_PACKAGES) -> dict:
    """Numbers mean little without this; recorded beside every result."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    versions = {}
    for pkg in packages:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "gpu": _gpu(),
        "load_avg_1min_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def _gpu() -> str | None:
    """The CUDA device's name and memory when torch is already loaded (never imports torch: the runtime is torch-free)."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            return f"{p.name}, {p.total_memory / 2**30:.1f} GiB, CUDA {torch.version.cuda}, torch {torch.__version__}"
        if torch is not None and torch.backends.mps.is_available():
            return "Apple MPS"
    except Exception:  # a broken driver must not lose the result it describes
        return None
    return None
