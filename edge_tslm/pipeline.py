"""TSLMPipeline: a Hugging Face-style pipeline over a trained artifact (torch backend).

    pipe = TSLMPipeline.from_pretrained("models/flamingo-har")
    pipe(signal, meta, prompt="...") -> {"answer", "rationale", "scores", "latency_ms"}
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_tslm.prompts import parse_answer
from edge_tslm.signals import SignalMeta, validate
from edge_tslm.train.examples import example_from_input, layout_kwargs


class TSLMPipeline:
    def __init__(self, model):
        self.model = model
        self.labels = tuple(model.cfg.labels)
        if hasattr(model, "set_prefix_caching"):
            model.set_prefix_caching(True)  # the pipeline never changes weights: reuse the prompt's media-free prefix

    @classmethod
    def from_pretrained(cls, path: str | Path, *, backbone=None, device: str = "cpu") -> "TSLMPipeline":
        from edge_tslm.model.artifact import from_pretrained

        return cls(from_pretrained(path, backbone=backbone, device=device))

    def __call__(
        self,
        signal: np.ndarray | list,
        meta: SignalMeta | dict,
        prompt: str | None = None,
        *,
        rationale: bool = False,
        labels: tuple[str, ...] | None = None,
        gait_reference: np.ndarray | tuple[float, float, float] | None = None,
        ground_numbers: bool = True,
        draft_tokens: int = 16,
    ) -> dict[str, Any]:
        """Classify by label likelihood when the model knows its labels (fast path); generate otherwise.
        The rationale is generated only when asked for; an ECG or HAR model's states the numbers measured on the
        signal where it states numbers (edge_tslm.rationale_grounding; ground_numbers=False: the model's own), and
        up to `draft_tokens` tokens of its template text are drafted per decoder call (edge_tslm.rationale_drafting;
        greedy keeps what it agrees with, so the same text in fewer calls; 0: none).
        A har_gait model needs the wearer's `gait_reference` (edge_tslm.gait_frame.gait_reference over ~30 s of
        them walking, or a stream summary's gait_frame)."""
        cfg = self.model.cfg
        if draft_tokens < 0:
            raise ValueError(f"draft_tokens must be >= 0 (0: no drafted tokens), got {draft_tokens}")
        if cfg.task == "har_gait":
            if gait_reference is None:
                raise ValueError("this model reads windows in the wearer's gait frame: pass gait_reference=(x, y, z), "
                                 "from edge_tslm.gait_frame.gait_reference(<~30 s of the wearer walking, (3, N) in g>) "
                                 "or a stream summary's gait_frame.reference")
            from edge_tslm.gait_frame import to_gait_frame

            signal = to_gait_frame(np.asarray(signal, dtype=np.float32), np.asarray(gait_reference, dtype=np.float64))
        labels = labels or self.labels
        if prompt is None:
            prompt = _default_question(cfg)
        inp = validate(signal, meta, prompt, min_length=cfg.encoder.patch_len)
        lat: dict[str, float] = {}
        t = time.perf_counter()
        ex = example_from_input(inp, **layout_kwargs(cfg))
        lat["prepare"] = _ms(t)
        scores: dict[str, float] = {}
        t = time.perf_counter()
        if labels:
            logp = self.model.classify(ex.text, ex.series, labels)
            z = np.array(list(logp.values()))
            probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            scores = {k: float(p) for k, p in zip(logp, probs)}
            answer: str | None = max(scores, key=scores.get)
            lat["classify"] = _ms(t)
        else:
            text = self.model.generate(ex.text, ex.series, max_new_tokens=32)
            answer = parse_answer(text) or text.strip()
            lat["generate"] = _ms(t)
        why = None
        if rationale:
            t = time.perf_counter()
            rex = example_from_input(inp, rationale=True, **layout_kwargs(cfg))
            ground = draft = None
            ecg, templated = str(cfg.task).startswith("ecg"), str(cfg.task).startswith(("ecg", "har"))
            if ground_numbers and templated:
                from edge_tslm.rationale_grounding import rationale_grounder

                ground = rationale_grounder(ecg, inp.signal, inp.meta.fs, inp.meta.channels, inp.meta.unit)
            if draft_tokens > 0 and labels and templated:
                from edge_tslm.rationale_drafting import rationale_drafter

                draft = rationale_drafter(self.model.encode_text, ecg, inp.signal,
                                          inp.meta.fs, inp.meta.channels, inp.meta.unit, labels, answer,
                                          max_tokens=draft_tokens)
            why = self.model.generate(rex.text, rex.series, max_new_tokens=160, ground=ground, draft=draft)
            lat["rationale"] = _ms(t)
        lat["total"] = float(sum(lat.values()))
        return {"answer": answer, "rationale": why, "scores": scores, "latency_ms": lat}


def _default_question(cfg) -> str:
    from edge_tslm.train.tasks import get_task

    for name in ("har", "har_gait", "ecg_rhythm", "synthetic_ecg", "tsqa"):
        spec = get_task(name).spec
        if spec.name == cfg.task:
            return spec.question
    raise ValueError("this model has no default question: pass prompt=...")


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)
