"""The ceiling benchmarks' pieces: out-of-fold rows found by rhythm vector, ridge scores in the task's label order."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "training")]
import ecg_ceiling  # noqa: E402
import har_ceiling  # noqa: E402

from edge_tslm.data.hapt import ACTIVITIES  # noqa: E402


def test_out_of_fold_rows_are_found_by_rhythm_vector_and_cut_to_the_logits(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, 36)).astype(np.float32)
    rows = rng.standard_normal((5, 68)).astype(np.float32)  # 64 hidden units + 4 logits, as --cross-fit writes
    save_file({"vectors": vectors, "features": rows}, str(tmp_path / "folds.safetensors"))
    order = [3, 0, 4]
    got = ecg_ceiling.out_of_fold(tmp_path / "folds.safetensors", "features", vectors[order], 4)
    assert np.allclose(got, rows[order, -4:])
    with pytest.raises(SystemExit, match="1 training records have no out-of-fold row"):
        ecg_ceiling.out_of_fold(tmp_path / "folds.safetensors", "features", np.concatenate([vectors[:2], vectors[:1] + 1.0]), 4)


def test_ridge_scores_come_in_the_activities_order_and_fit_only_the_given_rows():
    rng = np.random.default_rng(1)
    y = [ACTIVITIES[i % len(ACTIVITIES)] for i in range(120)][::-1]  # classes met in another order than ACTIVITIES
    X = np.eye(len(ACTIVITIES))[[ACTIVITIES.index(v) for v in y]] * 5 + 0.1 * rng.standard_normal((120, len(ACTIVITIES)))
    score = har_ceiling.ridge(X, y)
    assert [ACTIVITIES[i] for i in score(X).argmax(1)] == y
    held = np.arange(120) >= 100
    assert [ACTIVITIES[i] for i in har_ceiling.ridge(X, y, ~held)(X[held]).argmax(1)] == list(np.asarray(y)[held])


def test_trees_log_probs_walk_a_saved_trees_file_as_scikit_learn_predicts(tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier

    from edge_tslm.model.rhythm_trees import trees_from_sklearn

    rng = np.random.default_rng(2)
    X = rng.standard_normal((200, 36)).astype(np.float32)
    labels = ecg_ceiling.LABELS
    y = [labels[i] for i in (X[:, 0] > 0) + 2 * (X[:, 1] > 0.5)]
    clf = HistGradientBoostingClassifier(max_iter=10, max_leaf_nodes=8, random_state=0).fit(X, y)
    arrays, shape = trees_from_sklearn(clf, labels)
    save_file(arrays, str(tmp_path / "trees.safetensors"), metadata={"shape": json.dumps(list(shape) + [len(labels)])})
    order = [list(clf.classes_).index(lab) for lab in labels]
    want = clf.predict_proba(X)[:, order]
    assert np.allclose(np.exp(ecg_ceiling.trees_log_probs(tmp_path, X)), want, atol=1e-5)
