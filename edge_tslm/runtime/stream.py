"""The streaming loop: samples -> ring buffer -> windows -> quality -> backend -> events.

    backend = load_backend("models/flamingo-har")
    streamer = Streamer(backend, StreamConfig(task="har"))
    for event in streamer.run(read_csv("walk.csv", fs=50)):
        print(dumps(event))

Per window: quality check (holes interpolated or the window set aside), resampling to the
model's rate, the description text (``prompts.build_model_input`` via ``signals.validate``),
one encoder call, the classify path, and the rationale only on demand. Across windows: a
majority vote over the last ``smoothing`` answers drives activity segments (HAR), AF episodes
(>= ``min_af_windows`` consecutive AF windows) and the AF burden.

Push-style use (a sensor callback) is ``streamer.feed(chunk)`` / ``streamer.finish()``; both
return the events they produced. Nothing here imports torch.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np

from edge_tslm.gait_frame import GAIT_DIRECTION, GaitCalibrator, GaitFrameConfig, gait_reference, parse_reference, rotation_onto
from edge_tslm.prompts import build_model_input, parse_answer
from edge_tslm.rationale_check import check_ecg_rationale, measured_ecg_numbers
from edge_tslm.rationale_grounding import Grounder, rationale_grounder
from edge_tslm.rationale_drafting import rationale_drafter
from edge_tslm.runtime.backend import Backend
from edge_tslm.runtime.events import check_event, peak_rss_mb, percentiles
from edge_tslm.runtime.quality import FLAGS, QualityConfig, check_rate, check_window
from edge_tslm.runtime.ring import Window, Windower
from edge_tslm.runtime.sources import Chunk, SourceError, SourceIssue
from edge_tslm.signals import InputError, SignalMeta, resample, validate

__all__ = ["TaskPreset", "TASKS", "StreamConfig", "Streamer", "RATIONALE_REQUEST", "task_question", "scan_gait_reference"]

# Appended to the question to ask for an explanation (the wording the rationale target was trained with).
RATIONALE_REQUEST = " Explain briefly, then answer."
RATIONALE_ON = ("label_change", "af", "never", "always")


@dataclass(frozen=True)
class TaskPreset:
    spec: str  # TaskSpec name whose question the model was trained with
    window_s: float
    hop_s: float
    channels: tuple[str, ...]
    unit: str
    segments: bool  # emit activity/rhythm segments
    episodes: bool  # emit AF episodes and burden


TASKS: dict[str, TaskPreset] = {
    # UCI HAR windows: 2.56 s at 50 Hz; half-window hop gives an answer every 1.28 s.
    "har": TaskPreset("har", 2.56, 1.28, ("x", "y", "z"), "g", segments=True, episodes=False),
    # Rhythm needs several beats: 30 s windows every 10 s.
    "afib": TaskPreset("ecg_rhythm", 30.0, 10.0, ("ECG",), "mV", segments=False, episodes=True),
}


def task_question(task: str) -> str:
    """The question a task's models were trained with (read from the task specs, numpy-only modules)."""
    if task in ("har", "har_gait"):
        from edge_tslm.data.hapt import HAR_TASK

        return HAR_TASK.question
    if task == "ecg_rhythm":
        from edge_tslm.data.physionet2017 import ECG_TASK

        return ECG_TASK.question
    if task in ("ecg_rhythm_synthetic", "synthetic_ecg"):
        from edge_tslm.data.synthetic import SYNTH_ECG_TASK

        return SYNTH_ECG_TASK.question
    raise KeyError(task)


