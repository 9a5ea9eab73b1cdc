"""Which frames belong to which window: one definition for the offline pipeline and the online twins.

A *window* is identified by its end time ``end_ms``. Window ends sit on a fixed grid, multiples of
``stride_ms`` since the Unix epoch, so a twin can tell which windows a frame belongs to without any
history. The window ending at ``end_ms`` holds the frames with

    end_ms - window_ms < ts <= end_ms

(half-open on the left, so with ``stride_ms == window_ms`` every frame is in exactly one window).
A window is *closed* once a frame with ``ts > end_ms`` has been seen: only closed windows with at
least ``min_frames`` frames are emitted, offline and online alike. The last, still open window of a
recording is therefore never emitted (a twin that wants it calls ``WindowAssembler.flush``).

>>> ts = np.array([0, 10, 20, 30, 40], dtype=np.int64)
>>> ends, lo, hi = window_index(ts, window_ms=20, stride_ms=20)
>>> ends.tolist(), lo.tolist(), hi.tolist()
([0, 20], [0, 1], [1, 3])
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

__all__ = ["window_index", "window_bounds", "closed_window_ends", "in_order_mask", "WindowAssembler"]


def in_order_mask(ts: np.ndarray, last_ts: int | None = None) -> np.ndarray:
    """Frames whose time is not older than any frame before them (the rule offline and online share).

    A frame older than one already seen cannot be placed consistently in windows that may already be
    closed, so both paths drop it.

    >>> in_order_mask(np.array([0, 10, 5, 10, 20])).tolist()
    [True, True, False, True, True]
    """
    ts = np.asarray(ts, dtype=np.int64)
    if ts.size == 0:
        return np.zeros(0, dtype=bool)
    previous_max = np.maximum.accumulate(ts)
    previous_max = np.concatenate([[np.iinfo(np.int64).min if last_ts is None else last_ts], previous_max[:-1]])
    return ts >= previous_max


def _first_end_at_or_after(ts_ms: int, stride_ms: int) -> int:
    """Smallest grid point (multiple of ``stride_ms``) that is >= ``ts_ms``."""
    return -((-int(ts_ms)) // int(stride_ms)) * int(stride_ms)


def closed_window_ends(first_ts: int, last_ts: int, window_ms: int, stride_ms: int) -> np.ndarray:
    """Ends of every window that can hold a frame in [first_ts, last_ts] and is closed by ``last_ts``.

    >>> closed_window_ends(5, 45, window_ms=20, stride_ms=10).tolist()
    [10, 20, 30, 40]
    """
    _check(window_ms, stride_ms)
    start = _first_end_at_or_after(first_ts, stride_ms)
    stop = _first_end_at_or_after(last_ts, stride_ms)  # first end >= last_ts: still open
    return np.arange(start, stop, stride_ms, dtype=np.int64)


def window_index(
    ts: np.ndarray, window_ms: int, stride_ms: int, min_frames: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For time-sorted frame times ``ts`` (int64 ms): (window ends, first row, one-past-last row).

    Rows ``lo[i]:hi[i]`` are the frames of the window ending at ``ends[i]``. Only closed windows with at
    least ``min_frames`` frames are returned.
    """
    _check(window_ms, stride_ms)
    ts = np.asarray(ts, dtype=np.int64)
    if ts.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    if ts.size > 1 and np.any(np.diff(ts) < 0):
        raise ValueError("window_index: ts must be sorted ascending (filter with in_order_mask first)")
    ends = closed_window_ends(int(ts[0]), int(ts[-1]), window_ms, stride_ms)
    lo = np.searchsorted(ts, ends - window_ms, side="right")
    hi = np.searchsorted(ts, ends, side="right")
    keep = (hi - lo) >= max(1, min_frames)
    return ends[keep], lo[keep].astype(np.int64), hi[keep].astype(np.int64)


window_bounds = window_index  # the name docs/CONTRACTS.md first gave this function


