"""Benchmark logic (not timings): the Pareto front, the README block replacement, the bench row schema with a
tiny model, the memory-scaling cell runner with a tiny model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

from edge_tslm.bench import (  # noqa: E402
    ROW_KEYS,
    BenchConfig,
    artifact_kind,
    build_result,
    discover,
    failed_row,
    markdown,
    pareto_front,
    write_outputs,
)
from edge_tslm.data.subset import stratified_indices as stratified_subset  # noqa: E402


# ------------------------------------------------------------------------------------------------ Pareto
def test_pareto_front_keeps_only_undominated_points_sorted_by_cost():
    pts = [(10.0, 0.50), (5.0, 0.60), (20.0, 0.90), (8.0, 0.55), (30.0, 0.80), (5.0, 0.40)]
    # (10, .50) dominated by (5, .60); (8, .55) by (5, .60); (30, .80) by (20, .90); (5, .40) by (5, .60)
    assert pareto_front(pts) == [1, 2]


def test_pareto_front_keeps_ties_and_ignores_missing():
    pts = [(1.0, 0.5), (1.0, 0.5), (None, 0.9), (2.0, float("nan")), (3.0, 0.7)]
    assert pareto_front(pts) == [0, 1, 4]
    assert pareto_front([]) == []


def test_pareto_front_single_best_point_dominates_all():
    assert pareto_front([(1.0, 0.9), (2.0, 0.8), (3.0, 0.1)]) == [0]


# ------------------------------------------------------------------------------------------------ README block
def test_replace_block_touches_only_the_marked_block():
    from report import END, START, replace_block

    text = f"# T\nbefore\n{START}\nold line\n{END}\nafter\n"
    out = replace_block(text, "new\ntable")
    assert out == f"# T\nbefore\n{START}\nnew\ntable\n{END}\nafter\n"
    assert replace_block(out, "new\ntable") == out  # idempotent


@pytest.mark.parametrize("bad", ["no markers", "<!-- results:end --> x <!-- results:start -->",
                                 "<!-- results:start --><!-- results:start --><!-- results:end -->"])
def test_replace_block_refuses_missing_duplicate_or_reversed_markers(bad):
    from report import replace_block

    with pytest.raises(ValueError):
        replace_block(bad, "x")


def test_render_says_what_is_not_run_yet(tmp_path):
    from report import render

    out = render(tmp_path)  # no JSON at all
    assert "Not run yet: `python benchmarks/memory_scaling.py`" in out
    assert "Not run yet: `edge-tslm bench --quick`" in out


# ------------------------------------------------------------------------------------------------ bench
def test_discover_skips_missing_and_incomplete_with_reasons(tmp_path):
    (tmp_path / "runs" / "onnx-har").mkdir(parents=True)
    (tmp_path / "runs" / "onnx-har" / "encoder.onnx").write_bytes(b"x")
    found, skipped = discover("har", root=tmp_path)
    assert found == []
    reasons = {s["artifact"]: s["reason"] for s in skipped}
    assert "not present" in reasons["fp32"]
    assert "decoder.onnx" in reasons["onnx"]
    assert artifact_kind(tmp_path / "nope")[0] is None


def test_discover_finds_compression_rows_and_ecg_stems(tmp_path):
    """ECG artifacts are named flamingo-ecg (not -ecg_rhythm); compression.py's rows live in runs/compress/."""
    for d in ("models/flamingo-ecg", "runs/compress/ecg-int8"):
        (tmp_path / d).mkdir(parents=True)
        for f in ("config.json", "adapter.safetensors"):
            (tmp_path / d / f).write_bytes(b"{}")
    found, _ = discover("ecg_rhythm", root=tmp_path)
    assert {a["artifact"]: a["path"] for a in found} == {
        "fp32": str(tmp_path / "models/flamingo-ecg"), "int8": str(tmp_path / "runs/compress/ecg-int8")}


def test_stratified_subset_matches_eval_tslm_rule():
    from eval_tslm import stratified_subset as ref

    class S:
        def __init__(self, label):
            self.label = label

    labels = ["a", "b", "c"] * 7 + ["a"] * 5
    assert stratified_subset(labels, 3, seed=0) == ref([S(l) for l in labels], 3, seed=0)


def _tiny_samples(n_per_class: int, labels):
    from edge_tslm.data.sample import Sample
    from edge_tslm.signals import SignalMeta

    rng = np.random.default_rng(0)
    meta = SignalMeta(fs=50.0, unit="g", channels=("x", "y", "z"))
    return [Sample(rng.standard_normal((3, 64)).astype(np.float32), meta, "Which activity?", lab, f"Answer: {lab}", "har", "s1")
            for lab in labels for _ in range(n_per_class)]


