"""The machine record beside every figure tells CPU hosts apart by family/model and vector ISA."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_tslm import machine as mach


def test_machine_names_the_cpu_family_and_isa(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni\n\nprocessor\t: 1\n")
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: real(info) if str(self) == "/proc/cpuinfo" else real(self, *a, **k))
    name, isa = mach._cpu()
    assert name == "AMD EPYC (family 25 model 17; AVX2, AVX512F, AVX512-VNNI)" and isa == ["avx2", "avx512f", "avx512_vnni"]
    info.write_text("processor\t: 0\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: avx avx2\n")
    assert mach._cpu() == ("AMD EPYC (family 25 model 1; AVX2, no AVX-512)", ["avx2"])


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="no /proc/cpuinfo on this OS (macOS, Windows)")
def test_machine_record_on_this_host():
    m = mach.machine(packages=("numpy",))
    assert "family" in m["cpu"] and isinstance(m["cpu_isa"], list) and m["versions"]["numpy"]
