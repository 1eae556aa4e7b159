"""Per-window signal quality: gaps, NaN/inf, flat lines, clipping, noise bursts, sampling rates (numpy only).

The rule is: never crash and never answer silently on bad data. Short holes are filled by linear
interpolation and the window is flagged; a window with too much missing data is flagged
``unusable`` and not classified (its event is still emitted, with the reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["QualityConfig", "Quality", "FLAGS", "check_window", "check_rate", "runs"]

# Every flag a window can carry; summaries count them.
FLAGS = (
    "gap",  # timestamps jumped: missing samples were inserted
    "nan",  # NaN/inf values (or unparsable cells) inside the window
    "interpolated",  # missing samples were filled by linear interpolation
    "flat",  # a channel is constant over a long stretch (lead off, sensor stuck)
    "clipping",  # samples pile up on the window's min/max plateau or the ADC rails
    "noise",  # a burst of broadband noise / motion artefact dominates part of the window (still classified)
    "fs_out_of_range",  # the input rate is far from the model's
    "unusable",  # not classified; see the window's messages
    "invalid_input",  # the window was refused by signals.validate
    "backend_error",  # the backend raised on this window
    "rationale_numbers_differ",  # an ECG rationale states a number the window's measurement does not bear out
    "gait_frame_pending",  # a har_gait model's window read as worn: the wearer has not walked ~30 s yet
)


@dataclass(frozen=True)
class QualityConfig:
    max_missing_fraction: float = 0.2  # more missing than this -> unusable
    max_fill_s: float = 0.5  # longest hole (per channel) filled by interpolation; longer -> unusable
    flat_fraction: float = 0.5  # longest run of identical values >= this share of the window -> flat
    clip_fraction: float = 0.01  # share of samples on a min/max plateau (or the rails) -> clipping
    clip_run: int = 3  # consecutive samples at the extreme that make a plateau
    clip_min_runs: int = 2  # plateaus at the same extreme needed to call it clipping (not a held-sample glitch)
    adc_range: tuple[float, float] | None = None  # known rails in signal units, e.g. (-5.0, 5.0) mV
    # Noise bursts (benchmarks/noise_flag.py calibrates these on real HAPT and PhysioNet 2017 windows):
    noise_segment_s: float = 0.25  # a channel is cut into segments this long; each gets an HF energy
    noise_ratio: float = 20.0  # consecutive segments with HF energy >= this x the window's quiet level ...
    noise_roughness: float = 1.4  # ... and rms(2nd diff) / rms(1st diff) >= this over them (white noise ~1.73) ...
    noise_min_s: float = 0.5  # ... lasting at least this -> noise
    noise_quiet_percentile: float = 10.0  # the quiet level: this percentile of the segments' HF energy
    fs_min_ratio: float = 0.5  # input rate below this x the model's -> unusable (the band is not there)
    fs_max_ratio: float = 20.0  # input rate above this x the model's -> flagged (most samples thrown away)


@dataclass
class Quality:
    flags: list[str] = field(default_factory=list)
    usable: bool = True
    missing_fraction: float = 0.0
    longest_gap_s: float = 0.0
    messages: list[str] = field(default_factory=list)
    detail: dict = field(default_factory=dict)
    # (C, L) bool, not in the event: samples that were missing (now interpolated) or inside a noise burst, so
    # numbers measured for the model's text (heart rate, RR) leave them out; None when every sample is real
    untrusted: np.ndarray | None = field(default=None, repr=False, compare=False)

    def flag(self, name: str, message: str | None = None, *, unusable: bool = False) -> None:
        if name not in self.flags:
            self.flags.append(name)
        if message:
            self.messages.append(message)
        if unusable:
            self.usable = False
            if "unusable" not in self.flags:
                self.flags.append("unusable")

    def to_dict(self) -> dict:
        return {
            "flags": list(self.flags),
            "usable": bool(self.usable),
            "missing_fraction": round(float(self.missing_fraction), 4),
            "longest_gap_s": round(float(self.longest_gap_s), 4),
            "messages": list(self.messages),
            **self.detail,
        }


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of True in a 1-D bool array."""
    m = np.asarray(mask, dtype=bool).astype(np.int8)
    d = np.diff(np.concatenate([[0], m, [0]]))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    return starts, ends - starts


def check_rate(fs_in: float, fs_model: float, cfg: QualityConfig = QualityConfig()) -> tuple[bool, str | None]:
    """(usable, message) for an input rate against the model's; message is None when the rate is fine."""
    if not fs_model or fs_model <= 0:
        return True, None
    ratio = fs_in / fs_model
    if ratio < cfg.fs_min_ratio:
        return False, (
            f"input sampled at {fs_in:g} Hz but the model expects {fs_model:g} Hz: below {cfg.fs_min_ratio:g}x its rate "
            "the signal lacks the band the model reads; windows are not classified (check --fs or record faster)"
        )
    if ratio > cfg.fs_max_ratio:
        return True, (
            f"input sampled at {fs_in:g} Hz, over {cfg.fs_max_ratio:g}x the model's {fs_model:g} Hz: it is resampled down "
            "(answers are valid, but check --fs is right: a wrong rate changes every frequency the model sees)"
        )
    return True, None


