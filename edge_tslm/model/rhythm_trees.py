"""Gradient-boosted trees over an ECG's rhythm vector, run inside the encoder graph (a second, different stem).

Why: the CNN stem and trees over measured rhythm numbers make different mistakes. Averaging their probabilities
scores above either alone on PhysioNet 2017 (training/README.md, "Boosted trees over the rhythm vector"), so the
TSLM reads both: the trees' label log-probabilities reach every patch through a zero-initialised projection, as the
CNN stem's do.

The trees are scikit-learn's HistGradientBoostingClassifier fitted on the training records' rhythm vectors
(training/pretrain_rhythm_trees.py), stored as small frozen buffers and walked with gathers, so torch, the ONNX
encoder graph and the torch-free runtime all run them without scikit-learn. Each node is 7 bytes (feature, left
child, missing-value direction, threshold or leaf value), so 200 trees of 15 nodes keep an ECG stem model's
adapter under 20 MiB.

While the TSLM trains, each training record gets the log-probabilities of trees fitted without its fold
(`VectorCrossFit`): on training records the full trees are right more often than on new ones, and a TSLM trained on
that would learn to trust them more than they deserve.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from edge_tslm.model.vector_cross_fit import VectorCrossFit

__all__ = ["RhythmTrees", "trees_from_sklearn"]


def trees_from_sklearn(clf: Any, labels: tuple[str, ...]) -> tuple[dict[str, np.ndarray], tuple[int, int, int]]:
    """A fitted HistGradientBoostingClassifier -> (arrays for RhythmTrees, (trees, nodes, depth)).

    Classes are put in `labels` order. Thresholds are rounded down to float32, so a float32 vector goes left exactly
    when scikit-learn's float64 comparison sends it left."""
    classes = [str(c) for c in clf.classes_]
    if sorted(classes) != sorted(labels):
        raise ValueError(f"the trees were fitted on labels {classes}, not the task's {list(labels)}")
    per_iter = clf._predictors  # [iteration][class] TreePredictor
    binary = len(labels) == 2  # one tree per iteration scoring the second class: softmax([0, raw]) is its sigmoid
    if len(per_iter[0]) != (1 if binary else len(labels)):
        raise ValueError(f"expected {1 if binary else len(labels)} tree(s) per iteration, got {len(per_iter[0])}")
    trees = [(1 if binary else k, p.nodes) for it in per_iter for k, p in enumerate(it)]
    n = max(nodes.size for _, nodes in trees)
    if n > 127 or clf.n_features_in_ > 127:
        raise ValueError(f"trees of {n} nodes over {clf.n_features_in_} features do not fit int8 indices; use fewer leaves")
    T = len(trees)
    feature = np.full((T, n), -1, np.int8)
    left = np.zeros((T, n), np.int8)
    missing = np.zeros((T, n), np.int8)
    split = np.zeros((T, n), np.float32)
    tree_class = np.zeros(T, np.int8)
    depth = 0
    for t, (k, nodes) in enumerate(trees):
        if nodes["is_categorical"].any():
            raise ValueError("categorical splits are not supported; fit the trees on numeric features only")
        tree_class[t] = labels.index(classes[k])
        # renumber breadth-first so that each node's children are adjacent (right = left + 1): one index per node
        new_id, queue, nxt = {0: 0}, [0], 1
        for old in queue:
            if not nodes[old]["is_leaf"]:
                for child in (nodes[old]["left"], nodes[old]["right"]):
                    new_id[int(child)] = nxt
                    nxt += 1
                    queue.append(int(child))
        for old, i in new_id.items():
            node = nodes[old]
            if node["is_leaf"]:
                left[t, i] = i  # a leaf points at itself, so a walk that reached it stays
                split[t, i] = np.float32(node["value"])
                continue
            thr = np.float32(node["num_threshold"])
            if float(thr) > node["num_threshold"]:
                thr = np.nextafter(thr, np.float32(-np.inf))
            feature[t, i], missing[t, i], split[t, i] = node["feature_idx"], node["missing_go_to_left"], thr
            left[t, i] = new_id[int(node["left"])]
        depth = max(depth, int(nodes["depth"].max()))
        left[t, len(new_id) :] = np.arange(len(new_id), n)  # padding: unreachable leaves
    baseline = np.asarray(clf._baseline_prediction, np.float64).reshape(-1)
    base = np.zeros(len(labels), np.float32)
    for k, b in enumerate(baseline):
        base[labels.index(classes[1 if binary else k])] = b
    arrays = {"feature": feature, "left": left, "missing_left": missing, "split": split, "tree_class": tree_class, "baseline": base}
    return arrays, (T, n, depth)