def test_bench_row_schema_and_outputs_with_a_tiny_model(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from conftest import build_tiny

    from edge_tslm.bench import bench_one
    from edge_tslm.model.artifact import save_pretrained

    labels = ("walking", "sitting")
    model = build_tiny("flamingo", labels=labels, task="har", fs=50.0)
    art = save_pretrained(model, tmp_path / "tiny-har")
    artifact = {"artifact": "fp32", "path": str(art), "kind": "torch"}
    cfg = BenchConfig(per_class=1, reps=1, decode_tokens=2, threads=1)
    samples = _tiny_samples(1, labels)
    row = bench_one(artifact, "cpu", samples, labels, cfg)
    assert set(row) == set(ROW_KEYS)
    assert row["status"] == "ok" and row["n"] == 2 and 0.0 <= row["macro_f1"] <= 1.0
    for k in ("size_mib", "peak_mib", "encoder_ms", "prefill_ms", "decode_ms_per_token", "classify_ms_p50", "classify_ms_p95"):
        assert isinstance(row[k], float) and row[k] >= 0, k
    bad = failed_row({"artifact": "int8", "path": str(art), "kind": "torch"}, "cpu", "timed_out", "over 1 s")
    assert set(bad) == set(ROW_KEYS)
    row2 = {**row, "artifact": "int8", "classify_ms_p50": row["classify_ms_p50"] * 2, "macro_f1": row["macro_f1"] - 0.1}
    res = build_result([row, row2, bad], cfg, quick=True, n=2, indices=[0, 1], skipped=[{"artifact": "int4", "path": "p", "reason": "not present at p"}],
                       devices_skipped={"cuda": "torch.cuda.is_available() is False"}, machine_info={"cpu": "test", "cores": 1, "ram_gb": 1,
                       "load_avg_1min_at_start": 0.0}, command="edge-tslm bench --quick")
    assert res["pareto"]["latency"] == ["fp32 (cpu)"]
    write_outputs(res, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert [set(r) == set(ROW_KEYS) for r in saved["rows"]] == [True] * 3
    md = (tmp_path / "out" / "bench.md").read_text()
    assert "| fp32 (`" in md and "timed_out" in md and "int4 (not present at p)" in md
    assert (tmp_path / "out" / "bench_f1_latency.png").stat().st_size > 0
    assert (tmp_path / "out" / "bench_f1_memory.png").stat().st_size > 0
    assert markdown(saved).count("\n") > 5


def test_bench_cli_is_registered():
    typer_testing = pytest.importorskip("typer.testing")
    from edge_tslm.cli.app import app

    out = typer_testing.CliRunner().invoke(app, ["bench", "--help"])
    assert out.exit_code == 0 and "--quick" in out.output


# ------------------------------------------------------------------------------------------------ memory scaling
def test_memory_cell_runner_with_a_tiny_model():
    pytest.importorskip("torch")
    import memory_scaling as M

    r = M.run_cell("softprompt", 2, 20, backbone="tiny-llama", threads=1)
    assert r["status"] == "ok" and r["n_series"] == 2 and r["length"] == 20
    assert r["peak_mib"] >= r["baseline_mib"] > 0 and r["step_mib"] >= 0
    assert r["lm_sequence_tokens"] == r["text_tokens"] + 2 * (5 - 1)  # 20 samples / patch 4 = 5 soft tokens per series
    f = M.run_cell("flamingo", 2, 20, backbone="tiny-llama", threads=1)
    assert f["lm_sequence_tokens"] == f["text_tokens"]  # Flamingo feeds no series tokens to the LM


def test_memory_cell_timeout_is_recorded_not_raised():
    import memory_scaling as M

    r = M.measure_cell("flamingo", 1, 10, backbone="tiny-llama", timeout_s=0.2)
    assert r["status"] == "timed_out" and r["variant"] == "flamingo"


def test_memory_growth_and_markdown_from_cells():
    import memory_scaling as M

    def cell(v, n, L, peak, status="ok"):
        c = {"variant": v, "n_series": n, "length": L, "status": status, "cap_gb": 10.0}
        if status == "ok":
            c.update(peak_mib=peak, step_mib=peak - 1000.0, baseline_mib=1000.0, method="m")
        return c

    cells = [cell("flamingo", 1, 10, 1100.0), cell("flamingo", 5, 10_000, 1150.0),
             cell("softprompt", 1, 10, 1100.0), cell("softprompt", 5, 1_000, 3300.0),
             cell("softprompt", 5, 10_000, 0, "over_cap")]
    g = M.growth(cells, "softprompt")
    assert g["peak_ratio"] == 3.0 and g["not_measured"] == [[5, 10_000, "over_cap"]]
    assert M.growth(cells, "flamingo")["peak_ratio"] == pytest.approx(1.045, abs=1e-3)
    res = {"cells": cells, "backbone": "tiny", "device": "cpu", "cap_gb": 10.0, "timeout_s": 60.0, "command": "c",
           "machine": {"cpu": "t", "cores": 1, "ram_gb": 1, "versions": {"torch": "x"}}, "load_avg_1min_start": 0,
           "load_avg_1min_end": 0}
    res["growth"] = {v: M.growth(cells, v) for v in ("flamingo", "softprompt")}
    res["verdict"] = M.verdict(res)
    assert "meets" in res["verdict"] and "over the 10.0 GB cap" in res["verdict"]
    md = M.write_markdown(res)
    assert "over the 10.0 GB cap" in md and "## softprompt" in md
