"""Ring buffer and windower: exact windows and hops against numpy slicing, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from edge_tslm.runtime.ring import RingBuffer, Windower
from edge_tslm.signals import window as np_window


def test_ring_buffer_wraps_and_keeps_absolute_indices():
    r = RingBuffer(2, 5)
    x = np.arange(24, dtype=np.float32).reshape(2, 12)
    r.push(x[:, :3])
    r.push(x[:, 3:7])  # wraps
    assert (r.start, r.end, len(r)) == (2, 7, 5)
    np.testing.assert_array_equal(r.get(2, 7), x[:, 2:7])
    np.testing.assert_array_equal(r.get(4, 6), x[:, 4:6])
    r.push(x[:, 7])  # one (C,) sample
    np.testing.assert_array_equal(r.get(7, 8), x[:, 7:8])
    r.push(x[:, :0])
    r.push(np.concatenate([x, x], 1))  # bigger than capacity: only the tail survives
    assert r.end == 8 + 24
    np.testing.assert_array_equal(r.get(r.end - 5, r.end), np.concatenate([x, x], 1)[:, -5:])
    with pytest.raises(IndexError):
        r.get(0, 3)
    with pytest.raises(ValueError):
        r.push(np.zeros((3, 2)))


@pytest.mark.parametrize("length,hop", [(128, 64), (10, 10), (10, 3), (5, 7), (1, 1), (9000, 3000)])
@pytest.mark.parametrize("chunking", ["one", "samples", "random", "huge"])
def test_windows_match_numpy_slicing(length, hop, chunking):
    rng = np.random.default_rng(length * 31 + hop)
    n = 3 * length + 2 * hop + 17
    x = rng.standard_normal((3, n)).astype(np.float32)
    t = np.arange(n) / 50.0
    w = Windower(3, length, hop, with_times=True)
    if chunking == "one":
        cuts = [0, n]
    elif chunking == "samples":
        cuts = list(range(0, n, 1 if n < 400 else 97)) + [n]
    elif chunking == "random":
        cuts = sorted({0, n, *rng.integers(0, n, 12).tolist()})
    else:
        cuts = [0, n]
        w = Windower(3, length, hop, with_times=True, capacity=length)  # tightest capacity, chunk >> capacity
    got = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        got.extend(w.push(x[:, a:b], t[a:b]))
    ref = np_window(x, length, hop)
    assert len(got) == ref.shape[0]
    for k, win in enumerate(got):
        assert win.start == k * hop
        np.testing.assert_array_equal(win.data, ref[k])
        np.testing.assert_array_equal(win.times, t[k * hop : k * hop + length])
        assert not win.filled.any()
    assert w.data.capacity <= length + hop  # bounded, whatever the stream length


def test_windower_reset_restarts_windows_at_the_next_sample():
    w = Windower(1, 4, 2)
    assert len(w.push(np.arange(5, dtype=np.float32)[None])) == 1  # [0..4)
    w.reset()
    got = w.push(np.arange(100, 106, dtype=np.float32)[None])
    assert [g.start for g in got] == [5, 7]
    np.testing.assert_array_equal(got[0].data[0], [100, 101, 102, 103])


def test_windower_marks_filled_samples_and_checks_args():
    w = Windower(1, 4, 4)
    (win,) = w.push(np.zeros((1, 4)), filled=np.array([0, 1, 1, 0], bool))
    np.testing.assert_array_equal(win.filled, [False, True, True, False])
    with pytest.raises(ValueError):
        Windower(1, 0, 1)
    with pytest.raises(ValueError):
        Windower(1, 4, 1, capacity=3)
    with pytest.raises(ValueError):
        Windower(1, 4, 1, with_times=True).push(np.zeros((1, 2)))
