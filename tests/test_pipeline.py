"""TSLMPipeline: the answer, scores and latency of one signal, and a rationale only when asked for, grounded in the
signal's measured numbers for ECG and HAR models unless asked not to, and drafted from their template text."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from conftest import build_tiny  # noqa: E402
from edge_tslm.data.hapt import HAR_TASK  # noqa: E402
from edge_tslm.data.physionet2017 import ECG_TASK  # noqa: E402
from edge_tslm.pipeline import TSLMPipeline  # noqa: E402
from edge_tslm.rationale_grounding import Grounder  # noqa: E402
from test_heartbeats import _synthetic_ecg  # noqa: E402


def _capture(model, monkeypatch):
    seen = {}
    real = model.generate

    def generate(text, series, **kw):
        seen.update(kw)
        return real(text, series, **{**kw, "max_new_tokens": 4})

    monkeypatch.setattr(model, "generate", generate)
    return seen


@pytest.mark.parametrize("task", ["ecg_rhythm", "har"])
def test_answer_scores_and_a_grounded_rationale_on_demand(task, monkeypatch):
    spec = ECG_TASK if task == "ecg_rhythm" else HAR_TASK
    model = build_tiny("flamingo", labels=spec.labels, task=task, pre_prompt=spec.pre_prompt)
    pipe = TSLMPipeline(model)
    seen = _capture(model, monkeypatch)
    if task == "ecg_rhythm":
        x, meta = _synthetic_ecg(np.full(30, 0.8), 300.0)[0][None].astype(np.float32), {"fs": 300.0, "unit": "mV"}
        names = {"duration_s", "beats", "rate_bpm", "rr_cv", "rmssd_ms", "jumps_pct", "regularity"}
    else:
        rng = np.random.default_rng(0)
        x = (rng.normal(0, 0.2, (3, 128)) + np.array([[0.0], [0.0], [1.0]])).astype(np.float32)
        meta = {"fs": 50.0, "unit": "g", "channels": ["x", "y", "z"]}
        names = {"mean_x", "mean_y", "mean_z", "gravity_axis", "movement", "magnitude_std", "dominant_hz"}
    out = pipe(x, meta)
    assert set(out) == {"answer", "rationale", "scores", "latency_ms"} and out["rationale"] is None
    assert out["answer"] in spec.labels and sum(out["scores"].values()) == pytest.approx(1.0)
    assert not seen  # no generation without a rationale
    out = pipe(x, meta, rationale=True)
    assert isinstance(out["rationale"], str) and isinstance(seen["ground"], Grounder)
    assert {s.name for s in seen["ground"].slots} == names
    tok = model.tokenizer  # the rationale is drafted from the signal's template text, the answer's first
    assert tok.decode(seen["draft"].references[0]).endswith(f"Answer: {out['answer']}")
    assert len(seen["draft"].references) == len(spec.labels)
    pipe(x, meta, rationale=True, ground_numbers=False, draft_tokens=0)
    assert seen["ground"] is None and seen["draft"] is None
    with pytest.raises(ValueError, match="draft_tokens"):
        pipe(x, meta, rationale=True, draft_tokens=-1)
