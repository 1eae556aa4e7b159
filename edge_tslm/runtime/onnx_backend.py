"""The ONNX Runtime backend: an exported edge-tslm artifact run without torch (numpy + onnxruntime + tokenizers).

The artifact is what ``edge_tslm.export.export_artifact(model, "onnx", out, decoder=True)`` writes::

    encoder.onnx    series (K, L) f32, series_mask (K, L) bool, series_index (K,) i64 -> latents (K, N, D)
    cross.onnx      media (1, S*N, D) -> cross K/V per fusion block
    decoder.onnx    input_ids, position_ids, attention_mask (1, 1, T, T), ts_positions, logit_index,
                    past K/V per layer (P >= 0), cross K/V -> logits (1, K, V), present K/V
    config.json     the TSLMConfig (labels, fs, task, pre_prompt, chat_format, ...)
    tokenizer/      tokenizer.json (+ tokenizer_config.json, chat_template.jinja)

Per window: ``encode`` runs the encoder once per group of similar-length series (``edge_tslm.length_groups``) and
cross.onnx once over the latents. The prompt's
tokens before its first ``<ts>`` see no media, so their K/V are computed once per backend and reused (the prefix
cache). ``classify`` is then ONE decoder call: the rest of the prompt followed by every label's continuation laid
out as a trie in the same row (each trie token sees the prompt and its own branch: the mask and the positions say
so), logits read at the prompt's last token and at every trie node. ``generate`` is greedy with the KV cache kept
in onnxruntime between steps (IOBinding). The numbers are those of ``FlamingoTSLM.classify`` / ``generate``
(see tests/test_runtime_onnx.py for the parity it is held to).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnxruntime as ort

from edge_tslm.calibration import apply_offsets
from edge_tslm.config import TSLMConfig
from edge_tslm.constants import (
    ANSWER_PREFIX,
    CONFIG_FILE,
    ONNX_LATENTS,
    ONNX_SERIES,
    ONNX_SERIES_INDEX,
    ONNX_SERIES_VECTORS,
    ONNX_SERIES_MASK,
    TOKENIZER_DIR,
    TURN_START_TOKEN,
    TS_TOKEN,
)
from edge_tslm.export import spec
from edge_tslm.length_groups import length_groups
from edge_tslm.rationale_drafting import certain_tokens, keep_drafted
from edge_tslm.rhythm_vector import series_rhythm_vectors
from edge_tslm.runtime.backend import BackendUnavailable, Encoded
from edge_tslm.runtime.label_trie import LabelTrie, branching, check_scoring, children, full_scores, label_scores, log_softmax
from edge_tslm.runtime.tokenizer import PromptTokenizer

__all__ = ["OnnxBackend", "ABSENT"]

ABSENT = 1 << 30  # ts_positions value of a series slot with no <ts> token (FlamingoTSLM's ABSENT)
GENERATION_CONFIG = "generation_config.json"


class _State:
    """The decoder's cache after ``length`` tokens: past K/V per layer (1, Hkv, P, d) as numpy arrays or onnxruntime
    OrtValues (generation keeps them inside onnxruntime), the window's cross K/V and <ts> positions."""

    __slots__ = ("past", "cross", "ts_pos", "length")

    def __init__(self, past: list[Any], cross: list[np.ndarray], ts_pos: np.ndarray, length: int) -> None:
        self.past, self.cross, self.ts_pos, self.length = past, cross, ts_pos, length


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
        memory_arena: bool = True,
        split: bool | None = None,
        label_scoring: str = "full",
    ) -> None:
        """memory_arena: onnxruntime's CPU arena (False: every activation buffer is freed after the call; a lower
        peak RSS for a little latency). split: run the decoder as its two halves (decoder_lower.onnx +
        decoder_upper.onnx) instead of decoder.onnx; None: when the artifact has them. label_scoring: how classify
        scores the labels, "full" or "labels" (edge_tslm.runtime.label_trie)."""
        self.label_scoring = check_scoring(label_scoring)
        path = Path(path)
        graphs = ("encoder.onnx", spec.CROSS_GRAPH, spec.DECODER_GRAPH)
        if (path / "prefill.onnx").is_file() and not (path / spec.DECODER_GRAPH).is_file():
            raise BackendUnavailable(
                f"{path} is an edge-tslm < 0.4 export (prefill.onnx + decode.onnx); re-export it with "
                "`edge-tslm export --target onnx --decoder` (cross.onnx + one decoder.onnx)"
            )
        missing = [f for f in (*graphs, CONFIG_FILE) if not (path / f).is_file()]
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
        self.series_features = str(self.cfg.series_features)
        self.question_first = bool(self.cfg.question_first)
        self.series_text = str(self.cfg.series_text)
        self.question = ""
        self.last_timings: dict[str, float] = {}

        self.tokenizer = PromptTokenizer(path / TOKENIZER_DIR, use_jinja=use_jinja)
        self.ts_id = self.tokenizer.token_id(TS_TOKEN)
        if self.tokenizer.eos_token_id is None:
            raise BackendUnavailable(f"{path / TOKENIZER_DIR}: no eos_token in tokenizer_config.json")
        self.cfg.check_answer_end_token(self.tokenizer.special.get("eos_token"), str(path / TOKENIZER_DIR))
        self.stop_ids = self._stop_ids()

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = bool(memory_arena)
        opts.enable_mem_pattern = False  # T and P change every call: a planned block only raised peak RSS (13 MB, HAR)
        prov = list(providers) if providers else ["CPUExecutionProvider"]
        self.providers = prov
        sess = lambda f: ort.InferenceSession(str(path / f), opts, providers=prov)  # noqa: E731
        halves = (spec.DECODER_LOWER_GRAPH, spec.DECODER_UPPER_GRAPH)
        has_halves = all((path / f).is_file() for f in halves)
        if split and not has_halves:
            raise BackendUnavailable(f"{path} has no {' / '.join(halves)}; re-export it with --weight-bits to get them")
        self.split = has_halves if split is None else bool(split)
        self.encoder, self.cross_sess = sess(graphs[0]), sess(graphs[1])
        self._reads_vectors = ONNX_SERIES_VECTORS in {i.name for i in self.encoder.get_inputs()}
        self.reads_untrusted = self._reads_vectors  # encode() uses the stream's untrusted flags (the rhythm vector)
        if self._reads_vectors and not self.fs > 0:
            raise BackendUnavailable(f"{path}: its encoder reads a rhythm vector, which needs the model's sampling rate (config fs)")
        # The decoder: one graph, or its two halves (the lower layers never see the media). Never both: each session
        # holds its own copy of its weights.
        self.decoder = None if self.split else sess(spec.DECODER_GRAPH)
        self.lower, self.upper = (sess(halves[0]), sess(halves[1])) if self.split else (None, None)
        # I/O names, read from the graphs (their order is the export's: layer by layer, key then value).
        self._cross = [o.name for o in self.cross_sess.get_outputs()]
        dec_graphs = (self.lower, self.upper) if self.split else (self.decoder,)
        self._dec_in = list(dict.fromkeys(i.name for g in dec_graphs for i in g.get_inputs()))
        outs = [o.name for g in dec_graphs for o in g.get_outputs()]
        self._past_in = [n for n in self._dec_in if n.startswith("past_")]
        self._present = [n for n in outs if n.startswith("present_")]
        self._dec_out = [spec.DEC_LOGITS, *self._present]  # what a call returns (never hidden_split)
        cross_in = [n for n in self._dec_in if n.startswith("cross_")]
        expect_past = [n.replace("present_", "past_", 1) for n in self._present]
        if expect_past != self._past_in or self._cross != cross_in or spec.DEC_LOGITS not in outs:
            raise BackendUnavailable(f"{path}: cross.onnx and the decoder graphs disagree on the KV layout; re-export")
        if self.split:
            self._lower_in = {i.name for i in self.lower.get_inputs()}
            self._upper_in = {i.name for i in self.upper.get_inputs()}
            self._lower_present = {o.name for o in self.lower.get_outputs() if o.name.startswith("present_")}
        first = {i.name: i.shape for g in dec_graphs for i in g.get_inputs()}[self._past_in[0]]  # (B, Hkv, P, d)
        self._kv_heads, self._head_dim = int(first[1]), int(first[3])
        # The label head (compact exports since session 14): label logits over a baked token table, no lm_head.
        head = self.upper if self.split else self.decoder
        self._label_inputs = {spec.DEC_LABEL_INDEX, spec.DEC_LABEL_TOKENS} <= {i.name for i in head.get_inputs()}
        table = json.loads(head.get_modelmeta().custom_metadata_map.get(spec.LABEL_HEAD_META, "[]"))
        self.label_head = {int(t): j for j, t in enumerate(table)} if self._label_inputs else {}
        self._label_plans: dict[tuple, tuple] = {}  # (labels, scoring) -> what classify feeds and reads
        self.num_latents = int(self.cfg.resampler.num_latents)
        self.dim = int(self.cfg.encoder.dim)
        self._prefix_ids: list[int] = []  # the cached prompt prefix (tokens before the first <ts>)
        self._prefix_past: list[np.ndarray] = []
        self.prefix_hits = 0
        self._lower_key: tuple | None = None  # split: the last classify call's lower-half input, and its output
        self._lower_hidden: np.ndarray | None = None
        self.lower_hits = 0

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        device: str = "cpu",
        use_jinja: bool | None = None,
        memory_arena: bool = True,
        label_scoring: str = "full",
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
        return cls(path, threads=threads, providers=providers, use_jinja=use_jinja, memory_arena=memory_arena,
                   label_scoring=label_scoring)

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
    def encode(self, series: Sequence[np.ndarray], untrusted: Sequence[np.ndarray | None] | None = None) -> Encoded:
        """The window's series, one encoder call per group of similar length, then their cross K/V -> Encoded(value=(media, cross)).

        untrusted: per series, (L,) bool flags of samples a measurement must not come from (the stream's filled gaps
        and noise bursts), or None; the rhythm vector leaves the beats near them out, as the RR text does."""
        t = time.perf_counter()
        xs = [np.asarray(x, dtype=np.float32).reshape(-1) for x in series]
        flags = list(untrusted) if untrusted else [None] * len(xs)
        if len(flags) != len(xs) or any(f is not None and np.size(f) != len(x) for f, x in zip(flags, xs)):
            raise ValueError(f"untrusted needs one (L,) flag array (or None) per series; got {len(flags)} for {len(xs)} series "
                             "or a length that differs from its series")
        p, max_series = self.cfg.encoder.patch_len, self.cfg.encoder.max_series
        short = [i for i, x in enumerate(xs) if len(x) < p]
        if short:
            raise ValueError(f"series {short} are shorter than one patch ({p} samples); pass at least {p} samples")
        if len(xs) > max_series:
            raise ValueError(f"{len(xs)} series given; this model takes at most {max_series} per sample")
        if not xs:  # no series: one absent slot, zero media (collate's layout)
            media = np.zeros((1, self.num_latents, self.dim), np.float32)
        else:
            K = len(xs)
            lat = np.zeros((K, self.num_latents, self.dim), np.float32)  # (K, N, D)
            for group in length_groups([len(x) for x in xs]):  # an ECG and its RR tachogram: two calls, no 37x padding
                L = max(len(xs[k]) for k in group)
                sig = np.zeros((len(group), L), np.float32)  # (G, L) zero-padded
                mask = np.zeros((len(group), L), bool)  # (G, L)
                for j, k in enumerate(group):
                    sig[j, : len(xs[k])] = xs[k]
                    mask[j, : len(xs[k])] = True
                feed = {ONNX_SERIES: sig, ONNX_SERIES_MASK: mask, ONNX_SERIES_INDEX: np.asarray(group, dtype=np.int64)}
                if self._reads_vectors:  # the rhythm vector, measured here as the torch model measures it
                    excl = None  # (G, L) when the window has untrusted samples in this group; most windows have none
                    for j, k in enumerate(group):
                        if flags[k] is not None and np.any(flags[k]):
                            excl = np.zeros((len(group), L), bool) if excl is None else excl
                            excl[j, : len(xs[k])] = np.asarray(flags[k], bool)
                    feed[ONNX_SERIES_VECTORS] = series_rhythm_vectors(sig, mask, self.fs, excl)  # (G, F)
                (lat_g,) = self.encoder.run([ONNX_LATENTS], feed)  # (G, N, D)
                lat[group] = lat_g
            media = lat.reshape(1, K * self.num_latents, self.dim)  # (1, S * N, D)
        cross = self.cross_sess.run(self._cross, {spec.DEC_MEDIA: media})  # (1, H, S * N, d) per block
        self.last_timings = {"encode_ms": (time.perf_counter() - t) * 1000}
        return Encoded(series, (media, cross))

    # ------------------------------------------------------------------ decoder
    def _cross_of(self, encoded: Encoded) -> list[np.ndarray]:
        v = encoded.value
        if isinstance(v, tuple) and len(v) == 2:
            return v[1]
        return self.encode(encoded.series).value[1]  # an Encoded from elsewhere: encode its series here

    def _prompt(self, text: str, n_series: int) -> tuple[list[int], np.ndarray]:
        ids = self.tokenizer.prompt_ids(text, chat_format=self.cfg.chat_format, system=self.cfg.pre_prompt)
        pos = [i for i, t in enumerate(ids) if t == self.ts_id]
        if len(pos) != n_series:
            raise ValueError(f"the text has {len(pos)} {TS_TOKEN} markers but {n_series} series were given")
        S = max(1, n_series)
        ts = np.full((1, S), ABSENT, np.int64)  # (1, S)
        ts[0, : len(pos)] = pos
        return ids, ts

    def _empty_past(self) -> list[np.ndarray]:
        z = np.zeros((1, self._kv_heads, 0, self._head_dim), np.float32)  # (1, Hkv, 0, d)
        return [z] * len(self._past_in)

    def _run(self, ids, positions, mask, past, cross, ts, logit_index, outputs=None, lower_key: tuple | None = None,
             label_index=(), label_tokens=()):
        """One decoder call: ids/positions (T,), mask (T, T) bool, past (1, Hkv, P, d) per layer -> the outputs.

        Split artifacts run the lower graph, then the upper one. lower_key names everything the lower half's output
        depends on (the cached head's ids, these ids, positions and mask): a call with the key of the previous one
        that asks for no lower-layer K/V reuses its hidden_split and runs the upper half only."""
        T = len(ids)
        feed = {
            spec.DEC_INPUT_IDS: np.asarray(ids, np.int64).reshape(1, T),
            spec.DEC_POSITION_IDS: np.asarray(positions, np.int64).reshape(1, T),
            spec.DEC_ATTENTION_MASK: np.asarray(mask, bool).reshape(1, 1, T, T),
            spec.DEC_TS_POSITIONS: ts,
            spec.DEC_LOGIT_INDEX: np.asarray(logit_index, np.int64),
            **dict(zip(self._past_in, past)),
            **dict(zip(self._cross, cross)),
        }
        if self._label_inputs:  # (K2,) rows and (J,) table positions; empty: no label logits
            feed[spec.DEC_LABEL_INDEX] = np.asarray(label_index, np.int64).reshape(-1)
            feed[spec.DEC_LABEL_TOKENS] = np.asarray(label_tokens, np.int64).reshape(-1)
        want = list(outputs or self._dec_out)
        if not self.split:
            return self.decoder.run(want, feed)
        got: dict[str, Any] = {}
        low_names = [spec.DEC_HIDDEN_SPLIT] + [n for n in want if n in self._lower_present]
        if lower_key is not None and len(low_names) == 1 and lower_key == self._lower_key:
            hidden = self._lower_hidden
            self.lower_hits += 1
        else:
            low = self.lower.run(low_names, {k: v for k, v in feed.items() if k in self._lower_in})
            hidden = low[0]  # (1, T, D)
            got.update(zip(low_names[1:], low[1:]))
            if lower_key is not None:
                self._lower_key, self._lower_hidden = lower_key, hidden
        up_names = [n for n in want if n not in got]
        up = self.upper.run(up_names, {**{k: v for k, v in feed.items() if k in self._upper_in}, spec.DEC_HIDDEN_SPLIT: hidden})
        got.update(zip(up_names, up))
        return [got[n] for n in want]

    def _cached_prefix(self, ids: list[int], free: int, shrink: bool = True) -> tuple[int, list[np.ndarray] | None]:
        """(n, past K/V of ids[:n]) for the cached head this prompt shares, or (0, None) on a miss.

        The first window's head (everything before its first <ts>, which may hold that window's own numbers) is
        stored after its call; later windows share only part of it, and the cache shrinks to that shared part once,
        so a stream converges to caching exactly the text its windows have in common. A rationale prompt
        (shrink=False) uses the part it shares without shrinking the head: with the question first, its "Explain
        briefly" right after the question would otherwise cut every later window's cached head short."""
        m = min(free, len(self._prefix_ids))
        n = next((i for i in range(m) if self._prefix_ids[i] != ids[i]), m)
        if n == 0 or 2 * n < len(self._prefix_ids):  # nothing, or too little, in common: a new prompt
            return 0, None
        if n < len(self._prefix_ids) and not shrink:
            return n, [np.ascontiguousarray(a[:, :, :n]) for a in self._prefix_past]
        if n < len(self._prefix_ids):
            self._prefix_ids = self._prefix_ids[:n]
            self._prefix_past = [np.ascontiguousarray(a[:, :, :n]) for a in self._prefix_past]
        self.prefix_hits += 1
        return n, self._prefix_past

    def _prompt_call(self, text: str, encoded: Encoded, trie: LabelTrie | None = None, outputs=None, shrink: bool = True,
                     logit_rows: Sequence[int] | None = None, label_rows: Sequence[int] = (), label_tokens: Sequence[int] = ()):
        """The prompt (after its cached head) and, optionally, a label trie in the same row -> (outs, ids, ts, cross).
        shrink=False: see `_cached_prefix` (a rationale prompt must not shorten the window prompts' cached head).

        logit_rows: which rows get logits over the vocabulary, -1 for the prompt's last token and i for trie node i
        (default: the prompt's last token and every node). label_rows: the same for the label head, over the table
        positions label_tokens. outs follow ``outputs`` (default: logits, then every present K/V)."""
        cross = self._cross_of(encoded)
        ids, ts = self._prompt(text, len(encoded.series))
        T = len(ids)
        free = min(int(ts.min()), T - 1)  # tokens before the first <ts> see no media (always keep one to run)
        n, past = self._cached_prefix(ids, free, shrink) if free > 0 else (0, None)
        store = free > 0 and past is None and shrink
        if past is None:
            past = self._empty_past()
        rest = ids[n:]
        R = len(rest)
        nodes = trie.tokens if trie else []
        mask = np.zeros((R + len(nodes), R + len(nodes)), bool)
        mask[:R, :R] = np.tril(np.ones((R, R), bool))  # the prompt: causal
        if nodes:
            mask[R:, :R] = True  # every trie node sees the whole prompt ...
            mask[R:, R:] = trie.mask()  # ... and its own branch
        positions = list(range(n, T)) + [T + d for d in (trie.depth if trie else [])]
        at = lambda rows: [R - 1 if r < 0 else R + r for r in rows]  # noqa: E731
        logit_index = at([-1, *range(len(nodes))] if logit_rows is None else logit_rows)
        want = list(outputs or self._dec_out)
        run_out = list(dict.fromkeys(want + self._dec_out)) if store else want
        lower_key = (tuple(ids[:n]), tuple(rest + nodes), tuple(positions), mask.tobytes()) if trie and self.split else None
        got = dict(zip(run_out, self._run(rest + nodes, positions, mask, past, cross, ts, logit_index, run_out, lower_key,
                                          at(label_rows), label_tokens)))
        if store:  # the head's K/V are the first `free` positions of this call's present K/V
            self._prefix_ids = list(ids[:free])
            self._prefix_past = [np.ascontiguousarray(got[name][:, :, :free]) for name in self._present]
        return [got[name] for name in want], ids, ts, cross

    def prefill(self, text: str, encoded: Encoded) -> tuple[np.ndarray, _State]:
        """-> logits (1, V) of the prompt's last token and the cache to continue from."""
        outs, ids, ts, cross = self._prompt_call(text, encoded)
        return outs[0][:, 0], _State(outs[1:], cross, ts, len(ids))

    def decode(self, tokens: np.ndarray, state: _State) -> tuple[np.ndarray, _State]:
        """tokens (T,) continuing ``state`` -> logits (T, V) and the state T tokens longer."""
        toks = np.asarray(tokens, np.int64).reshape(-1)
        T = len(toks)
        outs = self._run(toks, range(state.length, state.length + T), np.tril(np.ones((T, T), bool)),
                         state.past, state.cross, state.ts_pos, range(T))
        return outs[0][0], _State(outs[1:], state.cross, state.ts_pos, state.length + T)

    # ------------------------------------------------------------------ the Backend steps
    def _label_plan(self, labels: tuple[str, ...]):
        """-> (answer token ids per label, the trie to feed, branching prefixes, next tokens per prefix, the trie row
        of each branching prefix, their next tokens sorted): the same for every window, so computed once per label set."""
        key = (labels, self.label_scoring)
        plan = self._label_plans.get(key)
        if plan is None:
            conts = [self.tokenizer.encode_target(f"{ANSWER_PREFIX} {lab}") for lab in labels]
            trie = LabelTrie.for_scoring(conts, self.label_scoring)
            split, nxt = branching(conts), children(conts)
            toks = sorted({t for p in split for t in nxt[p]})
            plan = self._label_plans[key] = (conts, trie, split, nxt, [trie.row_of(p) for p in split], toks)
        return plan

    def classify(self, text: str, encoded: Encoded, labels: Sequence[str]) -> dict[str, float]:
        """Score of 'Answer: <label><eos>' per label (plus the artifact's label offsets), in one decoder call:
        "full", its log-likelihood (the torch model's classify); "labels", log p(label | one of the labels), from
        logits at the prefixes where the labels part ways only (the label head's when the artifact has one)."""
        if not labels:
            raise ValueError("classify needs at least one allowed label")
        t0 = time.perf_counter()
        conts, trie, split, nxt, rows, toks = self._label_plan(tuple(labels))
        head = "lm_head"
        if self.label_scoring == "full":
            (logits,), _, _, _ = self._prompt_call(text, encoded, trie, outputs=[spec.DEC_LOGITS])  # (1, 1 + n, V)
            lp = log_softmax(logits[0])  # (1 + n, V)
            scores = full_scores(conts, {(): lp[0], **{p: lp[1 + i] for p, i in trie.node_of.items()}})
        else:
            if not split:  # one label (or labels with the same tokens): nothing to choose
                scores = np.zeros(len(conts))
            elif self.label_head and all(t in self.label_head for t in toks):
                head = "label_head"
                (logits,), _, _, _ = self._prompt_call(text, encoded, trie, outputs=[spec.DEC_LABEL_LOGITS], logit_rows=[],
                                                       label_rows=rows, label_tokens=[self.label_head[t] for t in toks])
                col = {t: j for j, t in enumerate(toks)}
                scores = label_scores(conts, {p: {t: logits[0, k, col[t]] for t in nxt[p]} for k, p in enumerate(split)})
            else:  # an artifact without a label head, or labels it was not exported for: the lm_head's rows
                (logits,), _, _, _ = self._prompt_call(text, encoded, trie, outputs=[spec.DEC_LOGITS], logit_rows=rows)
                scores = label_scores(conts, {p: {t: logits[0, k, t] for t in nxt[p]} for k, p in enumerate(split)})
        t1 = time.perf_counter()
        self.last_timings = {
            **{k: v for k, v in self.last_timings.items() if k == "encode_ms"},
            "prefill_ms": (t1 - t0) * 1000,  # prompt and labels: one call
            "label_tokens": float(len(trie.tokens)),
            "label_head": float(head == "label_head"),
        }
        return apply_offsets({lab: float(s) for lab, s in zip(labels, scores)}, self.cfg.labels, self.cfg.label_offsets)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens): what a rationale draft is made of."""
        return self.tokenizer.encode_text(text)

    def generate(self, text: str, encoded: Encoded, max_new_tokens: int, *, stop: bool = True,
                 ground: Callable[[str], str | None] | None = None,
                 draft: Callable[[list[int]], list[int]] | None = None) -> str:
        """Greedy decoding; the KV cache stays in onnxruntime between steps (IOBinding: no copies through numpy).
        stop=False decodes max_new_tokens whatever the eos ids say (benchmarks time a fixed number of tokens).
        ground: called with the text so far after each step; text it returns is written next instead of the argmax,
        in one decoder call (the window's measured numbers, edge_tslm.rationale_grounding).
        draft: called with the token ids so far; the ids it returns are checked in the same call as the next token
        and kept as far as they are the greedy choice (edge_tslm.rationale_drafting): the same text (up to the last
        bits of a many-row call's logits, which can flip a near-tie), fewer calls."""
        t0 = time.perf_counter()
        outs, ids, ts, cross = self._prompt_call(text, encoded, shrink=False)
        logits, past, length = outs[0][0, 0], outs[1:], len(ids)
        t1 = time.perf_counter()
        out: list[int] = []
        const = {spec.DEC_TS_POSITIONS: ts, **dict(zip(self._cross, cross)),
                 spec.DEC_LABEL_INDEX: np.zeros(0, np.int64), spec.DEC_LABEL_TOKENS: np.zeros(0, np.int64)}
        # One (session, binding, its inputs, its outputs) per graph the step runs: decoder.onnx, or the lower half
        # then the upper one (hidden_split passed between them as an OrtValue, never through numpy).
        if self.split:
            lower_out = [spec.DEC_HIDDEN_SPLIT, *[n for n in self._present if n in self._lower_present]]
            upper_out = [spec.DEC_LOGITS, *[n for n in self._present if n not in self._lower_present]]
            stages = [(self.lower, self._lower_in, lower_out), (self.upper, self._upper_in, upper_out)]
        else:
            stages = [(self.decoder, set(self._dec_in), self._dec_out)]
        bound = []
        for sess, names, out_names in stages:
            binding = sess.io_binding()
            for name, value in const.items():
                if name in names:
                    binding.bind_cpu_input(name, value)
            bound.append((sess, binding, names, out_names))
        forced: list[int] = []  # written text not yet fed
        n_forced = calls = n_drafted = n_accepted = 0
        one = (np.ones((1, 1, 1, 1), bool), np.zeros(1, np.int64))  # a one-token step's mask and logit row
        limit, done = int(max_new_tokens), False

        def grounded() -> list[int]:  # the text to write after `out`, if the grounder has one, within the limit
            value = ground(self.tokenizer.decode(out, skip_special_tokens=True)) if ground is not None else None
            return self.tokenizer.encode_text(value)[: limit - len(out)] if value else []

        while len(out) < limit and not done:
            # The tokens this call certainly feeds (written text, or the greedy choice, then the grounder's text).
            certain = certain_tokens(out, forced, limit, lambda: int(np.argmax(logits)), self.stop_ids if stop else (), grounded)
            if certain is None:  # an end token
                break
            (toks, written), forced = certain, []
            n_forced += written
            drafted = draft(out)[: limit - len(out)] if draft is not None else []
            n_drafted += len(drafted)
            feed = toks + drafted
            T, c = len(feed), len(toks)
            if T == 1:
                mask, rows = one
            else:  # logits after the last certain token and after every drafted one
                mask, rows = np.tril(np.ones((T, T), bool))[None, None], np.arange(c - 1, T, dtype=np.int64)
            step = {spec.DEC_INPUT_IDS: np.array([feed], np.int64),
                    spec.DEC_POSITION_IDS: np.arange(length, length + T, dtype=np.int64)[None],
                    spec.DEC_ATTENTION_MASK: mask, spec.DEC_LOGIT_INDEX: rows, **dict(zip(self._past_in, past))}
            calls += 1
            results: dict[str, Any] = {}
            for sess, binding, names, out_names in bound:
                for name in names & (set(step) | set(results)):
                    value = results.get(name, step.get(name))
                    if isinstance(value, np.ndarray):
                        binding.bind_cpu_input(name, value)
                    else:
                        binding.bind_ortvalue_input(name, value)
                for name in out_names:
                    binding.bind_output(name, "cpu")
                sess.run_with_iobinding(binding)
                results.update(zip(out_names, binding.get_outputs()))
            row_logits = results[spec.DEC_LOGITS].numpy()[0]  # (len(rows), V)
            kept, forced, written, done = keep_drafted(drafted, row_logits[:-1].argmax(-1).tolist(), out, forced,
                                                       grounded, self.stop_ids if stop else None)
            n_accepted, n_forced = n_accepted + kept, n_forced + written
            logits, length = row_logits[kept], length + c + kept
            past = [results[n] for n in self._present]
            if c + kept < T:  # the cache holds the rejected tokens too: cut it back (B, Hkv, P, d)
                past = [np.ascontiguousarray(v.numpy()[:, :, :length]) for v in past]
        t2 = time.perf_counter()
        self.last_timings = {"prefill_ms": (t1 - t0) * 1000, "decode_ms": (t2 - t1) * 1000, "new_tokens": float(len(out)),
                             **({"forced_tokens": float(n_forced)} if ground is not None else {}),
                             **({"drafted_tokens": float(n_drafted), "accepted_tokens": float(n_accepted)} if draft is not None else {}),
                             "decode_calls": float(calls)}
        return self.tokenizer.decode(out, skip_special_tokens=True)