class RhythmTrees(nn.Module):
    """(K, F) rhythm vectors (nan where undefined) -> (K, C) label log-probabilities of the boosted trees."""

    def __init__(self, trees: int, nodes: int, depth: int, num_features: int, num_labels: int):
        super().__init__()
        self.depth, self.num_features = depth, num_features  # the vector length the trees' feature indices refer to
        self.register_buffer("feature", torch.full((trees, nodes), -1, dtype=torch.int8))  # (T, N) -1 at leaves
        self.register_buffer("left", torch.zeros(trees, nodes, dtype=torch.int8))  # (T, N) right = left + 1
        self.register_buffer("missing_left", torch.zeros(trees, nodes, dtype=torch.int8))  # (T, N) where nan goes
        self.register_buffer("split", torch.zeros(trees, nodes))  # (T, N) threshold, or a leaf's value
        self.register_buffer("tree_class", torch.zeros(trees, dtype=torch.int8))  # (T,) the label a tree scores
        self.register_buffer("baseline", torch.zeros(num_labels))  # (C,)
        self.cross_fit: VectorCrossFit | None = None  # training only; never saved

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """vectors: (K, F) -> (K, C) log-probabilities (out of fold for known training records while training)."""
        T, N = self.feature.shape
        x = vectors.float()  # (K, F)
        feature, left = self.feature.long(), self.left.long()  # (T, N)
        missing = self.missing_left.float()  # (T, N) 1 where nan goes left (float: onnxruntime has no bool Where)
        offset = (torch.arange(T, device=x.device) * N)[None, :]  # (1, T)
        node = torch.zeros(x.shape[0], T, dtype=torch.long, device=x.device)  # (K, T)
        for _ in range(self.depth):
            idx = offset + node  # (K, T) flat node index
            f = feature.reshape(-1)[idx]  # (K, T), -1 at a leaf
            xv = torch.gather(x, 1, f.clamp_min(0))  # (K, T)
            le = (xv <= self.split.reshape(-1)[idx]).float()  # (K, T)
            go_left = torch.where(torch.isnan(xv), missing.reshape(-1)[idx], le) > 0.5  # (K, T)
            child = left.reshape(-1)[idx]  # (K, T)
            node = torch.where(go_left, child, child + 1)
            node = torch.where(f < 0, child, node)  # a leaf's `left` is itself
        value = self.split.reshape(-1)[offset + node]  # (K, T) leaf values
        onehot = nn.functional.one_hot(self.tree_class.long(), self.baseline.numel()).to(value.dtype)  # (T, C)
        logp = torch.log_softmax(self.baseline[None, :] + value @ onehot, dim=-1)  # (K, C)
        if self.training and self.cross_fit is not None:
            logp = self.cross_fit.replace(vectors, logp)
        return logp

    def load_arrays(self, arrays: dict[str, Any]) -> None:
        """Fill the buffers from trees_from_sklearn's arrays (numpy or torch), checking every shape first."""
        state = {k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()}
        want = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if want != got:
            raise ValueError(f"rhythm trees of shapes {got} do not fit this encoder's {want}: build the model with "
                             "the encoder.rhythm_trees the trees file records")
        if int(state["feature"].max()) >= self.num_features:
            raise ValueError(f"the trees split on feature {int(state['feature'].max())}, but the rhythm vector has "
                             f"{self.num_features} numbers: refit them on this encoder's rhythm vector")
        self.load_state_dict({k: v.to(getattr(self, k).dtype) for k, v in state.items()})