def check_window(
    data: np.ndarray,
    fs: float,
    filled: np.ndarray | None = None,
    cfg: QualityConfig = QualityConfig(),
) -> tuple[np.ndarray, Quality]:
    """Check a (C, L) window at ``fs`` Hz; returns (cleaned finite float32 copy, quality).

    ``filled`` marks samples inserted for a timestamp gap (they are NaN in ``data``). The cleaned
    window has every hole linearly interpolated (edges held); use it only when ``quality.usable``.
    """
    x = np.array(data, dtype=np.float32, copy=True)
    C, L = x.shape
    q = Quality()
    bad = ~np.isfinite(x)  # (C, L)
    gap = np.zeros(L, dtype=bool) if filled is None else np.asarray(filled, dtype=bool)
    if gap.any():
        q.flag("gap", f"{int(gap.sum())} samples missing from the timestamps were inserted")
    if (bad & ~gap[None, :]).any():
        q.flag("nan", f"{int((bad & ~gap[None, :]).sum())} NaN/inf or unreadable values")
    q.missing_fraction = float(bad.any(axis=0).mean()) if L else 1.0
    longest = 0
    if bad.any():
        for c in range(C):
            if not bad[c].any():
                continue
            _, lens = runs(bad[c])
            longest = max(longest, int(lens.max()))
            good = np.flatnonzero(~bad[c])
            if good.size == 0:
                q.flag("unusable", f"channel {c} has no valid sample in this window", unusable=True)
                x[c] = 0.0
                continue
            idx = np.arange(L)
            x[c] = np.interp(idx, good, x[c, good]).astype(np.float32)  # holds the edge values outside
        q.longest_gap_s = longest / fs
        if q.missing_fraction > cfg.max_missing_fraction:
            q.flag(
                "unusable",
                f"{q.missing_fraction:.0%} of the window is missing (limit {cfg.max_missing_fraction:.0%})",
                unusable=True,
            )
        if q.longest_gap_s > cfg.max_fill_s:
            q.flag(
                "unusable",
                f"a {q.longest_gap_s:.2f} s hole is longer than the {cfg.max_fill_s:g} s that may be interpolated",
                unusable=True,
            )
        if q.usable:
            q.flag("interpolated", f"{int(bad.any(axis=0).sum())} samples filled by linear interpolation")

    _check_flat(x, bad, q, cfg)
    _check_clipping(x, bad, q, cfg)
    _check_noise(x, bad, fs, q, cfg)
    if bad.any() or q.detail.get("noise"):
        untrusted = bad.copy()
        for burst in q.detail.get("noise", []):
            a, b = int(burst["start_s"] * fs), int(np.ceil(burst["end_s"] * fs))
            untrusted[burst["channel"], a:b] = True
        q.untrusted = untrusted
    return x, q


def _quantum(v: np.ndarray) -> float:
    """Smallest step between distinct values: the ADC resolution of a quantised signal (0 if constant)."""
    levels = np.unique(v)
    return float(np.diff(levels).min()) if levels.size > 1 else 0.0


def _check_flat(x: np.ndarray, bad: np.ndarray, q: Quality, cfg: QualityConfig) -> None:
    C, L = x.shape
    if L < 2:
        return
    flat = []
    dead = 0
    for c in range(C):
        same = (x[c, 1:] == x[c, :-1]) & ~bad[c, 1:] & ~bad[c, :-1]  # only real samples make a flat line
        _, lens = runs(same)
        longest = int(lens.max()) + 1 if lens.size else 1
        if longest >= cfg.flat_fraction * L:
            flat.append(c)
            dead += longest == L
    if flat:
        q.detail["flat_channels"] = flat
        if dead == C:
            q.flag("flat", "every channel is constant over the whole window (sensor off or stuck)", unusable=True)
        else:
            q.flag("flat", f"channel(s) {flat} constant over >= {cfg.flat_fraction:.0%} of the window")


