"""What both variants share: freeze policy, parameter counts, the loss, generation and the classify path."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from edge_tslm.backbones import BackboneInfo
from edge_tslm.calibration import apply_offsets
from edge_tslm.config import TSLMConfig
from edge_tslm.constants import ANSWER_PREFIX
from edge_tslm.model.batch import IGNORE, TSBatch, collate, encode_target


@dataclass
class DecodeState:
    """What a decode step needs from the prefill: the KV cache and, for Flamingo, the window's media."""

    past_key_values: Any
    length: int  # tokens already in the cache
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class TSLMBase(nn.Module):
    def __init__(self, cfg: TSLMConfig, lm: nn.Module, tokenizer, info: BackboneInfo):
        super().__init__()
        self.cfg, self.tokenizer, self.info = cfg, tokenizer, info
        self.lm = lm
        self._prefix = None  # a PrefixCache while prefix caching is on (inference only; see prefix_caching)

    @contextlib.contextmanager
    def prefix_caching(self) -> Iterator[None]:
        """Reuse the media-free prompt prefix's KV across calls inside this block (weights must not change)."""
        from edge_tslm.model.prefix_cache import PrefixCache

        prev, self._prefix = self._prefix, PrefixCache()
        try:
            yield
        finally:
            self._prefix = prev

    def set_prefix_caching(self, enabled: bool) -> None:
        """For long-lived inference objects (pipeline, runtime backend) that never change the weights."""
        from edge_tslm.model.prefix_cache import PrefixCache

        self._prefix = PrefixCache() if enabled else None

    # ------------------------------------------------------------------ backbone parts
    def decoder(self) -> nn.Module:
        lm = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        return lm.get_decoder()

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        lm = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        logits = lm.get_output_embeddings()(hidden)
        cap = getattr(lm.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    # ------------------------------------------------------------------ freeze policy
    def freeze_backbone(self) -> None:
        """Freeze everything, assert nothing trains, then unfreeze the adapter (open_flamingo's habit)."""
        self.requires_grad_(False)
        assert not any(p.requires_grad for p in self.parameters())
        for name, p in self.named_parameters():
            p.requires_grad_(self.is_adapter_param(name) and not name.startswith(self.PRETRAINED_PARTS)
                             and (self.cfg.train_token_rows or not name.startswith("new_tokens")))
        assert not any(p.requires_grad for n, p in self.named_parameters() if n.startswith("lm.") and "lora_" not in n)

    # Adapter parts trained before the TSLM and kept frozen with the LM (saved in the adapter all the same)
    PRETRAINED_PARTS: tuple[str, ...] = ("series_encoder.stem.", "series_encoder.trees.")

    @staticmethod
    def is_adapter_param(name: str) -> bool:
        return not name.startswith("lm.") or "lora_" in name

    def parameter_counts(self) -> dict[str, dict[str, int]]:
        """Trainable and frozen parameters per top-level part (tied weights counted once)."""
        out: dict[str, dict[str, int]] = {}
        seen: set[int] = set()
        for name, p in self.named_parameters(remove_duplicate=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            part = "lora" if "lora_" in name else name.split(".")[0]
            d = out.setdefault(part, {"trainable": 0, "frozen": 0})
            d["trainable" if p.requires_grad else "frozen"] += p.numel()
        return out

    # ------------------------------------------------------------------ to implement per variant
    def hidden_states(self, batch: TSBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> hidden (B, T', D) and labels aligned with it (B, T') (or None)."""
        raise NotImplementedError

    def prefill(self, batch: TSBatch) -> tuple[torch.Tensor, DecodeState]:
        """-> logits of the last prompt token (B, V) and the state to continue from."""
        raise NotImplementedError

    def decode(self, input_ids: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        """input_ids (B, T) continuing the cache -> logits (B, T, V)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training
    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute activations in the backward (LM layers and encoder blocks): less training memory, ~1 more forward."""
        from edge_tslm.model.checkpointing import set_activation_checkpointing

        set_activation_checkpointing(self, self.lm, enabled)

    def loss(self, batch: TSBatch) -> torch.Tensor:
        """Cross-entropy on the target tokens only (the prompt and the series carry no loss)."""
        hidden, labels = self.hidden_states(batch)
        assert labels is not None, "loss needs a batch collated with targets"
        pred_h = hidden[:, :-1]  # (B, T-1, D): position t predicts token t+1
        tgt = labels[:, 1:]
        keep = tgt != IGNORE
        logits = self.head(pred_h[keep]).float()  # (K, V): only where there is a target
        return torch.nn.functional.cross_entropy(logits, tgt[keep])

    # ------------------------------------------------------------------ inference
    def _batch(self, text: str, series: Sequence[np.ndarray], untrusted: Sequence[np.ndarray | None] | None = None) -> TSBatch:
        b = collate(self.tokenizer, [text], [list(series)], chat_format=self.cfg.chat_format, system=self.cfg.pre_prompt,
                    untrusted=None if untrusted is None else [list(untrusted)])
        return b.to(self.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def stop_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        gen = getattr(self.lm, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None)
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.cfg.chat_format:
            from edge_tslm.constants import TURN_START_TOKEN

            turn = self.tokenizer.convert_tokens_to_ids(TURN_START_TOKEN)
            if isinstance(turn, int) and turn != self.tokenizer.unk_token_id:
                ids.add(turn)
        return {i for i in ids if i is not None}

    @torch.no_grad()
    def generate(
        self,
        text: str,
        series: Sequence[np.ndarray],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        untrusted: Sequence[np.ndarray | None] | None = None,
        ground: Callable[[str], str | None] | None = None,
        draft: Callable[[list[int]], list[int]] | None = None,
    ) -> str:
        """Greedy (temperature 0) or nucleus sampling; stops at the backbone's end tokens. untrusted: per series, (L,)
        bool flags of samples a measurement must not come from (a stream's filled gaps), or None. ground: called with
        the text so far after each token; text it returns is written next instead of sampled (the measured numbers of
        edge_tslm.rationale_grounding), in the decoder call of the token before it. draft: called with the token ids
        so far; greedy decoding checks the ids it returns in the same call and keeps them as far as they are its
        choice (edge_tslm.rationale_drafting; ignored when sampling, or with a cache that cannot be cut back)."""
        from edge_tslm.model.prefix_cache import croppable
        from edge_tslm.rationale_drafting import certain_tokens, keep_drafted

        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        t0 = time.perf_counter()
        logits, state = self.prefill(self._batch(text, series, untrusted))
        t1 = time.perf_counter()
        n_forced = n_drafted = n_kept = calls = 0
        if draft is not None and (temperature > 0 or not croppable(state.past_key_values)):
            draft = None
        stops, out, forced = self.stop_ids(), [], []

        def grounded() -> list[int]:  # the text to write after `out`, if the grounder has one, within the limit
            value = ground(self.tokenizer.decode(out, skip_special_tokens=True)) if ground is not None else None
            return self.encode_text(value)[: max_new_tokens - len(out)] if value else []

        done = False
        while len(out) < max_new_tokens and not done:
            certain = certain_tokens(out, forced, max_new_tokens, lambda: _pick(logits[0].float(), temperature, top_p, gen),
                                     stops, grounded)
            if certain is None:  # an end token
                break
            (step, written), forced = certain, []
            n_forced += written
            drafted = draft(out)[: max_new_tokens - len(out)] if draft is not None else []
            c = len(step)
            step_logits, state = self.decode(torch.tensor([step + drafted], device=self.device), state)  # (1, T, V)
            greedy = step_logits[0, c - 1 : -1].float().argmax(-1).tolist()  # the choice before each drafted token
            kept, forced, written, done = keep_drafted(drafted, greedy, out, forced, grounded, stops)
            n_drafted, n_kept, n_forced, calls = n_drafted + len(drafted), n_kept + kept, n_forced + written, calls + 1
            logits = step_logits[:, c - 1 + kept]
            if kept < len(drafted):  # the cache holds the rejected tokens too: cut it back
                state.past_key_values.crop(kept - len(drafted))  # (negative: the number of positions to remove)
                state = replace(state, length=state.length - len(drafted) + kept)
        # what the ONNX backend's last_timings report, for the torch backend's
        self.last_generate = {"prefill_ms": (t1 - t0) * 1000, "decode_ms": (time.perf_counter() - t1) * 1000,
                              "new_tokens": float(len(out)), "decode_calls": float(calls), "forced_tokens": float(n_forced),
                              "drafted_tokens": float(n_drafted), "accepted_tokens": float(n_kept)}
        return self.tokenizer.decode(out, skip_special_tokens=True)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens): grounded values and rationale drafts are made of these."""
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    @torch.no_grad()
    def classify(self, text: str, series: Sequence[np.ndarray], labels: Sequence[str],
                 untrusted: Sequence[np.ndarray | None] | None = None, scoring: str = "full") -> dict[str, float]:
        """Log-likelihood of 'Answer: <label><eos>' for each label (plus the artifact's fitted label offset, see
        edge_tslm.calibration), sharing one prefill of the prompt.

        The tokens every label's answer starts with ('Answer:') are scored once after the prefill (they count in
        every label's score, so a label's score does not depend on the other labels); the rest of each label
        is scored in one batched decode call over a copy of the cache per label. untrusted: as in `generate`.
        scoring="labels": log p(label | the answer is one of the labels) instead (edge_tslm.runtime.label_trie), from
        the same logits: what the ONNX runtime computes with its label head.
        """
        from edge_tslm.runtime.label_trie import branching, check_scoring, children, label_scores

        check_scoring(scoring)
        if not labels:
            raise ValueError("classify needs at least one allowed label")
        conts = [encode_target(self.tokenizer, f"{ANSWER_PREFIX} {lab}") for lab in labels]
        shared = _common_prefix(conts)
        if shared == min(len(c) for c in conts):
            shared -= 1  # keep at least one token per label to score
        last, state = self.prefill(self._batch(text, series, untrusted))  # (1, V): predicts the first answer token
        prefix_lp = torch.zeros((), device=self.device)
        if shared:  # score the shared tokens once (B=1); they belong to every label's likelihood
            pre = torch.tensor([conts[0][:shared]], dtype=torch.long, device=self.device)
            pre_logits, state = self.decode(pre, state)  # (1, shared, V)
            prefix_lp = torch.log_softmax(last[0].float(), -1)[pre[0, 0]]
            if shared > 1:
                lp = torch.log_softmax(pre_logits[0, :-1].float(), -1)  # (shared - 1, V)
                prefix_lp = prefix_lp + lp.gather(-1, pre[0, 1:, None]).sum()
            last = pre_logits[:, -1]  # (1, V)
        rest = [c[shared:] for c in conts]
        K, T = len(rest), max(len(r) for r in rest)
        ids = torch.full((K, T), self.tokenizer.eos_token_id, dtype=torch.long, device=self.device)
        for k, r in enumerate(rest):
            ids[k, : len(r)] = torch.tensor(r)
        first_lp = torch.log_softmax(last[0].float(), -1)  # (V,)
        scores = first_lp[ids[:, 0]] + prefix_lp  # (K,)
        if T > 1:
            state = self.repeat_state(state, K)
            logits, _ = self.decode(ids[:, :-1], state)  # (K, T-1, V)
            lp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]  # (K, T-1)
            lens = torch.tensor([len(r) for r in rest], device=self.device)
            valid = torch.arange(1, T, device=self.device)[None] < lens[:, None]
            scores = scores + (lp * valid).sum(-1)
        if scoring == "labels":  # the logits after each prefix where the labels part ways
            after = {tuple(conts[0][:shared]): last[0]}  # (V,) per prefix
            for k, r in enumerate(rest):
                for t in range(1, len(r)):
                    after.setdefault(tuple(conts[k][: shared + t]), logits[k, t - 1])
            nxt = children(conts)
            picked = {p: {tok: float(after[p][tok]) for tok in nxt[p]} for p in branching(conts)}
            scores = torch.as_tensor(label_scores(conts, picked))
        raw = {lab: float(s) for lab, s in zip(labels, scores)}
        return apply_offsets(raw, self.cfg.labels, self.cfg.label_offsets)

    def repeat_state(self, state: DecodeState, k: int) -> DecodeState:
        cache = state.past_key_values
        cache.batch_repeat_interleave(k)
        extras = {n: t.repeat_interleave(k, dim=0) for n, t in state.extras.items()}
        return DecodeState(cache, state.length, extras)


def _common_prefix(seqs: list[list[int]]) -> int:
    n = 0
    while all(len(s) > n for s in seqs) and len({s[n] for s in seqs}) == 1:
        n += 1
    return n


def _pick(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, -1)
    sorted_p, idx = probs.sort(descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p
    sorted_p = sorted_p * keep
    choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)
    return int(idx[choice])
