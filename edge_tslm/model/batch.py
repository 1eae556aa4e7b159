"""Tokenise model inputs (text with <ts> markers + series) into padded tensors; targets get the loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from edge_tslm.constants import TS_TOKEN

IGNORE = -100


@dataclass
class TSBatch:
    input_ids: torch.Tensor  # (B, T) long, right-padded
    attention_mask: torch.Tensor  # (B, T) long
    series: torch.Tensor  # (B, S, L) float, z-normalised, zero-padded
    series_mask: torch.Tensor  # (B, S, L) bool; an all-False row is an absent series
    labels: torch.Tensor | None = None  # (B, T) long, IGNORE outside the target
    # (B, S, L) bool: samples a measurement of the series must not come from (a stream's filled gaps and noise
    # bursts; the rhythm vector leaves the beats near them out), or None when no sample is flagged
    series_exclude: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "TSBatch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        fields = ("input_ids", "attention_mask", "series", "series_mask", "labels", "series_exclude")
        return TSBatch(*(move(getattr(self, f)) for f in fields))


def render_prompt(tokenizer, text: str, chat_format: bool, system: str = "") -> str:
    """The text the LM sees before its answer: the backbone's chat template when it has one."""
    if chat_format and getattr(tokenizer, "chat_template", None):
        msgs = [{"role": "system", "content": system or "You read time series and answer questions about them."}]
        msgs.append({"role": "user", "content": text})
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return text


def encode_prompt(tokenizer, rendered: str) -> list[int]:
    """Token ids of a rendered prompt with exactly one BOS where the backbone expects one (never two)."""
    ids = tokenizer(rendered, add_special_tokens=False).input_ids
    bos = tokenizer.bos_token_id
    wants_bos = bos is not None and tokenizer("a").input_ids[:1] == [bos]
    if wants_bos and ids[:1] != [bos]:
        ids = [bos] + ids
    return ids


def encode_target(tokenizer, target: str) -> list[int]:
    """Target ids end with the backbone's end-of-turn token, so generation knows where to stop."""
    return tokenizer(target, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def collate(
    tokenizer,
    texts: Sequence[str],
    series: Sequence[Sequence[np.ndarray]],
    targets: Sequence[str] | None = None,
    *,
    chat_format: bool = True,
    system: str = "",
    untrusted: Sequence[Sequence[np.ndarray | None]] | None = None,
) -> TSBatch:
    """texts[i] holds one <ts> per series in series[i]; targets (if any) are what the loss is on. untrusted[i][s]:
    (L,) bool flags of series[i][s]'s samples a measurement must not come from, or None (TSBatch.series_exclude)."""
    ts_id = tokenizer.convert_tokens_to_ids(TS_TOKEN)
    rows, labels = [], []
    for i, (text, ser) in enumerate(zip(texts, series)):
        ids = encode_prompt(tokenizer, render_prompt(tokenizer, text, chat_format, system))
        n_ts = ids.count(ts_id)
        if n_ts != len(ser):
            raise ValueError(f"sample {i}: its text has {n_ts} {TS_TOKEN} markers but {len(ser)} series were given")
        lab = [IGNORE] * len(ids)
        if targets is not None:
            tgt = encode_target(tokenizer, targets[i])
            ids, lab = ids + tgt, lab + tgt
        rows.append(ids)
        labels.append(lab)
    B, T = len(rows), max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((B, T), pad, dtype=torch.long)
    attention = torch.zeros((B, T), dtype=torch.long)
    lab_t = torch.full((B, T), IGNORE, dtype=torch.long)
    for b, (r, l) in enumerate(zip(rows, labels)):
        input_ids[b, : len(r)] = torch.tensor(r)
        attention[b, : len(r)] = 1
        lab_t[b, : len(l)] = torch.tensor(l)
    S = max(1, max(len(s) for s in series))
    L = max([len(x) for s in series for x in s] or [1])
    ser_t = torch.zeros((B, S, L), dtype=torch.float32)
    mask_t = torch.zeros((B, S, L), dtype=torch.bool)
    for b, ser in enumerate(series):
        for s, x in enumerate(ser):
            if len(x) == 0:  # an all-False mask row means "absent": an empty series would vanish silently
                raise ValueError(f"sample {b} series {s} is empty; pass at least one patch of samples")
            ser_t[b, s, : len(x)] = torch.as_tensor(np.asarray(x, dtype=np.float32))
            mask_t[b, s, : len(x)] = True
    return TSBatch(input_ids, attention, ser_t, mask_t, lab_t if targets is not None else None,
                   _exclude_flags(series, untrusted, (B, S, L)))


def _exclude_flags(series: Sequence[Sequence[np.ndarray]], untrusted, shape: tuple[int, int, int]) -> torch.Tensor | None:
    """Per-series untrusted flags -> one (B, S, L) bool tensor padded with False; None when nothing is flagged.
    Every flag array is checked, flagged or not: a mis-shaped one is a caller's bug either way."""
    if untrusted is None:
        return None
    if len(untrusted) != len(series):
        raise ValueError(f"untrusted has {len(untrusted)} samples' flags for {len(series)} samples; pass one list per sample")
    out = torch.zeros(shape, dtype=torch.bool)
    for b, (ser, flags) in enumerate(zip(series, untrusted)):
        if len(flags) != len(ser):
            raise ValueError(f"sample {b}: untrusted has {len(flags)} flag arrays for {len(ser)} series; pass one (or None) per series")
        for s, (x, f) in enumerate(zip(ser, flags)):
            if f is None:
                continue
            if np.shape(f) != (len(x),):
                raise ValueError(f"sample {b} series {s}: untrusted flags have shape {np.shape(f)}, the series ({len(x)},); "
                                 "pass one flag per sample")
            out[b, s, : len(x)] = torch.as_tensor(np.asarray(f, dtype=bool))
    return out if bool(out.any()) else None
