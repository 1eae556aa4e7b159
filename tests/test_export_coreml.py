"""Core ML export of the Flamingo encoder + resampler: conversion and compression on any OS, prediction on macOS."""

from __future__ import annotations

import platform

import pytest

torch = pytest.importorskip("torch")
ct = pytest.importorskip("coremltools", reason="coremltools is not installed (pip install 'edge-tslm[export]')")

from conftest import build_tiny  # noqa: E402


@pytest.fixture(scope="module")
def tiny_flamingo():
    return build_tiny("flamingo", "tiny-llama")


@pytest.fixture(scope="module")
def fp16_package(tiny_flamingo, tmp_path_factory):
    from edge_tslm.export.coreml import export_encoder_coreml

    return export_encoder_coreml(tiny_flamingo, tmp_path_factory.mktemp("coreml") / "encoder.mlpackage")


def test_coreml_friendly_forward_equals_eager(tiny_flamingo):
    """What gets converted (the shape-arithmetic-free forward) computes what eager computes, at 3 lengths."""
    from edge_tslm.export.coreml import coreml_forward_parity

    p = coreml_forward_parity(tiny_flamingo.series_encoder)
    assert p["passed"] and p["max_abs_diff"] <= 1e-5, p
    assert set(p["cases"]) == {"L=4", "L=127", "L=4500"}
    assert "forward" not in vars(tiny_flamingo.series_encoder.encoder)  # patch undone


def test_coreml_package_flexible_shapes(fp16_package):
    path = fp16_package.path
    assert path.is_dir() and path.suffix == ".mlpackage"
    assert fp16_package.parity["torch_forward"]["passed"]
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    ins = {i.name: i.type.multiArrayType for i in spec.description.input}
    assert list(ins) == ["series", "series_mask", "series_index"]
    ranges = [(r.lowerBound, r.upperBound) for r in ins["series"].shapeRange.sizeRanges]
    assert ranges[1][0] == 4 and ranges[1][1] > 100_000  # any length >= one patch
    assert [o.name for o in spec.description.output] == ["latents"]
    assert fp16_package.size_bytes == sum(f["size_bytes"] for f in fp16_package.files.values())


@pytest.mark.parametrize("compress", ["int8", "palettize"])
def test_coreml_weight_compression_shrinks(tiny_flamingo, fp16_package, tmp_path, compress):
    from edge_tslm.export.coreml import export_encoder_coreml

    rep = export_encoder_coreml(
        tiny_flamingo, tmp_path / f"{compress}.mlpackage", precision="fp16", compress=compress, validate=False
    )
    assert rep.precision == compress
    assert rep.size_bytes < fp16_package.size_bytes


def test_coreml_rejects_bad_options(tiny_flamingo, tmp_path):
    from edge_tslm.export.coreml import export_encoder_coreml

    with pytest.raises(ValueError, match="precision"):
        export_encoder_coreml(tiny_flamingo, tmp_path / "x.mlpackage", precision="bf16")
    with pytest.raises(ValueError, match="mlpackage"):
        export_encoder_coreml(tiny_flamingo, tmp_path / "x.onnx")


@pytest.mark.macos
@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML prediction needs macOS")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_coreml_prediction_matches_eager(tiny_flamingo, tmp_path, precision):
    from edge_tslm.export.coreml import export_encoder_coreml

    rep = export_encoder_coreml(tiny_flamingo, tmp_path / f"{precision}.mlpackage", precision=precision)
    p = rep.parity["coreml_predict"]
    assert p["passed"], p
