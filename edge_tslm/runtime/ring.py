"""Bounded ring buffers and a windower over them (numpy only).

Samples carry absolute indices (0 = the first sample ever pushed), so a window is named by where
it starts in the stream, however long the stream runs; memory stays ``capacity`` columns.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

__all__ = ["RingBuffer", "Window", "Windower"]


class RingBuffer:
    """A (C, capacity) circular buffer with absolute sample indices.

    ``end`` counts every sample ever pushed; the buffer holds ``[start, end)`` with
    ``start = max(0, end - capacity)``. Reading outside that range raises ``IndexError``.
    """

    def __init__(self, channels: int, capacity: int, dtype=np.float32, fill=0) -> None:
        if channels < 1 or capacity < 1:
            raise ValueError(f"RingBuffer needs channels >= 1 and capacity >= 1, got {channels}, {capacity}")
        self.channels, self.capacity = int(channels), int(capacity)
        self._buf = np.full((self.channels, self.capacity), fill, dtype=dtype)
        self.end = 0

    @property
    def start(self) -> int:
        return max(0, self.end - self.capacity)

    def __len__(self) -> int:
        return self.end - self.start

    def push(self, chunk: np.ndarray) -> None:
        """Append a (C, n) chunk or a single (C,) sample; only the last ``capacity`` samples are kept."""
        x = np.asarray(chunk, dtype=self._buf.dtype)
        if x.ndim == 1:
            x = x[:, None]  # (C, 1)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"expected a ({self.channels}, n) chunk, got shape {x.shape}")
        n = x.shape[1]
        if n == 0:
            return
        if n > self.capacity:  # only the tail can survive
            self.end += n - self.capacity
            x = x[:, -self.capacity :]
            n = self.capacity
        pos = self.end % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[:, pos : pos + first] = x[:, :first]
        if first < n:
            self._buf[:, : n - first] = x[:, first:]
        self.end += n

    def get(self, start: int, stop: int) -> np.ndarray:
        """Copy of absolute samples ``[start, stop)`` as (C, stop - start)."""
        if not (self.start <= start <= stop <= self.end):
            raise IndexError(f"samples [{start}, {stop}) are not in the buffer (it holds [{self.start}, {self.end}))")
        n = stop - start
        pos = start % self.capacity
        first = min(n, self.capacity - pos)
        out = np.empty((self.channels, n), dtype=self._buf.dtype)
        out[:, :first] = self._buf[:, pos : pos + first]
        if first < n:
            out[:, first:] = self._buf[:, : n - first]
        return out

    def reset(self, end: int = 0) -> None:
        """Forget the content; the next sample gets absolute index ``end``."""
        self.end = int(end)


@dataclass(frozen=True)
class Window:
    """One window: absolute index of its first sample, data (C, length) and the per-sample extras."""

    start: int
    data: np.ndarray  # (C, length) float32, NaN where a sample is missing
    times: np.ndarray | None  # (length,) float64 seconds, when the stream has timestamps
    filled: np.ndarray | None  # (length,) bool, True where the sample was inserted for a timestamp gap

    @property
    def stop(self) -> int:
        return self.start + self.data.shape[1]


class Windower:
    """Cut a pushed stream into windows of ``length`` samples every ``hop`` samples.

    Window k covers absolute samples ``[origin + k * hop, origin + k * hop + length)`` — exactly
    ``signals.window`` on the concatenated stream. Chunks of any size are accepted; internally they
    are pushed in pieces small enough that no sample a pending window needs is overwritten.
    ``hop > length`` (gapped windows) is allowed.
    """

    def __init__(self, channels: int, length: int, hop: int, *, capacity: int | None = None, with_times: bool = False) -> None:
        for name, v in (("length", length), ("hop", hop)):
            if int(v) != v or v < 1:
                raise ValueError(f"window {name} must be a positive number of samples, got {v}")
        self.length, self.hop = int(length), int(hop)
        cap = int(capacity) if capacity is not None else self.length + self.hop
        if cap < self.length:
            raise ValueError(f"capacity {cap} is smaller than the window length {self.length}")
        self.data = RingBuffer(channels, cap, np.float32)
        self.times = RingBuffer(1, cap, np.float64) if with_times else None
        self.filled = RingBuffer(1, cap, np.bool_, fill=False)
        self.next_start = 0  # absolute index of the next window's first sample

    @property
    def end(self) -> int:
        return self.data.end

    def reset(self) -> None:
        """Start over after a break in the stream: the next window starts at the next pushed sample."""
        end = self.data.end
        for ring in (self.data, self.times, self.filled):
            if ring is not None:
                ring.reset(end)
        self.next_start = end

    def push(self, chunk: np.ndarray, times: np.ndarray | None = None, filled: np.ndarray | None = None) -> list[Window]:
        """Append (C, n) samples (with optional (n,) times and gap-fill marks); return every window now complete."""
        x = np.asarray(chunk, dtype=np.float32)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[0] != self.data.channels:
            raise ValueError(f"expected a ({self.data.channels}, n) chunk, got shape {x.shape}")
        n = x.shape[1]
        if self.times is not None and times is None:
            raise ValueError("this windower keeps timestamps: pass times with every chunk")
        t = None if times is None else np.asarray(times, dtype=np.float64).reshape(-1)
        f = np.zeros(n, dtype=bool) if filled is None else np.asarray(filled, dtype=bool).reshape(-1)
        if (t is not None and t.size != n) or f.size != n:
            raise ValueError(f"times/filled must have one entry per sample ({n})")
        out: list[Window] = []
        i = 0
        while i < n:
            room = self.data.capacity - max(0, self.data.end - self.next_start)  # >= capacity - length + 1 >= 1
            k = min(n - i, room)
            self.data.push(x[:, i : i + k])
            if self.times is not None:
                self.times.push(t[None, i : i + k])
            self.filled.push(f[None, i : i + k])
            i += k
            while self.next_start + self.length <= self.data.end:
                s, e = self.next_start, self.next_start + self.length
                out.append(Window(
                    start=s,
                    data=self.data.get(s, e),
                    times=None if self.times is None else self.times.get(s, e)[0],
                    filled=self.filled.get(s, e)[0],
                ))
                self.next_start += self.hop
        return out
