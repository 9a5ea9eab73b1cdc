"""Ordering of one vehicle's frames by ``seq``: dedup, a bounded reorder buffer, gaps given up on.

Ordering is by ``seq`` only, from ``first_seq`` (or, for a counter first seen elsewhere, from the oldest
frame once the buffer is full). ``seq <= applied_seq`` is a duplicate (acknowledged, ignored) unless it
lies in a gap that was given up on, then it is refused as ``late``. Frames after a gap wait in the buffer
of ``limit`` frames; when it overflows the gap is skipped (and remembered, for the ``late`` answer).

>>> buffer = ReorderBuffer(limit=4, first_seq=1)
>>> released, dups, late = buffer.receive(np.array([2, 1, 1]), np.array([20, 10, 10]), np.zeros((3, 1), np.float32))
>>> released[0].tolist(), dups, late, buffer.applied_seq
([1, 2], 1, [], 2)
"""
from __future__ import annotations

from typing import Any

import numpy as np

NO_SEQ = -(2**62)  # "never": before any seq or time stamp
_MAX_SKIPPED_RANGES = 256

Frames = tuple[np.ndarray, np.ndarray, np.ndarray]  # (seq int64, ts int64 ms, values rows x sensors float32)


class ReorderBuffer:
    """Frames in, the contiguous run after ``applied_seq`` out (each frame exactly once)."""

    def __init__(self, limit: int, first_seq: int, n_sensors: int = 0) -> None:
        if limit < 0:
            raise ValueError(f"reorder buffer limit must be >= 0 (got {limit})")
        self.limit = int(limit)
        self.first_seq = int(first_seq)
        self.applied_seq = NO_SEQ
        self.skipped: list[list[int]] = []  # [lo, hi] inclusive seq ranges given up on
        self.seq = np.zeros(0, dtype=np.int64)
        self.ts = np.zeros(0, dtype=np.int64)
        self.values = np.zeros((0, n_sensors), dtype=np.float32)

    @property
    def size(self) -> int:
        """Frames waiting for a gap to fill."""
        return int(self.seq.size)

    def receive(self, seq: np.ndarray, ts: np.ndarray, values: np.ndarray) -> tuple[Frames | None, int, list[int]]:
        """Take frames in any order: (frames released in seq order or None, duplicates, late seqs refused)."""
        duplicates = 0
        if seq.size > 1 and not bool((seq[1:] > seq[:-1]).all()):  # in order and unique: nothing to sort
            order = np.argsort(seq, kind="stable")
            seq, ts, values = seq[order], ts[order], values[order]
            first = np.ones(seq.size, dtype=bool)
            first[1:] = seq[1:] != seq[:-1]
            duplicates += int((~first).sum())
            if not first.all():
                seq, ts, values = seq[first], ts[first], values[first]
        late: list[int] = []
        if seq[0] <= self.applied_seq:
            old = seq <= self.applied_seq
            is_late = self._in_skipped(seq[old])
            duplicates += int((~is_late).sum())
            late = seq[old][is_late].tolist()
            seq, ts, values = seq[~old], ts[~old], values[~old]
        duplicates += self._merge(seq, ts, values)
        return self._release(), duplicates, late

    def _in_skipped(self, seqs: np.ndarray) -> np.ndarray:
        late = np.zeros(seqs.size, dtype=bool)
        for lo, hi in self.skipped:
            late |= (seqs >= lo) & (seqs <= hi)
        return late

    def _merge(self, seq: np.ndarray, ts: np.ndarray, values: np.ndarray) -> int:
        """Into the buffer, in seq order; the number already waiting there (duplicates)."""
        if seq.size == 0:
            return 0
        if self.seq.size == 0:
            # Copies: the input may be a view of the caller's batch (kept alive, or changed later).
            self.seq, self.ts, self.values = seq.copy(), ts.copy(), values.copy()
            return 0
        dup = np.isin(seq, self.seq)
        seq, ts, values = seq[~dup], ts[~dup], values[~dup]
        all_seq = np.concatenate([self.seq, seq])
        order = np.argsort(all_seq, kind="stable")
        self.seq = all_seq[order]
        self.ts = np.concatenate([self.ts, ts])[order]
        self.values = np.concatenate([self.values, values])[order]
        return int(dup.sum())

    def _release(self) -> Frames | None:
        """The contiguous run after ``applied_seq``; gaps are skipped when the buffer overflows."""
        if self.seq.size == 0:
            return None
        if self.applied_seq == NO_SEQ:
            # First contact: a counter starts at ``first_seq``; one that starts elsewhere (a resumed
            # client, a new server) starts at its oldest frame once the reorder buffer is full.
            if self.seq[0] > self.first_seq and self.seq.size <= self.limit:
                return None
            self.applied_seq = int(self.seq[0]) - 1
        # Frames that must go because the buffer is full: the oldest ``overflow`` ones, gaps and all.
        overflow = max(0, self.seq.size - self.limit)
        expected = self.applied_seq + 1 + np.arange(self.seq.size)
        contiguous = self.seq == expected
        run = self.seq.size if contiguous.all() else int(np.argmin(contiguous))
        take = max(run, overflow)
        if take < self.seq.size and take == overflow and overflow > 0:
            # Continue with whatever is contiguous after the forced part.
            tail = self.seq[take:]
            chain = tail == (self.seq[take - 1] + 1 + np.arange(tail.size))
            take += tail.size if chain.all() else int(np.argmin(chain))
        if take == 0:
            return None
        seq, ts, values = self.seq[:take], self.ts[:take], self.values[:take]
        # Copies, not views: a view would keep the whole batch alive in a resident twin.
        self.seq, self.ts, self.values = self.seq[take:].copy(), self.ts[take:].copy(), self.values[take:].copy()
        self._record_gaps(seq)
        self.applied_seq = int(seq[-1])
        return seq, ts, values

    def _record_gaps(self, seq: np.ndarray) -> None:
        if seq[-1] - self.applied_seq == seq.size:
            return  # contiguous: no gap
        previous = np.concatenate([[self.applied_seq], seq[:-1]])
        for gap in np.flatnonzero(seq - previous > 1):
            self.skipped.append([int(previous[gap]) + 1, int(seq[gap]) - 1])
        del self.skipped[:-_MAX_SKIPPED_RANGES]

    # ------------------------------------------------------------------ state
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"applied_seq": self.applied_seq, "skipped": self.skipped}
        return meta, {"seq": self.seq, "ts": self.ts, "values": self.values}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], limit: int,
                   first_seq: int) -> ReorderBuffer:
        buffer = cls(limit, first_seq)
        buffer.applied_seq = int(meta["applied_seq"])
        buffer.skipped = [[int(lo), int(hi)] for lo, hi in meta["skipped"]]
        buffer.seq, buffer.ts = arrays["seq"].astype(np.int64), arrays["ts"].astype(np.int64)
        buffer.values = arrays["values"].astype(np.float32)
        return buffer