def _ends_with_frames(ts: np.ndarray, window_ms: int, stride_ms: int, first_end: int, before: int) -> np.ndarray:
    """Grid ends in ``[first_end, before)`` whose window holds at least one of ``ts`` (sorted), ascending.

    Frame ``t`` lies in the windows ending on the grid in ``[t, t + window_ms)``: the union of those
    ranges over the frames, merged in one pass (cost grows with frames and windows, not with gaps).

    >>> _ends_with_frames(np.array([5, 12, 95]), window_ms=20, stride_ms=10, first_end=0, before=200).tolist()
    [10, 20, 30, 100, 110]
    """
    if ts.size == 0:
        return np.zeros(0, dtype=np.int64)
    first = -(-ts // stride_ms)  # grid index of the first end at or after the frame
    last = -(-(ts + window_ms) // stride_ms) - 1  # grid index of the last end before t + window
    reach = np.maximum.accumulate(last)
    starts = np.concatenate([[0], np.flatnonzero(first[1:] > reach[:-1] + 1) + 1])
    stops = np.concatenate([starts[1:] - 1, [ts.size - 1]])
    seg_lo = np.maximum(first[starts], -(-first_end // stride_ms))
    seg_hi = np.minimum(reach[stops], -(-before // stride_ms) - 1)
    spans = [np.arange(a, b + 1, dtype=np.int64) for a, b in zip(seg_lo.tolist(), seg_hi.tolist(), strict=False) if a <= b]
    if not spans:
        return np.zeros(0, dtype=np.int64)
    return (spans[0] if len(spans) == 1 else np.concatenate(spans)) * stride_ms


def _check(window_ms: int, stride_ms: int) -> None:
    if window_ms <= 0 or stride_ms <= 0:
        raise ValueError(f"window_ms and stride_ms must be > 0 (got {window_ms}, {stride_ms})")


@dataclass
class WindowAssembler:
    """Online counterpart of :func:`window_index`: push frames in time order, get closed windows.

    Keeps only the frames that can still belong to an open window, in arrays of its own (never views of
    what was pushed), so memory is bounded by one window whatever the batch size.
    Frames older than the newest frame already seen are dropped (``in_order_mask``, counted in
    ``late_frames``), exactly as the offline path drops them.
    State serialises with ``to_bytes``/``from_bytes`` (npz, no pickle).

    >>> asm = WindowAssembler(window_ms=20, stride_ms=20)
    >>> [(end, cols["x"].tolist()) for end, cols in asm.push(np.array([0, 10]), {"x": np.array([1.0, 2.0])})]
    [(0, [1.0])]
    >>> [(end, cols["x"].tolist()) for end, cols in asm.push(np.array([20, 30]), {"x": np.array([3.0, 4.0])})]
    [(20, [2.0, 3.0])]
    """

    window_ms: int
    stride_ms: int
    min_frames: int = 1
    late_frames: int = 0
    _ts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _cols: dict[str, np.ndarray] = field(default_factory=dict)
    _next_end: int | None = None  # first window end not yet emitted
    _last_ts: int | None = None  # newest frame time accepted so far

    def push(self, ts: np.ndarray, columns: dict[str, np.ndarray]) -> list[tuple[int, dict[str, np.ndarray]]]:
        """Add frames (``ts`` ascending, int64 ms) and return the windows they closed, oldest first."""
        ts = np.asarray(ts, dtype=np.int64)
        if ts.size == 0:
            return []
        fresh = in_order_mask(ts, self._last_ts)
        if not fresh.all():
            self.late_frames += int((~fresh).sum())
            ts = ts[fresh]
            columns = {k: np.asarray(v)[fresh] for k, v in columns.items()}
            if ts.size == 0:
                return []
        self._last_ts = int(ts[-1])
        self._append(ts, columns)
        if self._next_end is None:
            self._next_end = _first_end_at_or_after(int(self._ts[0]), self.stride_ms)
        return self._emit_closed(int(self._ts[-1]))

    @property
    def held_frames(self) -> int:
        """Frames kept for windows still open (bounded by one window)."""
        return int(self._ts.size)

    def flush(self) -> list[tuple[int, dict[str, np.ndarray]]]:
        """Emit the still open windows too (end of a recording); the assembler keeps its position."""
        if self._ts.size == 0:
            return []
        last_end = _first_end_at_or_after(int(self._ts[-1]), self.stride_ms)
        return self._emit_closed(last_end + 1)

    def _append(self, ts: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        if not self._cols:
            self._ts = ts.copy()
            self._cols = {k: np.asarray(v).copy() for k, v in columns.items()}
            return
        if set(columns) != set(self._cols):
            raise ValueError("WindowAssembler.push: columns differ from earlier pushes")
        self._ts = np.concatenate([self._ts, ts])
        self._cols = {k: np.concatenate([self._cols[k], np.asarray(columns[k])]) for k in self._cols}

    def _emit_closed(self, newest_ts: int) -> list[tuple[int, dict[str, np.ndarray]]]:
        assert self._next_end is not None
        out: list[tuple[int, dict[str, np.ndarray]]] = []
        if self._next_end < newest_ts:
            ends = _ends_with_frames(self._ts, self.window_ms, self.stride_ms, self._next_end, newest_ts)
            lo = np.searchsorted(self._ts, ends - self.window_ms, side="right")
            hi = np.searchsorted(self._ts, ends, side="right")
            for end, a, b in zip(ends.tolist(), lo.tolist(), hi.tolist(), strict=False):
                if b - a >= max(1, self.min_frames):
                    out.append((end, {k: v[a:b] for k, v in self._cols.items()}))
            # Every end before ``newest_ts`` is now closed (empty ones need no visit).
            self._next_end = max(self._next_end, _first_end_at_or_after(newest_ts, self.stride_ms))
        keep_from = int(np.searchsorted(self._ts, self._next_end - self.window_ms, side="right"))
        if keep_from:
            # Copies, not views: a view would keep the whole pushed batch alive (memory would grow with
            # the batch size, not the window). Emitted windows are views: the caller owns those.
            self._ts = self._ts[keep_from:].copy()
            self._cols = {k: v[keep_from:].copy() for k, v in self._cols.items()}
        return out

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = {f"col__{k}": v for k, v in self._cols.items()}
        meta = np.array([self.window_ms, self.stride_ms, self.min_frames, self.late_frames,
                         -1 if self._next_end is None else self._next_end, int(self._next_end is None),
                         -1 if self._last_ts is None else self._last_ts, int(self._last_ts is None)],
                        dtype=np.int64)
        np.savez(buf, meta=meta, ts=self._ts, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> WindowAssembler:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            meta = npz["meta"]
            asm = cls(window_ms=int(meta[0]), stride_ms=int(meta[1]), min_frames=int(meta[2]))
            asm.late_frames = int(meta[3])
            asm._next_end = None if int(meta[5]) else int(meta[4])
            asm._last_ts = None if int(meta[7]) else int(meta[6])
            asm._ts = npz["ts"].copy()
            asm._cols = {k[len("col__"):]: npz[k].copy() for k in npz.files if k.startswith("col__")}
        return asm