def _check_clipping(x: np.ndarray, bad: np.ndarray, q: Quality, cfg: QualityConfig) -> None:
    C, L = x.shape
    worst = 0.0
    for c in range(C):
        v = x[c]
        real = ~bad[c]
        if not real.any():
            continue
        on_rail = np.zeros(L, dtype=bool)
        lo, hi = float(v[real].min()), float(v[real].max())
        if hi > lo:
            # A clipped stretch is flat at the extreme AND entered/left by a steep step; a natural turning
            # point of a quantised signal also sits on its extreme level for a few samples, but it gets
            # there by one quantisation step. Steep: >= 1 % of the range and >= 2 quantisation steps.
            q_step = _quantum(v[real])
            steep = max(0.01 * (hi - lo), 2.0 * q_step)
            for level in (lo, hi):
                at = (v == level) & real
                starts, lens = runs(at)
                plateaus = []
                for s, n in zip(starts, lens):
                    if n < cfg.clip_run:
                        continue
                    e = s + n
                    enter = abs(float(v[s - 1]) - level) if s > 0 else np.inf  # a window edge may cut a plateau
                    leave = abs(float(v[e]) - level) if e < L else np.inf
                    if min(enter, leave) >= steep:
                        plateaus.append((s, e))
                # A rail is hit again and again (every step, every beat); one held sample run is a glitch.
                if len(plateaus) >= cfg.clip_min_runs:
                    for s, e in plateaus:
                        on_rail[s:e] = True
        if cfg.adc_range is not None:
            a, b = cfg.adc_range
            on_rail |= ((v <= a) | (v >= b)) & real
        worst = max(worst, float(on_rail.mean()))
    if worst >= cfg.clip_fraction and worst > 0:
        q.detail["clipped_fraction"] = round(worst, 4)
        q.flag("clipping", f"{worst:.1%} of a channel's samples sit on its min/max plateau or the ADC rails")


def _check_noise(x: np.ndarray, bad: np.ndarray, fs: float, q: Quality, cfg: QualityConfig) -> None:
    """Flag stretches where broadband energy jumps far above the rest of the same window.

    The statistic is scale-free, so one setting serves accelerometers in g and ECG in mV: per channel and
    segment, the rms of the second difference (HF energy) over the window's quiet level (a low percentile
    of the segments: a burst may cover most of the window without raising it). Sharp but smooth waves do not
    count: a QRS at 300 Hz or a heel strike at 50 Hz has rms(d2)/rms(d1) well below white noise's sqrt(3),
    so the stretch must also be rough, and last (a single jolt is not a burst). A window that is noise end
    to end has no quiet level to compare with and is not flagged; the stream sees the burst's edges in the
    neighbouring windows.
    """
    C, L = x.shape
    n = max(3, int(round(cfg.noise_segment_s * fs)))
    S = (L - 2) // n
    min_run = max(1, int(np.ceil(cfg.noise_min_s / cfg.noise_segment_s - 1e-9)))
    if S < 4:
        return
    xd = x.astype(np.float64)
    d2 = np.diff(xd, 2, axis=1)[:, : S * n].reshape(C, S, n)  # (C, S, n); d2[j] is centred on sample j + 1
    d1 = np.diff(xd, 1, axis=1)[:, 1 : S * n + 1].reshape(C, S, n)  # (C, S, n)
    hf2, lf2 = (d2**2).mean(axis=2), (d1**2).mean(axis=2)  # (C, S) mean squares of the 2nd and 1st difference
    hf = np.sqrt(hf2)  # (C, S) HF energy per segment
    cum = np.concatenate([np.zeros((C, 1)), np.cumsum(bad, axis=1)], axis=1)  # (C, L + 1)
    first = np.arange(S) * n
    touched = cum[:, first + n + 2] > cum[:, first]  # (C, S): segment k reads samples [k n, k n + n + 2)
    found = []
    for c in range(C):
        live = (hf[c] > 0) & ~touched[c]  # stuck or interpolated segments say nothing about the noise level
        if live.sum() < 4:
            continue
        quiet = max(float(np.percentile(hf[c, live], cfg.noise_quiet_percentile)), _quantum(x[c, ~bad[c]]), 1e-30)
        ratio = hf[c] / quiet  # (S,)
        for s, k in zip(*runs(live & (ratio >= cfg.noise_ratio))):
            # Roughness over the whole run (one segment holds too few samples to tell noise from a jolt).
            rough = float(np.sqrt(hf2[c, s : s + k].sum() / max(lf2[c, s : s + k].sum(), 1e-30)))
            if k >= min_run and rough >= cfg.noise_roughness:
                a, b = s * n / fs, min(L, (s + k) * n + 2) / fs
                found.append({"channel": int(c), "start_s": round(float(a), 3), "end_s": round(float(b), 3),
                              "ratio": round(float(ratio[s : s + k].max()), 1), "roughness": round(rough, 2)})
    if found:
        q.detail["noise"] = found
        w = max(found, key=lambda f: f["ratio"])
        more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
        q.flag("noise", f"broadband noise on channel {w['channel']} from {w['start_s']:.2f} to {w['end_s']:.2f} s into the window: "
               f"HF energy {w['ratio']:.0f}x the window's quiet level{more}")
