"""Evaluation by the classify path (label likelihoods) or the generation path (parsed 'Answer:'), with
macro-F1, accuracy, per-class F1, the confusion matrix and, for ECG rhythm, the PhysioNet 2017 score."""

from __future__ import annotations

import contextlib
import time
from typing import Iterable, Sequence

import torch

from edge_tslm.data.sample import Sample
from edge_tslm.metrics import challenge_score, classification_report
from edge_tslm.prompts import parse_answer
from edge_tslm.train.examples import layout_kwargs, make_example

ECG_TASKS = ("ecg_rhythm", "physionet2017")


@torch.no_grad()
def predict(model, sample: Sample, labels: Sequence[str], mode: str = "classify", rationale: bool = False,
            scoring: str = "full"):
    """-> (predicted label or None, scores per label or {}, generated text or ''). scoring: classify's label scoring,
    "full" or "labels" (edge_tslm.runtime.label_trie)."""
    cfg = model.cfg
    ex = make_example(sample, pre_prompt="", rationale=rationale, **layout_kwargs(cfg))
    if mode == "classify":
        scores = model.classify(ex.text, ex.series, labels, scoring=scoring)
        return max(scores, key=scores.get), scores, ""
    if mode == "generate":
        text = model.generate(ex.text, ex.series, max_new_tokens=160 if rationale else 24)
        return parse_answer(text, labels), {}, text  # an empty or malformed answer is None: wrong, never right
    raise ValueError(f"mode must be 'classify' or 'generate', got {mode!r}")


@torch.no_grad()
def label_scores(model, samples: Sequence[Sample], labels: Sequence[str], *, limit: int = 0, progress: bool = False):
    """-> (scores (N, C) as classify returns them, true class index (N,)): what `edge-tslm calibrate` fits offsets to."""
    import numpy as np

    n = min(len(samples), limit) if limit else len(samples)
    index = {lab: i for i, lab in enumerate(labels)}
    scores, y = np.zeros((n, len(labels))), np.zeros(n, np.int64)
    caching = model.prefix_caching() if hasattr(model, "prefix_caching") else contextlib.nullcontext()
    with caching:
        for i in range(n):
            s = samples[i]
            if s.label not in index:
                raise ValueError(f"sample {i} is labelled {s.label!r}, which is not among the labels {list(labels)}")
            _, sc, _ = predict(model, s, labels)
            scores[i] = [sc[lab] for lab in labels]
            y[i] = index[s.label]
            if progress and (i + 1) % 50 == 0:
                print(f"  {i + 1}/{n} scored", flush=True)
    return scores, y


def evaluate(
    model,
    samples: Iterable[Sample],
    labels: Sequence[str],
    *,
    mode: str = "classify",
    task: str = "",
    limit: int = 0,
    progress: bool = False,
    scoring: str = "full",
    keep_predictions: bool = False,
) -> dict:
    """Metrics over samples; predictions that are not an allowed label count as wrong. keep_predictions: the report
    also holds every sample's prediction ("predictions", edge_tslm.score_intervals.prediction_record)."""
    y_true, y_pred, ids, n_invalid, t0 = [], [], [], 0, time.time()
    samples = list(samples) if not isinstance(samples, Sequence) else samples
    n = min(len(samples), limit) if limit else len(samples)
    caching = model.prefix_caching() if hasattr(model, "prefix_caching") else contextlib.nullcontext()
    with caching:  # the prompt text before the first series is computed once, not once per sample
        for i in range(n):
            s = samples[i]
            pred, _, _ = predict(model, s, labels, mode, scoring=scoring)
            y_true.append(s.label)
            y_pred.append(pred if pred is not None else "<invalid>")
            ids.append(s.group)
            n_invalid += pred is None
            if progress and (i + 1) % 50 == 0:
                print(f"  {i + 1}/{n} evaluated", flush=True)
    rep = classification_report(y_true, y_pred, labels)
    rep["confusion"] = rep.pop("confusion_matrix")
    rep["n_invalid"] = n_invalid
    rep["mode"] = mode
    if mode == "classify":
        rep["label_scoring"] = scoring
    rep["seconds"] = round(time.time() - t0, 1)
    if task in ECG_TASKS:
        rep["challenge_score"] = challenge_score(y_true, y_pred, all_labels=list(labels) + ["<invalid>"])
    if keep_predictions:
        from edge_tslm.score_intervals import prediction_record

        rep["predictions"] = prediction_record(ids, y_true, y_pred, labels)
    return rep
