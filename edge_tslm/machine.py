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
    cpu, isa = _cpu()
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
        "cpu_isa": isa,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


# The vector extensions that decide CPU kernel speed (onnxruntime's int8/4-bit MatMuls, torch's GEMMs): two
# "AMD EPYC" hosts of the same machine kind ran the same compact artifacts 2.4-3.4x apart (decision and decode
# times in benchmarks/results/stream_latency.md), the slower one AVX2 only.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")


def _cpu() -> tuple[str, list[str]]:
    """('<model name> (family F model M, <ISA>)', the ISA_FLAGS present), from /proc/cpuinfo where there is one.

    The model name alone ('AMD EPYC' in a VM) does not tell hosts apart; family/model and the ISA do."""
    name = platform.processor() or ""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor is enough
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        return name, []
    name = fields.get("model name", name)
    flags = set(fields.get("flags", "").split())
    isa = [f for f in ISA_FLAGS if f in flags]
    if not fields:
        return name, isa
    arch = f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"
    vec = ", ".join(f.upper().replace("_", "-") for f in isa) or "no AVX2"
    if "avx2" in isa and "avx512f" not in isa:
        vec += ", no AVX-512"
    return f"{name} ({arch}; {vec})", isa


def machine_cpu_isa() -> list[str] | None:
    """The ISA_FLAGS this CPU has; None where /proc/cpuinfo cannot tell (macOS, Windows)."""
    try:
        Path("/proc/cpuinfo").stat()
    except OSError:
        return None
    return _cpu()[1]


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