def scan_gait_reference(items: Iterable[Chunk | SourceIssue], fs: float | None, fs_model: float) -> np.ndarray:
    """A whole file's gait reference (its first ~30 s of walking), read before streaming it: what a recording made
    before the wearer walked needs (``edge-tslm stream --gait-reference scan``). Timestamps are not needed: samples
    are taken in order at `fs` (or the file's own rate)."""
    parts, times, rate = [], [], fs
    for item in items:
        if isinstance(item, Chunk) and item.data.ndim == 2 and item.data.shape[1]:
            parts.append(np.asarray(item.data, dtype=np.float32))
            rate = rate or item.fs
            if item.times is not None:
                times.append(np.asarray(item.times, dtype=np.float64))
    if not rate and times:  # the rate the stream will measure: the median step of the timestamps
        d = np.diff(np.concatenate(times))
        d = d[d > 0]
        rate = float(f"{1.0 / float(np.median(d)):.6g}") if d.size else None
    if not parts:
        raise ValueError("--gait-reference scan: the input has no samples")
    acc = np.concatenate(parts, axis=1)  # (C, N)
    if acc.shape[0] != 3:
        raise ValueError(f"--gait-reference scan needs a 3-axis accelerometer, the input has {acc.shape[0]} channel(s)")
    if not rate:
        raise ValueError("--gait-reference scan: the input's sampling rate is unknown; pass --fs (Hz)")
    if fs_model and abs(fs_model - rate) > 1e-9 * fs_model:
        hole = ~np.isfinite(acc).all(0)  # (N,)
        if hole.any():  # bridge the holes to resample, then put them back: a window with a hole is never gait
            idx = np.flatnonzero(~hole)
            if not idx.size:
                raise ValueError("--gait-reference scan: the input has no finite samples")
            acc = np.stack([np.interp(np.arange(acc.shape[1]), idx, ch[idx]) for ch in acc]).astype(np.float32)
        out = resample(acc, rate, fs_model)
        back = _at_model_rate(hole[None, :], out.shape[1], rate, fs_model)  # (1, N_model)
        acc = np.where(back, np.nan, out).astype(np.float32)
    ref = gait_reference(acc)
    if ref is None:
        raise ValueError("--gait-reference scan: the input has under ~30 s of walking, so the wearer's gait frame is "
                         "unknown; stream without it (the stream sets it once the wearer walks) or pass --gait-reference x,y,z")
    return ref


