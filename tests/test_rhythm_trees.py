"""Boosted trees over the rhythm vector (encoder.rhythm_trees): the buffers' walk is scikit-learn's model (thresholds,
missing values, class order), training records read out-of-fold log-probabilities only while training, the TSLM starts
out unchanged and saves the trees in its adapter, and the exported encoder graph walks them as torch does."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from edge_tslm.model.rhythm_trees import RhythmTrees, trees_from_sklearn  # noqa: E402
from edge_tslm.model.vector_cross_fit import VectorCrossFit  # noqa: E402
from edge_tslm.rhythm_vector import RHYTHM_VECTOR_NAMES, rhythm_vector  # noqa: E402
from test_heartbeats import _synthetic_ecg  # noqa: E402

FS = 150.0
LABELS = ("normal", "atrial fibrillation", "other rhythm", "noisy")
F = len(RHYTHM_VECTOR_NAMES)


def _data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Vectors with nan holes whose label depends on a few numbers (and on a number being missing)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, F)).astype(np.float32)
    X[rng.random((n, F)) < 0.15] = np.nan
    score = np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 3]) - np.isnan(X[:, 5])
    y = [LABELS[int(np.digitize(s, [-1.0, 0.0, 1.0]))] for s in score]
    return X, y


def _fit(X, y, iterations: int = 15):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=iterations, max_leaf_nodes=8, learning_rate=0.2, early_stopping=False,
                                          random_state=0).fit(X, y)


def _trees(clf, labels=LABELS) -> RhythmTrees:
    arrays, shape = trees_from_sklearn(clf, labels)
    trees = RhythmTrees(*shape[:3], F, len(labels)).eval()
    trees.load_arrays(arrays)
    return trees


def test_the_walk_is_scikit_learns_model_at_thresholds_and_missing_values():
    X, y = _data()
    clf = _fit(X, y)
    order = ("noisy", "normal", "other rhythm", "atrial fibrillation")  # the task's order, not scikit-learn's sorted one
    trees = _trees(clf, order)
    # rows sitting exactly on a split's threshold (as float32) and just above it, where float64 vs float32 could differ
    probe = np.repeat(X[:6], 2, axis=0)
    node = clf._predictors[0][0].nodes[0]
    thr = np.float32(node["num_threshold"])
    probe[0::2, node["feature_idx"]] = thr
    probe[1::2, node["feature_idx"]] = np.nextafter(thr, np.float32(np.inf))
    Xall = np.concatenate([X, probe])
    want = clf.predict_proba(Xall)[:, [list(clf.classes_).index(lab) for lab in order]]
    with torch.no_grad():
        got = trees(torch.from_numpy(Xall)).exp().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (got.argmax(1) == want.argmax(1)).all()
    with pytest.raises(ValueError, match="not the task's"):
        trees_from_sklearn(clf, ("normal", "atrial fibrillation"))
    with pytest.raises(ValueError, match="do not fit"):  # another shape: refused before loading anything
        RhythmTrees(3, 15, 7, F, 4).load_arrays(trees_from_sklearn(clf, LABELS)[0])
    arrays, shape = trees_from_sklearn(clf, LABELS)
    with pytest.raises(ValueError, match="refit them on this encoder's rhythm vector"):  # splits on numbers it lacks
        RhythmTrees(*shape[:3], 3, 4).load_arrays(arrays)


def test_two_label_trees_score_as_scikit_learn():
    """scikit-learn grows one tree per round for two labels (the second's logit): the walk gives both probabilities."""
    X, y = _data()
    y2 = [lab if lab == "normal" else "atrial fibrillation" for lab in y]
    clf = _fit(X, y2)
    order = ("atrial fibrillation", "normal")
    trees = _trees(clf, order)
    want = clf.predict_proba(X)[:, [list(clf.classes_).index(lab) for lab in order]]
    with torch.no_grad():
        np.testing.assert_allclose(trees(torch.from_numpy(X)).exp().numpy(), want, atol=1e-5)


def test_training_records_read_out_of_fold_log_probs_only_while_training():
    X, y = _data()
    trees = _trees(_fit(X, y))
    own = np.log(np.full((2, 4), 0.25, np.float32))
    trees.cross_fit = VectorCrossFit(X[:2], own)
    v = torch.from_numpy(X[:3])
    with torch.no_grad():
        full = trees(v)
        trees.train()
        crossed = trees(v)
    torch.testing.assert_close(crossed[:2], torch.from_numpy(own))
    torch.testing.assert_close(crossed[2], full[2])  # a record no fold knows keeps the full trees' answer
    assert (trees.cross_fit.hits, trees.cross_fit.seen) == (2, 3)
    assert not torch.allclose(full[:2], crossed[:2])


def test_config_checks():
    from edge_tslm.config import EncoderConfig, TSLMConfig

    with pytest.raises(ValueError, match="rhythm_vector"):
        TSLMConfig(task="ecg_rhythm", encoder=EncoderConfig(rhythm_trees=(10, 15, 7, 4)))
    with pytest.raises(ValueError, match="four positive numbers"):
        TSLMConfig(task="ecg_rhythm", encoder=EncoderConfig(rhythm_vector=True, rhythm_trees=(10, 15, 7)))
    with pytest.raises(ValueError, match="score 4 labels"):
        TSLMConfig(task="ecg_rhythm", labels=LABELS[:2], encoder=EncoderConfig(rhythm_vector=True, rhythm_trees=(10, 15, 7, 4)))


def _ecg(lo: float, beats: int = 25, seed: int = 7) -> np.ndarray:
    return _synthetic_ecg(np.random.default_rng(seed).uniform(lo, lo + 0.4, beats), FS)[0].astype(np.float32)


def _tiny(shape):
    from conftest import build_tiny
    from edge_tslm.config import EncoderConfig

    return build_tiny("flamingo", "tiny-llama", fs=FS, task="ecg_rhythm", labels=LABELS,
                      encoder=EncoderConfig(dim=32, conv_layers=1, rhythm_vector=True, rhythm_trees=shape))


def _fitted_dir(tmp_path, features=RHYTHM_VECTOR_NAMES, labels=LABELS):
    """A trees.safetensors + folds.safetensors as training/pretrain_rhythm_trees.py writes them, on real ECG vectors."""
    import json

    from safetensors.numpy import save_file

    tmp_path.mkdir(parents=True, exist_ok=True)
    X, y = _data()
    X[:4] = np.stack([rhythm_vector(_ecg(lo, seed=s), FS) for s, lo in enumerate((0.4, 0.6, 0.8, 1.0))])
    arrays, shape = trees_from_sklearn(_fit(X, y), LABELS)
    meta = {"shape": json.dumps(list(shape) + [4]), "features": json.dumps(list(features)), "labels": json.dumps(list(labels))}
    save_file(arrays, str(tmp_path / "trees.safetensors"), metadata=meta)
    save_file({"vectors": X, "log_probs": np.log(np.full((len(X), 4), 0.25, np.float32))}, str(tmp_path / "folds.safetensors"), metadata=meta)
    return tuple(shape) + (4,)


def test_tslm_starts_unchanged_and_saves_the_trees(tmp_path):
    from conftest import open_gates

    from edge_tslm.model.artifact import from_pretrained, save_pretrained
    from edge_tslm.model.batch import collate
    from edge_tslm.train.recipe import load_rhythm_trees, rhythm_trees_shape

    shape = _fitted_dir(tmp_path)
    assert rhythm_trees_shape(tmp_path) == shape
    with pytest.raises(ValueError, match="pretrain_rhythm_trees"):
        rhythm_trees_shape(tmp_path / "nowhere")
    torch.manual_seed(0)
    plain = _tiny(())
    torch.manual_seed(0)
    model = _tiny(shape)
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".trees" in k for k in missing)
    with pytest.raises(ValueError, match="reads no rhythm trees"):
        load_rhythm_trees(plain, tmp_path)
    _fitted_dir(tmp_path / "reordered", features=RHYTHM_VECTOR_NAMES[::-1])
    with pytest.raises(ValueError, match="other rhythm-vector numbers"):  # another vector layout walks silently wrong
        load_rhythm_trees(model, tmp_path / "reordered")
    _fitted_dir(tmp_path / "other", labels=("a", "b", "c", "d"))
    with pytest.raises(ValueError, match="fit the trees on this task"):
        load_rhythm_trees(model, tmp_path / "other")
    assert load_rhythm_trees(model, tmp_path) == len(_data()[0])
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "trees.safetensors").write_bytes((tmp_path / "trees.safetensors").read_bytes())
    with pytest.raises(ValueError, match="no folds.safetensors"):
        load_rhythm_trees(model, tmp_path / "bare")
    open_gates(plain, 0.5)
    open_gates(model, 0.5)
    text = "ECG: <ts><endofchunk>\nWhich rhythm?\n"
    ecgs = [_ecg(0.4), _ecg(0.8, seed=2)]
    for ecg in ecgs:  # zero-initialised projection: the trees change nothing until it trains
        assert model.classify(text, [ecg], LABELS) == pytest.approx(plain.classify(text, [ecg], LABELS), abs=1e-5)
    model.train()
    batch = collate(model.tokenizer, [text, text], [[ecgs[0]], [ecgs[1]]], ["Answer: normal", "Answer: noisy"])
    model.loss(batch).backward()
    assert model.series_encoder.trees_embed.proj.weight.grad.abs().sum() > 0
    assert model.series_encoder.trees.cross_fit.seen == 2  # training rows were looked up
    assert not any(n.startswith("series_encoder.trees.") for n, p in model.named_parameters() if p.requires_grad)

    with torch.no_grad():
        model.series_encoder.trees_embed.proj.weight.normal_(0, 0.2)
    model.eval()
    want = model.classify(text, [ecgs[0]], LABELS)
    assert want != pytest.approx(plain.classify(text, [ecgs[0]], LABELS), abs=1e-4)
    save_pretrained(model, tmp_path / "art")
    again = from_pretrained(tmp_path / "art")
    torch.testing.assert_close(again.series_encoder.trees.split, model.series_encoder.trees.split)
    assert again.series_encoder.trees.cross_fit is None  # out-of-fold answers are for training only, never saved
    assert again.classify(text, [ecgs[0]], LABELS) == pytest.approx(want, abs=1e-5)


def test_onnx_encoder_walks_the_trees_as_torch_does(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from conftest import open_gates
    from edge_tslm.export import export_artifact
    from edge_tslm.runtime.onnx_backend import OnnxBackend
    from edge_tslm.train.recipe import load_rhythm_trees

    shape = _fitted_dir(tmp_path)
    torch.manual_seed(1)
    model = _tiny(shape)
    load_rhythm_trees(model, tmp_path, cross_fit=False)
    open_gates(model, 0.5)
    with torch.no_grad():
        model.series_encoder.trees_embed.proj.weight.normal_(0, 0.5)
    manifest = export_artifact(model, "onnx", tmp_path / "onnx", decoder=True)
    assert manifest["parity_passed"]
    be = OnnxBackend.from_pretrained(tmp_path / "onnx", threads=1)
    text = "ECG: <ts><endofchunk>\nWhich rhythm?\n"
    for lo, n in ((0.4, 25), (0.8, 40)):
        ecg = _ecg(lo, n)
        want = model.classify(text, [ecg], LABELS)
        got = be.classify(text, be.encode([ecg]), LABELS)
        for lab in LABELS:
            assert got[lab] == pytest.approx(want[lab], abs=1e-3)
