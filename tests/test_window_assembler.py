"""``WindowAssembler`` (online) against ``window_index`` (offline): the same windows, however frames arrive."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from training.windows import WindowAssembler, in_order_mask, window_index


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.one_of(st.integers(0, 15), st.integers(100, 5_000)), min_size=1, max_size=80),
       start=st.integers(-500, 500), window=st.sampled_from([10, 20, 30, 60]), stride_div=st.sampled_from([1, 2, 3]),
       min_frames=st.integers(1, 3), cuts=st.lists(st.integers(0, 80), max_size=6))
def test_pushed_in_any_chunks_the_windows_equal_the_offline_index(gaps, start, window, stride_div, min_frames, cuts):
    stride = max(1, window // stride_div)
    ts = start + np.cumsum(np.asarray(gaps, dtype=np.int64))
    x = np.arange(ts.size, dtype=np.float64)
    ends, lo, hi = window_index(ts, window, stride, min_frames)
    expected = [(int(e), x[a:b].tolist()) for e, a, b in zip(ends, lo, hi, strict=False)]
    asm = WindowAssembler(window_ms=window, stride_ms=stride, min_frames=min_frames)
    got = []
    bounds = sorted({0, ts.size, *[c for c in cuts if c < ts.size]})
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        got += [(end, cols["x"].tolist()) for end, cols in asm.push(ts[a:b], {"x": x[a:b]})]
    assert got == expected
    assert asm.held_frames <= int(in_order_mask(ts).sum())


def test_a_long_gap_costs_nothing_and_closes_the_window_before_it() -> None:
    asm = WindowAssembler(window_ms=60_000, stride_ms=60_000)
    asm.push(np.array([1_000, 2_000], dtype=np.int64), {"x": np.array([1.0, 2.0])})
    closed = asm.push(np.array([10**13], dtype=np.int64), {"x": np.array([3.0])})  # ~300 years later
    assert [(end, cols["x"].tolist()) for end, cols in closed] == [(60_000, [1.0, 2.0])]
    assert asm.held_frames == 1
