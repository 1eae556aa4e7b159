"""Drafts of a rationale's next tokens from the window's own template rationales (numpy only).

A rationale model writes what it was trained on: the template of `edge_tslm.data.rationale`, filled with numbers
measured on the window. The stream measures those numbers too (it grounds them, `edge_tslm.rationale_grounding`),
so it can write the template's text for this window, once per label, before the model starts. While the model
generates, the drafter looks up where the last tokens it wrote occur in those texts and proposes what follows
there (prompt-lookup decoding, with the templates as the "prompt"). The backend checks a draft in the same decoder
call as the next token and keeps the part the model's greedy choice agrees with, so the text is the one greedy
decoding writes without drafts; only the number of decoder calls changes. (Up to rounding: a call over several
tokens runs onnxruntime's kernels for several rows, whose logits can differ from a one-row call's in the last bits;
where two tokens nearly tie, e.g. a digit of a number the model guesses, the choice can flip. Grounded rationales,
whose numbers are measured, came out letter for letter the same on every benchmark window:
benchmarks/results/rationale_drafting.md.) It pays where a decoder call over k tokens costs much less than k calls
over one (benchmarks/decode_width.py): its weights are read once for all k rows.

Used by ``OnnxBackend.generate`` (``draft=``) through the Streamer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge_tslm.data.rationale import ecg_rationale_text, har_features, har_rationale_text
from edge_tslm.heartbeats import rhythm_features

__all__ = ["TemplateDrafter", "certain_tokens", "keep_drafted", "rationale_drafter", "template_rationales"]


@dataclass
class TemplateDrafter:
    """``drafter(token ids written so far) -> ids likely to follow`` (at most ``max_tokens``; [] when none).

    The longest tail of the output (``max_match`` tokens down to ``min_match``) is looked up in the references in
    order (the decided label's first); the tokens after its first occurrence are the draft. Before ``min_match``
    tokens are written, a reference that starts with them is continued."""

    references: list[list[int]]
    max_tokens: int = 16
    max_match: int = 4
    min_match: int = 2

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or not 1 <= self.min_match <= self.max_match:
            raise ValueError(f"drafts need max_tokens >= 1 and 1 <= min_match <= max_match (got {self.max_tokens}, "
                             f"{self.min_match}, {self.max_match})")
        self._refs = [np.asarray(r, np.int64) for r in self.references if len(r)]

    def __call__(self, out: Sequence[int]) -> list[int]:
        n_out = len(out)
        if n_out < self.min_match:
            for ref in self._refs:
                if len(ref) > n_out and list(ref[:n_out]) == list(out):
                    return ref[n_out : n_out + self.max_tokens].tolist()
            return []
        for n in range(min(self.max_match, n_out), self.min_match - 1, -1):
            tail = np.asarray(out[-n:], np.int64)
            for ref in self._refs:
                if len(ref) <= n:
                    continue
                # (len(ref) - n, n) windows over the reference: where the tail occurs with something after it
                windows = np.lib.stride_tricks.sliding_window_view(ref[:-1], n)
                hits = np.flatnonzero((windows == tail).all(axis=1))
                if hits.size:
                    start = int(hits[0]) + n
                    return ref[start : start + self.max_tokens].tolist()
        return []


def template_rationales(ecg: bool, signal: np.ndarray, fs: float, channels: Sequence[str], unit: str,
                        labels: Sequence[str], exclude: np.ndarray | None = None) -> list[str]:
    """The training template's rationale of this window for each label, in the order given: signal (C, L) at `fs`
    as the model reads it (an ECG model's first lead, `exclude` its untrusted samples; a HAR model's C axes)."""
    x = np.asarray(signal, dtype=np.float64)
    if ecg:
        f = rhythm_features(x[0], fs, exclude)
        return [ecg_rationale_text(f, lab) for lab in labels]
    h = har_features(x, fs)
    return [har_rationale_text(h, channels, unit, lab) for lab in labels]


def rationale_drafter(encode: Callable[[str], list[int]], ecg: bool, signal: np.ndarray, fs: float,
                      channels: Sequence[str], unit: str, labels: Sequence[str], first: str | None = None,
                      exclude: np.ndarray | None = None, max_tokens: int = 16) -> TemplateDrafter:
    """A drafter for one window's rationale: the template texts of every label (`first`, the stream's decision,
    looked up first) tokenized with `encode` (the backend tokenizer's plain text encoding)."""
    order = [first] if first in labels else []
    order += [lab for lab in labels if lab != first]
    texts = template_rationales(ecg, signal, fs, channels, unit, order, exclude)
    return TemplateDrafter([list(encode(t)) for t in texts], max_tokens=max_tokens)


def certain_tokens(out: list[int], forced: list[int], limit: int, pick: Callable[[], int], stops: Sequence[int],
                   grounded: Callable[[], list[int]]) -> tuple[list[int], int] | None:
    """The tokens a decoder call certainly feeds, appended to `out`: the written text pending (`forced`; only its last
    token's logits count) or the next choice (`pick()`), then whatever the grounder writes after them, chained into
    the same call, all within `limit` tokens of text. -> (those tokens, how many of them were written text), or None
    when the choice is an end token (in `stops`). The pending text is used up: the caller's `forced` is [] after."""
    if forced:
        step = list(forced[: limit - len(out)])
        written = len(step)
    else:
        nxt = pick()
        if nxt in stops:
            return None
        step, written = [nxt], 0
    out.extend(step)
    while len(out) < limit and (more := grounded()):
        out.extend(more)
        step += more
        written += len(more)
    return step, written


def keep_drafted(drafted: Sequence[int], greedy: Sequence[int], out: list[int], forced: list[int],
                 grounded: Callable[[], list[int]], stops: Sequence[int] | None) -> tuple[int, list[int], int, bool]:
    """Walk a checked draft: each drafted token is kept while it is what grounded greedy decoding writes there, the
    grounder's pending text (`forced`) where there is some, else the greedy choice (`greedy[i]`, the argmax of the
    logits before drafted[i]). Kept tokens are appended to `out`, and after each one the grounder is asked again
    (`grounded()` -> text to write next, or []). stops: end tokens, which end the text when greedy picks one (None:
    decode on). -> (drafted tokens kept, text still to write, written tokens kept, the text ended)."""
    kept = written = 0
    for d, g in zip(drafted, greedy):
        if forced:
            if d != forced[0]:
                break
            forced = forced[1:]
            written += 1
        else:
            if g != d:
                break
            if stops is not None and d in stops:
                return kept, forced, written, True
        out.append(d)
        kept += 1
        if not forced:
            forced = grounded()
    return kept, forced, written, False