@dataclass(frozen=True)
class StreamConfig:
    task: str = "har"  # a TASKS preset: "har" or "afib"
    window_s: float | None = None  # None: the preset's
    hop_s: float | None = None
    rationale_on: str = "label_change"  # label_change | af | never | always
    smoothing: int = 1  # majority vote over the last k usable windows (1: none)
    min_af_windows: int = 3  # an AF episode is at least this many consecutive (smoothed) AF windows
    af_label: str = "atrial fibrillation"
    segments: bool | None = None  # None: the preset's
    episodes: bool | None = None
    prompt: str | None = None  # None: the question the model was trained with
    channels: tuple[str, ...] | None = None  # names written into the text; None: preset names when the count fits
    unit: str | None = None
    rationale_tokens: int = 160
    max_gap_fill_s: float | None = None  # timestamp gaps up to this are filled with missing samples; longer ones restart
    max_issue_events: int = 50  # per kind; further source issues are only counted
    quality: QualityConfig = field(default_factory=QualityConfig)
    # measured numbers in the text (heart rate, RR) leave out interpolated holes and noise bursts (False: the
    # whole window, as before; benchmarks/fault_text.py compares the two)
    exclude_untrusted: bool = True
    # a rationale states the window's measured numbers where its template has them, the model writing the rest
    # (edge_tslm.rationale_grounding; ECG rhythm and HAR); False: the model's own estimates (an ECG one's are checked
    # and flagged when they are off)
    ground_numbers: bool = True
    # up to this many tokens of the window's template rationale are drafted and checked in each decoder call
    # (edge_tslm.rationale_drafting; the same text, fewer calls; backends whose generate takes draft=); 0: off
    draft_tokens: int = 16
    check_events: bool = False  # validate every event against the schema (tests, debugging)
    # turn each window into the wearer's gait frame (edge_tslm.gait_frame); None: when the model's task is har_gait
    gait_frame: bool | None = None
    gait_reference: tuple[float, float, float] | None = None  # a known reference (x, y, z); None: walk to set it

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
        if self.rationale_on not in RATIONALE_ON:
            raise ValueError(f"rationale_on must be one of {RATIONALE_ON}, got {self.rationale_on!r}")
        for name in ("window_s", "hop_s"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {v}")
        if self.smoothing < 1 or self.min_af_windows < 1:
            raise ValueError("smoothing and min_af_windows must be >= 1")
        if self.draft_tokens < 0:
            raise ValueError(f"draft_tokens must be >= 0 (0: no drafts), got {self.draft_tokens}")
        if self.gait_reference is not None:
            # three finite numbers, not all zero, and not pointing against the training frame (no unique rotation)
            rotation_onto(parse_reference(",".join(str(v) for v in self.gait_reference)), GAIT_DIRECTION)

    @property
    def preset(self) -> TaskPreset:
        return TASKS[self.task]


@dataclass
class _Span:
    label: str
    first_index: int
    last_index: int
    start_s: float
    end_s: float
    windows: int = 1


class Streamer:
    """Drive a backend over a stream; see the module docstring."""

    def __init__(self, backend: Backend, cfg: StreamConfig | None = None, *, fs: float | None = None) -> None:
        self.backend = backend
        self.cfg = cfg or StreamConfig()
        self.fs_override = fs
        p = self.cfg.preset
        self.window_s = float(self.cfg.window_s or p.window_s)
        self.hop_s = float(self.cfg.hop_s or p.hop_s)
        self.labels = tuple(getattr(backend, "labels", ()) or ())
        self.do_segments = p.segments if self.cfg.segments is None else self.cfg.segments
        self.do_episodes = (p.episodes if self.cfg.episodes is None else self.cfg.episodes) and (
            not self.labels or self.cfg.af_label in self.labels
        )
        self.question = self._question()
        # an ECG model's rationale states rhythm numbers the stream can measure (edge_tslm.rationale_check)
        self._is_ecg = self.cfg.task == "afib" or str(getattr(backend, "task", "") or "").startswith("ecg")
        self._grounds = self.cfg.ground_numbers and _takes(backend.generate, "ground")  # ECG and HAR rationales
        self._drafts = (self.cfg.draft_tokens > 0 and _takes(backend.generate, "draft")
                        and callable(getattr(backend, "encode_text", None)))
        self._layout = {  # how the model was trained to read its text (prompts.build_model_input)
            "features": str(getattr(self.backend, "series_features", "") or ""),
            "question_first": bool(getattr(self.backend, "question_first", False)),
            "series_text": str(getattr(self.backend, "series_text", "full") or "full"),
        }
        # A har_gait model reads windows in the wearer's gait frame: the stream sets it from ~30 s of walking.
        gait_on = self.cfg.gait_frame if self.cfg.gait_frame is not None else str(getattr(backend, "task", "") or "") == "har_gait"
        ref = None if self.cfg.gait_reference is None else np.asarray(self.cfg.gait_reference, dtype=np.float64)
        self.gait: GaitCalibrator | None = GaitCalibrator(GaitFrameConfig(), ref) if gait_on else None
        self._gait_news: list[dict] = []
        # Stream state (set when the first samples arrive).
        self.fs: float | None = None
        self.channels: tuple[str, ...] | None = None
        self.unit = ""
        self.windower: Windower | None = None
        self._pending: list[Chunk] = []
        self._last_t: float | None = None
        self._n_in = 0  # samples received (for synthetic times)
        self._t0 = 0.0
        self._rate_usable, self._rate_msg = True, None
        self._stopped = False
        # Per-window and summary state.
        self.index = 0
        self._prev_answer: str | None = None
        self._explain_next = False
        self._recent: deque[str] = deque(maxlen=self.cfg.smoothing)
        self._segment: _Span | None = None
        self._af_run: _Span | None = None
        self._af_time = 0.0
        self._fresh = True  # no usable window yet since the (re)start
        self._tail: tuple[float, float] | None = None  # (own end, window end) of the last usable window
        self._monitored = 0.0
        self._episodes = 0
        self._n_segments = 0
        self._decisions: Counter[str] = Counter()
        self._flags: Counter[str] = Counter()
        self._issues: Counter[str] = Counter()
        self._totals: list[float] = []
        self._usable = 0

    # ------------------------------------------------------------------ public API
    def request_rationale(self) -> None:
        """Generate the rationale for the next classified window, whatever ``rationale_on`` says."""
        self._explain_next = True

    def run(self, source: Iterable[Chunk | SourceIssue]) -> Iterator[dict]:
        """All events for a whole source, ending with the summary. Never raises on bad data."""
        it = iter(source)
        while not self._stopped:
            try:
                item = next(it)
            except StopIteration:
                break
            except SourceError:  # a configuration mistake (unknown column, missing wfdb): the caller's to fix
                raise
            except Exception as e:  # noqa: BLE001 - a reader failing mid-stream ends the stream, not the process
                yield from self.issue(SourceIssue("read_error", f"reading stopped: {type(e).__name__}: {e}"))
                break
            if isinstance(item, SourceIssue):
                yield from self.issue(item)
            else:
                yield from self.feed(item)
        yield from self.finish()

    def issue(self, issue: SourceIssue) -> list[dict]:
        """Report a source problem (at most ``max_issue_events`` events per kind; all are counted)."""
        self._issues[issue.kind] += 1
        if self._issues[issue.kind] > self.cfg.max_issue_events:
            return []
        ev = {"type": "source_issue", "kind": issue.kind, "message": issue.message, "line": issue.line}
        if self._issues[issue.kind] == self.cfg.max_issue_events:
            ev["message"] += f" (further {issue.kind} issues are only counted in the summary)"
        return [self._emit(ev)]

    def feed(self, chunk: Chunk | np.ndarray, times: np.ndarray | None = None) -> list[dict]:
        """Push samples (a ``Chunk`` or a (C, n) array with optional times); returns the events they complete."""
        if self._stopped:
            return []
        if not isinstance(chunk, Chunk):
            arr = np.asarray(chunk, dtype=np.float32)
            chunk = Chunk(arr[:, None] if arr.ndim == 1 else arr, times)
        if chunk.data.ndim != 2 or chunk.data.shape[1] == 0:
            return []
        out: list[dict] = []
        if self.windower is None:
            self._pending.append(chunk)
            started = self._start()
            if started is None:
                return out
            out.extend(started)
            pending, self._pending = self._pending, []
            for c in pending:
                out.extend(self._ingest(c))
            return out
        return self._ingest(chunk)

    def finish(self) -> list[dict]:
        """Close open segments/episodes and emit the burden and the summary."""
        out: list[dict] = []
        if self.windower is None and self._pending and not self._stopped:
            out.extend(self._start(final=True) or [])
            if self.windower is not None:
                pending, self._pending = self._pending, []
                for c in pending:
                    out.extend(self._ingest(c))
        out.extend(self._close_spans())
        if self.do_episodes:
            out.append(self._emit(self._burden_event()))
        out.append(self._emit(self._summary()))
        self._stopped = True
        return out

    # ------------------------------------------------------------------ stream set-up
    def _question(self) -> str:
        if self.cfg.prompt:
            return self.cfg.prompt
        q = getattr(self.backend, "question", "") or ""
        if q:
            return q
        for task in (getattr(self.backend, "task", "") or "", self.cfg.preset.spec):
            try:
                return task_question(task)
            except KeyError:
                continue
        raise ValueError("no question known for this model; pass StreamConfig(prompt=...)")

    def _start(self, final: bool = False) -> list[dict] | None:
        """Fix fs, channels and the windower from the first chunk(s); None while fs is still unknown."""
        first = self._pending[0]
        fs = self.fs_override or next((c.fs for c in self._pending if c.fs), None)
        if fs is None:
            ts = np.concatenate([c.times for c in self._pending if c.times is not None] or [np.empty(0)])
            if ts.size >= 16 or (final and ts.size >= 2):
                d = np.diff(ts)
                d = d[d > 0]
                fs = float(f"{1.0 / float(np.median(d)):.6g}") if d.size else None  # 6 digits: no float dust in the ratio
            elif not final and sum(c.data.shape[1] for c in self._pending) < 4096:
                return None  # wait for a few timestamps to measure the rate
        if fs is None or not np.isfinite(fs) or fs <= 0:
            self._stopped = True
            return [
                self._emit(
                    {
                        "type": "error",
                        "kind": "no_sampling_rate",
                        "message": "the sampling rate is unknown: the input has neither a rate nor timestamps; pass --fs (Hz)",
                    }
                )
            ]
        self.fs = float(fs)
        C = first.data.shape[0]
        p = self.cfg.preset
        if self.cfg.channels and len(self.cfg.channels) == C:
            self.channels = tuple(self.cfg.channels)
        elif len(p.channels) == C:
            self.channels = p.channels
        elif first.channels and len(first.channels) == C:
            self.channels = tuple(first.channels)
        else:
            self.channels = tuple(f"ch{k}" for k in range(C))
        self.unit = self.cfg.unit if self.cfg.unit is not None else (first.unit or p.unit)
        length = max(1, int(round(self.window_s * self.fs)))
        hop = max(1, int(round(self.hop_s * self.fs)))
        self.windower = Windower(C, length, hop, with_times=True)
        fs_model = float(getattr(self.backend, "fs", 0.0) or 0.0)
        events = [
            self._emit(
                {
                    "type": "start",
                    "task": self.cfg.task,
                    "backend": str(getattr(self.backend, "name", type(self.backend).__name__)),
                    "fs_in": self.fs,
                    "fs_model": fs_model or self.fs,
                    "window_s": length / self.fs,
                    "hop_s": hop / self.fs,
                    "channels": list(self.channels),
                    "labels": list(self.labels),
                    "unit": self.unit,
                    "window_samples": length,
                    "hop_samples": hop,
                }
            )
        ]
        if first.fs and self.fs_override and abs(first.fs - self.fs_override) > 1e-6 * self.fs_override:
            events.append(self._warn("fs_override", f"the input says {first.fs:g} Hz; using --fs {self.fs_override:g} Hz as asked"))
        self._rate_usable, self._rate_msg = check_rate(self.fs, fs_model, self.cfg.quality)
        if self._rate_msg:
            events.append(self._warn("fs_out_of_range", self._rate_msg))
        if self.gait is None and self.cfg.gait_reference is not None:
            events.append(self._warn("gait_reference_unused", "a gait reference was given, but this model reads windows as "
                                     "recorded (its task is not har_gait); it is ignored"))
        if self.gait is not None:
            events[0]["gait_frame"] = self._gait_state()
            if C != 3:
                events.append(self._warn("gait_frame_off", f"the gait frame turns 3-axis accelerometers; this stream has {C} "
                                         "channel(s), so windows are read as recorded"))
                self.gait = None
        min_len = int(getattr(self.backend, "min_length", 1) or 1)
        if fs_model and length * fs_model / self.fs < min_len:
            events.append(self._warn("window_too_short", f"a {self.window_s:g} s window is shorter than the model's {min_len}-sample patch"))
        trained = TASKS["har"].window_s
        if str(getattr(self.backend, "task", "") or "").startswith("har") and abs(length / self.fs - trained) > 0.5 / self.fs:
            events.append(self._warn("window_differs_from_training", f"this HAR model was trained on {trained:g} s windows "
                                     f"(a MiniRocket stem's biases were fitted on them too); {length / self.fs:g} s windows "
                                     "reach it with shifted statistics: drop --window-s unless you have checked the F1 at it"))
        return events

    # ------------------------------------------------------------------ timeline
    def _ingest(self, chunk: Chunk) -> list[dict]:
        assert self.windower is not None and self.fs is not None
        x = np.asarray(chunk.data, dtype=np.float32)
        out: list[dict] = []
        if x.shape[0] != self.windower.data.channels:
            return self.issue(
                SourceIssue("channel_mismatch", f"{x.shape[0]} channels where the stream has {self.windower.data.channels}; samples dropped")
            )
        n = x.shape[1]
        dt = 1.0 / self.fs
        if chunk.times is None:
            if self._last_t is None:
                self._last_t = self._t0 - dt
            t = self._last_t + dt * np.arange(1, n + 1)
            out.extend(self._push(x, t, np.zeros(n, dtype=bool)))
            return out
        t = np.asarray(chunk.times, dtype=np.float64)
        prev = self._last_t
        # Samples not after the last kept time (duplicates, clock steps back) are dropped and reported.
        ref = np.maximum.accumulate(np.concatenate([[-np.inf if prev is None else prev], t]))[:-1]
        keep = t > ref + 0.5 * dt
        if not keep.all():
            out.extend(self.issue(SourceIssue("bad_timestamp", f"{int((~keep).sum())} sample(s) not after the previous timestamp; dropped")))
            x, t = x[:, keep], t[keep]
        if t.size == 0:
            return out
        tt = np.concatenate([[t[0] - dt if prev is None else prev], t])
        missing = np.rint(np.diff(tt) * self.fs).astype(np.int64) - 1  # samples missing before each kept one
        limit = self.window_s if self.cfg.max_gap_fill_s is None else self.cfg.max_gap_fill_s
        a = 0
        for i in np.flatnonzero(missing > 0):
            out.extend(self._push(x[:, a:i], t[a:i], np.zeros(i - a, dtype=bool)))
            m = int(missing[i])
            t_prev = tt[i]
            out.append(self._warn("gap", f"{m / self.fs:.3f} s of samples missing between t={t_prev:.3f} s and t={t[i]:.3f} s",
                                  start_s=float(t_prev), end_s=float(t[i])))
            if m * dt <= limit:
                fill_t = t_prev + (t[i] - t_prev) * np.arange(1, m + 1) / (m + 1)
                out.extend(self._push(np.full((x.shape[0], m), np.nan, np.float32), fill_t, np.ones(m, dtype=bool)))
            else:  # too long to bridge: windows restart after it
                out.extend(self._close_spans())
                self.windower.reset()
                self._recent.clear()
                self._prev_answer = None
            a = i
        out.extend(self._push(x[:, a:], t[a:], np.zeros(t.size - a, dtype=bool)))
        return out

    def _push(self, x: np.ndarray, t: np.ndarray, filled: np.ndarray) -> list[dict]:
        if x.shape[1] == 0:
            return []
        self._last_t = float(t[-1])
        self._n_in += x.shape[1]
        out: list[dict] = []
        for w in self.windower.push(x, t, filled):  # type: ignore[union-attr]
            out.extend(self._window(w))
        return out

    # ------------------------------------------------------------------ one window
    def _window(self, w: Window) -> list[dict]:
        assert self.fs is not None
        t_start = time.perf_counter()
        lat = {"prepare": 0.0, "encode": 0.0, "classify": 0.0, "rationale": 0.0}
        stages: dict[str, float] = {}  # the backend's own finer timings (prefill / label scoring / decode)
        start_s = float(w.times[0]) if w.times is not None else w.start / self.fs
        end_s = (float(w.times[-1]) if w.times is not None else (w.stop - 1) / self.fs) + 1.0 / self.fs
        clean, q = check_window(w.data, self.fs, w.filled, self.cfg.quality)
        if self._rate_msg:
            q.flag("fs_out_of_range", self._rate_msg if not self._rate_usable else None, unusable=not self._rate_usable)
        answer: str | None = None
        scores: dict[str, float] = {}
        rationale: str | None = None
        check: dict | None = None  # an ECG rationale's numbers against the window's measured ones
        grounder: Grounder | None = None  # the measured numbers written into it
        mi = None
        if q.usable:
            try:
                signal, meta = self._prepare(clean)
                if self.gait is not None:
                    signal = self._gait_frame(signal, q)
                untrusted = _at_model_rate(q.untrusted, signal.shape[1], self.fs, meta.fs) if self.cfg.exclude_untrusted else None
                inp = validate(signal, meta, self.question, min_length=int(getattr(self.backend, "min_length", 1) or 1))
                mi = build_model_input(inp, untrusted=untrusted, **self._layout)
            except InputError as e:
                q.flag("invalid_input", str(e), unusable=True)
        lat["prepare"] = _ms(t_start)
        if mi is not None:
            try:
                t = time.perf_counter()
                if getattr(self.backend, "reads_untrusted", False) and untrusted is not None:
                    enc = self.backend.encode(mi.series, untrusted=mi.untrusted)  # a measured rhythm vector skips them
                else:
                    enc = self.backend.encode(mi.series)
                lat["encode"] = _ms(t)
                t = time.perf_counter()
                if self.labels:
                    logp = self.backend.classify(mi.text, enc, self.labels)
                    scores = _softmax(logp)
                    answer = max(scores, key=scores.get) if scores else None
                else:
                    answer = parse_answer(self.backend.generate(mi.text, enc, 32))
                lat["classify"] = _ms(t)
                stages.update(_stages(self.backend, ""))
            except Exception as e:  # noqa: BLE001 - a backend failure is this window's problem, not the stream's
                q.flag("backend_error", f"{type(e).__name__}: {e}", unusable=True)
                answer, scores = None, {}
            if answer is not None and self._want_rationale(answer):
                t = time.perf_counter()
                try:
                    rmi = build_model_input(validate(signal, meta, self.question + RATIONALE_REQUEST), untrusted=untrusted,
                                            **self._layout)
                    lead_untrusted = None if untrusted is None else untrusted[0]
                    extra: dict = {}
                    if self._grounds:
                        grounder = extra["ground"] = rationale_grounder(self._is_ecg, signal, meta.fs, meta.channels,
                                                                        meta.unit, lead_untrusted)
                    if self._drafts and self.labels:
                        extra["draft"] = rationale_drafter(self.backend.encode_text, self._is_ecg, signal,
                                                           meta.fs, meta.channels, meta.unit, self.labels, answer,
                                                           lead_untrusted, self.cfg.draft_tokens)
                    rationale = self.backend.generate(rmi.text, enc, self.cfg.rationale_tokens, **extra)
                    stages.update(_stages(self.backend, "rationale_"))
                except Exception as e:  # noqa: BLE001
                    q.flag("backend_error", f"rationale failed: {type(e).__name__}: {e}")
                lat["rationale"] = _ms(t)
                if rationale is not None and self._is_ecg:
                    check = check_ecg_rationale(rationale, measured_ecg_numbers(signal[0], meta.fs, lead_untrusted))
                    if check["message"]:
                        q.flag("rationale_numbers_differ", check["message"])
        lat["total"] = _ms(t_start)
        usable = answer is not None
        for flag in q.flags:
            self._flags[flag] += 1
        if usable:
            self._usable += 1
            self._decisions[answer] += 1  # type: ignore[index]
            self._totals.append(lat["total"])
            self._prev_answer = answer
        ev = {
            "type": "window",
            "index": self.index,
            "start_s": round(start_s, 6),
            "end_s": round(end_s, 6),
            "answer": answer,
            "scores": {k: round(v, 6) for k, v in scores.items()},
            "rationale": rationale,
            **({"rationale_check": {k: check[k] for k in ("stated", "measured", "differs")}} if check else {}),
            **({"rationale_grounded": list(grounder.filled)} if grounder is not None and rationale is not None else {}),
            "quality": q.to_dict(),
            "latency_ms": lat,
        }
        if stages:
            ev["stages_ms"] = stages
        events = []
        smoothed = None
        if usable:
            self._recent.append(answer)  # type: ignore[arg-type]
            smoothed = _majority(self._recent)
            ev["smoothed"] = smoothed
            events.extend(self._track(smoothed, start_s, end_s))
        events.insert(0, self._emit(ev))
        if self._gait_news:
            events[1:1], self._gait_news = [self._emit(e) for e in self._gait_news], []
        self.index += 1
        return events

    def _gait_frame(self, signal: np.ndarray, q) -> np.ndarray:
        """Count a clean window towards the gait reference; turn it once the reference is set."""
        assert self.gait is not None
        was = self.gait.ready
        if not q.flags:  # a window with holes or a noise burst would not tell the wearer's gait direction
            try:
                self.gait.observe(signal)
            except ValueError as e:  # a walk that points against the training frame (device upside down): said, not fatal
                q.flag("gait_frame_pending", f"gait frame not set: {e}")
                self.gait = GaitCalibrator(self.gait.cfg)  # start collecting again
                return signal
        if not self.gait.ready:
            q.flag("gait_frame_pending", f"gait frame not set: {self.gait.seen} of {self.gait.cfg.calibration_windows} "
                   "gait windows walked; this window is read as worn")
        elif not was:
            self._gait_news.append({"type": "calibration", "kind": "gait_frame", **self._gait_state(),
                                    "message": f"gait frame set from {self.gait.cfg.calibration_windows} walking windows; "
                                    "reuse it with --gait-reference " + ",".join(f"{v:.5f}" for v in self.gait.reference)})
        return self.gait.apply(signal)

    def _gait_state(self) -> dict:
        g = self.gait
        assert g is not None
        return {"reference": None if g.reference is None else [round(float(v), 6) for v in g.reference], "source": g.source}

    def _prepare(self, clean: np.ndarray) -> tuple[np.ndarray, SignalMeta]:
        """Resample to the model's rate and crop to its longest span."""
        fs_model = float(getattr(self.backend, "fs", 0.0) or 0.0)
        fs = self.fs
        signal = clean
        if fs_model and abs(fs_model - fs) > 1e-9 * fs_model:  # type: ignore[operator]
            signal = resample(signal, fs, fs_model)  # type: ignore[arg-type]
            fs = fs_model
        max_s = float(getattr(self.backend, "max_seconds", 0.0) or 0.0)
        if max_s:
            signal = signal[:, : int(round(max_s * fs))]  # type: ignore[operator]
        return signal, SignalMeta(fs=fs, unit=self.unit, channels=self.channels)  # type: ignore[arg-type]

    def _want_rationale(self, answer: str) -> bool:
        if self._explain_next:
            self._explain_next = False
            return True
        mode = self.cfg.rationale_on
        if mode == "always":
            return True
        if mode == "af":
            return answer == self.cfg.af_label
        if mode == "label_change":
            return answer != self._prev_answer
        return False

    # ------------------------------------------------------------------ smoothing across windows
    def _own(self, start_s: float, end_s: float) -> tuple[float, float]:
        """The stretch of time a window answers for: hop-long around its centre (so spans tile)."""
        c = 0.5 * (start_s + end_s)
        half = 0.5 * min(self.hop_s, end_s - start_s)
        return c - half, c + half

    def _track(self, label: str, start_s: float, end_s: float) -> list[dict]:
        out: list[dict] = []
        a, b = self._own(start_s, end_s)
        if self._fresh:  # the first window after a (re)start answers from its own start
            a, self._fresh = start_s, False
        self._monitored += b - a
        self._tail = (b, end_s)
        if self.do_segments:
            seg = self._segment
            if seg is not None and seg.label == label:
                seg.last_index, seg.end_s, seg.windows = self.index, b, seg.windows + 1
            else:
                if seg is not None:
                    out.append(self._span_event("segment", seg))
                self._segment = _Span(label, self.index, self.index, a, b)
        if self.do_episodes:
            run = self._af_run
            if label == self.cfg.af_label:
                if run is None:
                    self._af_run = _Span(label, self.index, self.index, a, b)
                else:
                    run.last_index, run.end_s, run.windows = self.index, b, run.windows + 1
            elif run is not None:
                out.extend(self._end_af_run())
        return out

    def _end_af_run(self) -> list[dict]:
        run, self._af_run = self._af_run, None
        if run is None or run.windows < self.cfg.min_af_windows:
            return []
        self._episodes += 1
        self._af_time += run.end_s - run.start_s
        return [self._span_event("episode", run, duration_s=round(run.end_s - run.start_s, 6))]

    def _close_spans(self) -> list[dict]:
        """End open spans at a break or the end: the last window answers up to its own end."""
        out: list[dict] = []
        if self._tail is not None:
            b, end_s = self._tail
            self._monitored += end_s - b
            for span in (self._segment, self._af_run):
                if span is not None:
                    span.end_s = end_s
            self._tail = None
        self._fresh = True
        if self._segment is not None:
            out.append(self._span_event("segment", self._segment))
            self._segment = None
        out.extend(self._end_af_run())
        return out

    def _span_event(self, kind: str, s: _Span, **extra) -> dict:
        if kind == "segment":
            self._n_segments += 1
        return self._emit(
            {
                "type": kind,
                "label": s.label,
                "start_s": round(s.start_s, 6),
                "end_s": round(s.end_s, 6),
                "windows": s.windows,
                "first_index": s.first_index,
                "last_index": s.last_index,
                **extra,
            }
        )

    def _burden_event(self) -> dict:
        burden = self._af_time / self._monitored if self._monitored > 0 else None
        return {
            "type": "burden",
            "label": self.cfg.af_label,
            "burden": None if burden is None else round(burden, 6),
            "time_s": round(self._af_time, 6),
            "monitored_s": round(self._monitored, 6),
            "episodes": self._episodes,
        }

    # ------------------------------------------------------------------ events
    def _summary(self) -> dict:
        ev = {
            "type": "summary",
            "windows": self.index,
            "usable": self._usable,
            "decisions": dict(sorted(self._decisions.items())),
            "latency_ms": percentiles(self._totals),
            "peak_rss_mb": peak_rss_mb(),
            "flags": {f: self._flags[f] for f in FLAGS if self._flags[f]},
            "source_issues": int(sum(self._issues.values())),
            "source_issue_kinds": dict(sorted(self._issues.items())),
            "segments": self._n_segments,
            "samples": self._n_in,
        }
        if self.gait is not None:
            ev["gait_frame"] = self._gait_state()
        if self.do_episodes:
            ev["af_episodes"] = self._episodes
            ev["af_burden"] = self._burden_event()["burden"]
        return ev

    def _warn(self, kind: str, message: str, **extra) -> dict:
        return self._emit({"type": "warning", "kind": kind, "message": message, **extra})

    def _emit(self, ev: dict) -> dict:
        return check_event(ev) if self.cfg.check_events else ev


def _at_model_rate(mask: np.ndarray | None, n_out: int, fs_in: float, fs_out: float) -> np.ndarray | None:
    """A (C, L_in) per-sample mask carried to the prepared signal: resampled (nearest earlier sample) and cropped."""
    if mask is None:
        return None
    src = np.minimum((np.arange(n_out) * (fs_in / fs_out)).astype(np.int64), mask.shape[1] - 1)  # (n_out,)
    return mask[:, src]


def _softmax(logp: dict[str, float]) -> dict[str, float]:
    if not logp:
        return {}
    z = np.array([float(v) for v in logp.values()], dtype=np.float64)
    if not np.isfinite(z).any():
        return {}
    z = np.where(np.isfinite(z), z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    return {k: float(v) for k, v in zip(logp, p)}


def _majority(recent: Sequence[str]) -> str:
    """Most frequent label; ties go to the one seen most recently."""
    counts = Counter(recent)
    best = max(counts.values())
    for label in reversed(recent):
        if counts[label] == best:
            return label
    return recent[-1]


def _stages(backend: Backend, prefix: str) -> dict[str, float]:
    """The backend's ``last_timings`` (ms, e.g. prefill_ms / decode_ms / new_tokens) as plain rounded numbers."""
    out: dict[str, float] = {}
    timings = getattr(backend, "last_timings", None)
    if not isinstance(timings, dict):
        return out
    for k, v in timings.items():
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if np.isfinite(v):
            out[prefix + str(k)] = round(v, 3)
    return out


def _takes(fn, name: str) -> bool:
    """Whether a callable has a parameter `name` (a backend's optional generate features)."""
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
