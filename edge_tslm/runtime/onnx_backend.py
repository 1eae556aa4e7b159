"""The ONNX Runtime backend: an exported edge-tslm artifact run without torch (numpy + onnxruntime + tokenizers).

The artifact is what ``edge_tslm.export.export_artifact(model, "onnx", out, decoder=True)`` writes::

    encoder.onnx    series (K, L) f32, series_mask (K, L) bool, series_index (K,) i64 -> latents (K, N, D)
    prefill.onnx    input_ids, attention_mask, media (1, S*N, D), ts_positions -> last-token logits,
                    present K/V per layer, cross K/V per fusion block
    decode.onnx     one token + past K/V + cross K/V -> logits (B, 1, V), present K/V
    config.json     the TSLMConfig (labels, fs, task, pre_prompt, chat_format, ...)
    tokenizer/      tokenizer.json (+ tokenizer_config.json, chat_template.jinja)

Per window: ``encode`` runs the encoder once over all series; ``classify`` runs one prefill (the window's
cross K/V are computed there, once), scores the ``Answer:`` tokens every label shares once, then the rest of
each label (+ eos) with one decode call per token position over the cache tiled to one row per label;
``generate`` is greedy with the KV cache. The numbers are those of ``FlamingoTSLM.classify`` / ``generate``
(see tests/test_runtime_onnx.py for the parity it is held to).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from edge_tslm.config import TSLMConfig
from edge_tslm.constants import (
    ANSWER_PREFIX,
    CONFIG_FILE,
    ONNX_LATENTS,
    ONNX_SERIES,
    ONNX_SERIES_INDEX,
    ONNX_SERIES_MASK,
    TOKENIZER_DIR,
    TURN_START_TOKEN,
    TS_TOKEN,
)
from edge_tslm.export import spec
from edge_tslm.runtime.backend import BackendUnavailable, Encoded
from edge_tslm.runtime.tokenizer import PromptTokenizer

__all__ = ["OnnxBackend", "ABSENT"]

ABSENT = 1 << 30  # ts_positions value of a series slot with no <ts> token (FlamingoTSLM's ABSENT)
GENERATION_CONFIG = "generation_config.json"


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _common_prefix(seqs: list[list[int]]) -> int:
    n = 0
    while all(len(s) > n for s in seqs) and len({s[n] for s in seqs}) == 1:
        n += 1
    return n


class _State:
    """The decoder's cache after some tokens: past K/V per layer (B, Hkv, P, d) and the window's cross K/V."""

    __slots__ = ("past", "cross", "ts_pos", "length")

    def __init__(self, past: list[np.ndarray], cross: list[np.ndarray], ts_pos: np.ndarray, length: int) -> None:
        self.past, self.cross, self.ts_pos, self.length = past, cross, ts_pos, length

    def take(self, rows: Sequence[int]) -> "_State":
        """The state of these rows (a row may repeat): B -> len(rows)."""
        idx = np.asarray(rows, np.int64)
        pick = lambda a: np.take(a, idx, axis=0)  # noqa: E731
        return _State([pick(a) for a in self.past], [pick(a) for a in self.cross], pick(self.ts_pos), self.length)


class OnnxBackend:
    """A Backend (see edge_tslm.runtime.backend) over an exported artifact directory."""

    name = "onnx"

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        use_jinja: bool | None = None,
    ) -> None:
        path = Path(path)
        missing = [f for f in ("encoder.onnx", "prefill.onnx", "decode.onnx", CONFIG_FILE) if not (path / f).is_file()]
        if not (path / TOKENIZER_DIR / "tokenizer.json").is_file():
            missing.append(f"{TOKENIZER_DIR}/tokenizer.json")
        if missing:
            raise BackendUnavailable(
                f"{path} lacks {', '.join(missing)}; export it with `edge-tslm export --target onnx --decoder` "
                "(encoder + fused decoder + tokenizer)"
            )
        self.path = path
        self.cfg = TSLMConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
        if self.cfg.variant != "flamingo":
            raise BackendUnavailable(f"{path}: the ONNX backend runs Flamingo artifacts, not {self.cfg.variant!r}")
        self.labels = tuple(self.cfg.labels)
        self.fs = float(self.cfg.fs)
        self.max_seconds = float(self.cfg.max_seconds)
        self.min_length = int(self.cfg.encoder.patch_len)
        self.task = str(self.cfg.task)
        self.question = ""
        self.last_timings: dict[str, float] = {}

        self.tokenizer = PromptTokenizer(path / TOKENIZER_DIR, use_jinja=use_jinja)
        self.ts_id = self.tokenizer.token_id(TS_TOKEN)
        if self.tokenizer.eos_token_id is None:
            raise BackendUnavailable(f"{path / TOKENIZER_DIR}: no eos_token in tokenizer_config.json")
        self.stop_ids = self._stop_ids()

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        prov = list(providers) if providers else ["CPUExecutionProvider"]
        self.providers = prov
        sess = lambda f: ort.InferenceSession(str(path / f), opts, providers=prov)  # noqa: E731
        self.encoder, self.prefill_sess, self.decode_sess = sess("encoder.onnx"), sess("prefill.onnx"), sess("decode.onnx")
        # I/O names, read from the graphs (their order is the export's: layer by layer, key then value).
        self._pre_out = [o.name for o in self.prefill_sess.get_outputs()]
        self._dec_in = [i.name for i in self.decode_sess.get_inputs()]
        self._dec_out = [o.name for o in self.decode_sess.get_outputs()]
        self._pre_in = {i.name for i in self.prefill_sess.get_inputs()}
        self._present = [n for n in self._pre_out if n.startswith("present_")]
        self._cross = [n for n in self._pre_out if n.startswith("cross_")]
        self._past_in = [n for n in self._dec_in if n.startswith("past_")]
        self._cross_in = [n for n in self._dec_in if n.startswith("cross_")]
        expect_past = [n.replace("present_", "past_", 1) for n in self._present]
        if expect_past != self._past_in or self._cross != self._cross_in or self._dec_out[0] != spec.DEC_LOGITS:
            raise BackendUnavailable(f"{path}: prefill.onnx and decode.onnx disagree on the KV layout; re-export")
        self.num_latents = int(self.cfg.resampler.num_latents)
        self.dim = int(self.cfg.encoder.dim)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        device: str = "cpu",
        use_jinja: bool | None = None,
    ) -> "OnnxBackend":
        """threads: ORT intra-op threads (None: its default). providers: ORT execution providers (default CPU);
        device: "cpu" | "cuda" | "auto" picks them when ``providers`` is not given ("auto": CUDA when this
        onnxruntime build has it, else CPU)."""
        if providers is None and device != "cpu":
            have = ort.get_available_providers()
            if device == "cuda" and "CUDAExecutionProvider" not in have:
                raise BackendUnavailable(f"this onnxruntime has no CUDAExecutionProvider ({have}); pip install onnxruntime-gpu")
            if device in ("cuda", "auto") and "CUDAExecutionProvider" in have:
                providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            elif device not in ("auto", "cuda"):
                raise BackendUnavailable(f"device must be cpu, cuda or auto for the onnx backend, got {device!r}")
        return cls(path, threads=threads, providers=providers, use_jinja=use_jinja)

    def _stop_ids(self) -> set[int]:
        """The tokenizer's eos plus generation_config.json's eos ids when the artifact carries one."""
        ids = {self.tokenizer.eos_token_id}
        for f in (self.path / GENERATION_CONFIG, self.path / TOKENIZER_DIR / GENERATION_CONFIG):
            if f.is_file():
                eos = json.loads(f.read_text()).get("eos_token_id")
                ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.cfg.chat_format:
            ids.add(self.tokenizer.tk.token_to_id(TURN_START_TOKEN))  # None when the vocabulary has no such token
        return {int(i) for i in ids if i is not None}

    # ------------------------------------------------------------------ encoder
    def encode(self, series: Sequence[np.ndarray]) -> Encoded:
        """All series of the window in one encoder call -> media (1, S * N, D), series after series."""
        t = time.perf_counter()
        xs = [np.asarray(x, dtype=np.float32).reshape(-1) for x in series]
        p, max_series = self.cfg.encoder.patch_len, self.cfg.encoder.max_series
        short = [i for i, x in enumerate(xs) if len(x) < p]
        if short:
            raise ValueError(f"series {short} are shorter than one patch ({p} samples); pass at least {p} samples")
        if len(xs) > max_series:
            raise ValueError(f"{len(xs)} series given; this model takes at most {max_series} per sample")
        if not xs:  # no series: one absent slot, zero media (collate's layout)
            media = np.zeros((1, self.num_latents, self.dim), np.float32)
        else:
            K, L = len(xs), max(len(x) for x in xs)
            sig = np.zeros((K, L), np.float32)  # (K, L) zero-padded
            mask = np.zeros((K, L), bool)  # (K, L)
            for k, x in enumerate(xs):
                sig[k, : len(x)] = x
                mask[k, : len(x)] = True
            (lat,) = self.encoder.run(
                [ONNX_LATENTS],
                {ONNX_SERIES: sig, ONNX_SERIES_MASK: mask, ONNX_SERIES_INDEX: np.arange(K, dtype=np.int64)},
            )  # (K, N, D)
            media = lat.reshape(1, K * self.num_latents, self.dim)  # (1, S * N, D)
        self.last_timings = {"encode_ms": (time.perf_counter() - t) * 1000}
        return Encoded(series, media)

    # ------------------------------------------------------------------ decoder
    def _media(self, encoded: Encoded) -> np.ndarray:
        if isinstance(encoded.value, np.ndarray):
            return encoded.value
        return self.encode(encoded.series).value  # an Encoded from elsewhere: encode its series here

    def _prompt(self, text: str, n_series: int) -> tuple[np.ndarray, np.ndarray]:
        ids = self.tokenizer.prompt_ids(text, chat_format=self.cfg.chat_format, system=self.cfg.pre_prompt)
        pos = [i for i, t in enumerate(ids) if t == self.ts_id]
        if len(pos) != n_series:
            raise ValueError(f"the text has {len(pos)} {TS_TOKEN} markers but {n_series} series were given")
        S = max(1, n_series)
        ts = np.full((1, S), ABSENT, np.int64)  # (1, S)
        ts[0, : len(pos)] = pos
        return np.asarray([ids], np.int64), ts

    def prefill(self, text: str, encoded: Encoded) -> tuple[np.ndarray, _State]:
        """-> logits (1, V) of the prompt's last token and the cache to continue from."""
        media = self._media(encoded)
        ids, ts = self._prompt(text, len(encoded.series))
        feed = {
            spec.DEC_INPUT_IDS: ids,
            spec.DEC_ATTENTION_MASK: np.ones_like(ids),
            spec.DEC_MEDIA: media,
            spec.DEC_TS_POSITIONS: ts,
        }
        outs = self.prefill_sess.run(self._pre_out, {k: v for k, v in feed.items() if k in self._pre_in})
        n = len(self._present)
        return outs[0], _State(outs[1 : 1 + n], outs[1 + n :], ts, ids.shape[1])

    def decode(self, tokens: np.ndarray, state: _State) -> tuple[np.ndarray, _State]:
        """tokens (B,) -> logits (B, V) and the state one token longer (decode.onnx takes one token per call)."""
        B = tokens.shape[0]
        feed = {
            spec.DEC_INPUT_IDS: np.asarray(tokens, np.int64).reshape(B, 1),
            spec.DEC_ATTENTION_MASK: np.ones((B, state.length + 1), np.int64),
            spec.DEC_TS_POSITIONS: state.ts_pos,
            **dict(zip(self._past_in, state.past)),
            **dict(zip(self._cross_in, state.cross)),
        }
        outs = self.decode_sess.run(self._dec_out, {k: feed[k] for k in self._dec_in})
        return outs[0][:, -1], _State(outs[1:], state.cross, state.ts_pos, state.length + 1)

    # ------------------------------------------------------------------ the Backend steps
    def classify(self, text: str, encoded: Encoded, labels: Sequence[str]) -> dict[str, float]:
        """Log-likelihood of 'Answer: <label><eos>' per label: the torch model's classify, step by step."""
        if not labels:
            raise ValueError("classify needs at least one allowed label")
        t0 = time.perf_counter()
        conts = [self.tokenizer.encode_target(f"{ANSWER_PREFIX} {lab}") for lab in labels]
        shared = _common_prefix(conts)
        if shared == min(len(c) for c in conts):
            shared -= 1  # keep at least one token per label to score
        last, state = self.prefill(text, encoded)  # (1, V): predicts the first answer token
        t1 = time.perf_counter()
        prefix_lp = 0.0
        for tok in conts[0][:shared]:  # the shared tokens, scored once (B=1)
            prefix_lp += float(_log_softmax(last[0])[tok])
            last, state = self.decode(np.array([tok]), state)
        rest = [tuple(c[shared:]) for c in conts]
        scores = self._score_trie(rest, _log_softmax(last[0]), state) + prefix_lp  # (K,)
        t2 = time.perf_counter()
        self.last_timings = {
            **{k: v for k, v in self.last_timings.items() if k == "encode_ms"},
            "prefill_ms": (t1 - t0) * 1000,
            "decode_ms": (t2 - t1) * 1000,
        }
        return {lab: float(s) for lab, s in zip(labels, scores)}

    def _score_trie(self, rest: list[tuple[int, ...]], first_lp: np.ndarray, state: _State) -> np.ndarray:
        """Sum of log p over each label's remaining tokens, decoding each distinct prefix once.

        Depth by depth, the rows of one decode call are the distinct label prefixes that still have a token to
        score (HAR: 4 rows, then 2, then 2, instead of 6 tiled copies of the cache for every step); each row's
        cache is gathered from its parent prefix's row. first_lp: log-probs (V,) of the first remaining token."""
        K = len(rest)
        scores = np.array([first_lp[r[0]] for r in rest], np.float64)  # (K,)
        parents: dict[tuple[int, ...], int] = {(): 0}  # prefix -> its row in `state`
        depth = 1
        while True:
            prefixes = sorted({r[:depth] for r in rest if len(r) > depth})
            if not prefixes:
                break
            rows = [parents[p[:-1]] for p in prefixes]
            step = state.take(rows) if (len(rows) != state.past[0].shape[0] or rows != list(range(len(rows)))) else state
            logits, state = self.decode(np.array([p[-1] for p in prefixes], np.int64), step)  # (R, V)
            lp = _log_softmax(logits)  # (R, V)
            row_of = {p: i for i, p in enumerate(prefixes)}
            for k in range(K):
                if len(rest[k]) > depth:
                    scores[k] += lp[row_of[rest[k][:depth]], rest[k][depth]]
            parents = row_of
            depth += 1
        return scores

    def generate(self, text: str, encoded: Encoded, max_new_tokens: int) -> str:
        """Greedy decoding with the KV cache; stops at the tokenizer's / generation config's eos ids."""
        t0 = time.perf_counter()
        logits, state = self.prefill(text, encoded)
        t1 = time.perf_counter()
        out: list[int] = []
        for _ in range(int(max_new_tokens)):
            nxt = int(np.argmax(logits[0]))
            if nxt in self.stop_ids:
                break
            out.append(nxt)
            logits, state = self.decode(np.array([nxt]), state)
        t2 = time.perf_counter()
        self.last_timings = {"prefill_ms": (t1 - t0) * 1000, "decode_ms": (t2 - t1) * 1000, "new_tokens": float(len(out))}
        return self.tokenizer.decode(out, skip_special_tokens=True)
