"""Ordering of one vehicle's frames by ``seq``: dedup, a bounded reorder buffer, gaps given up on, counter epochs.

Within a counter *epoch*, ordering is by ``seq`` only, from ``first_seq`` (or, for a counter first seen
elsewhere, from the oldest frame once the buffer is full). ``seq <= applied_seq`` is a duplicate
(acknowledged, ignored) unless it lies in a gap that was given up on, then it is refused as ``late``.
Frames after a gap wait in the buffer of ``limit`` frames; when it overflows the gap is skipped (and
remembered, for the ``late`` answer).

A counter that restarts (an ECU reboot: seq falls back while time moves on) opens a new epoch. The rule,
frames taken in time order: a frame whose ``seq`` is at or below the highest seq of the epoch so far
(applied, waiting or earlier in the batch) while its ``ts`` is later than every frame of the epoch so far
by more than ``restart_tolerance_ms`` is a restart. A re-sent frame has the same seq AND ts as the
original, so it is never later than the frames applied after it: it stays a duplicate. On a restart the
frames still waiting are applied (their gaps skipped), the epoch is remembered (its time span, last seq
and skipped gaps) and the new epoch starts like a new counter. A frame whose ``ts`` is at or before the
start of the current epoch belongs to an earlier one: a duplicate if that epoch applied its seq, else
``late``. A forward jump is a gap: skipped once the buffer overflows.

>>> buffer = ReorderBuffer(limit=4, first_seq=1)
>>> released, dups, late = buffer.receive(np.array([2, 1, 1]), np.array([20, 10, 10]), np.zeros((3, 1), np.float32))
>>> released[0].tolist(), dups, late, buffer.applied_seq
([1, 2], 1, [], 2)
>>> released, dups, late = buffer.receive(np.array([1, 2]), np.array([30, 40]), np.zeros((2, 1), np.float32))
>>> released[0].tolist(), dups, buffer.epoch  # the counter restarted (seq 1 again, but later)
([1, 2], 0, 1)
"""
from __future__ import annotations

from typing import Any

import numpy as np

NO_SEQ = -(2**62)  # "never": before any seq or time stamp
_MAX_SKIPPED_RANGES = 256
_MAX_EPOCHS_REMEMBERED = 16

Frames = tuple[np.ndarray, np.ndarray, np.ndarray]  # (seq int64, ts int64 ms, values rows x sensors float32)


class ReorderBuffer:
    """Frames in, the contiguous run after ``applied_seq`` out (each frame exactly once)."""

    def __init__(self, limit: int, first_seq: int, n_sensors: int = 0, restart_tolerance_ms: int = 0) -> None:
        if limit < 0:
            raise ValueError(f"reorder buffer limit must be >= 0 (got {limit})")
        if restart_tolerance_ms < 0:
            raise ValueError(f"counter restart tolerance must be >= 0 ms (got {restart_tolerance_ms})")
        self.limit = int(limit)
        self.first_seq = int(first_seq)
        self.restart_tolerance_ms = int(restart_tolerance_ms)
        self.applied_seq = NO_SEQ
        self.applied_ts = NO_SEQ  # latest ts applied in this epoch
        self.skipped: list[list[int]] = []  # [lo, hi] inclusive seq ranges given up on (this epoch)
        self.epoch = 0
        self.epoch_start_ts = NO_SEQ  # frames at or before this ts belong to an earlier epoch
        # earlier epochs, oldest first: [start_ts, last_seq, skipped ranges]
        self.history: list[list[Any]] = []
        self.seq = np.zeros(0, dtype=np.int64)
        self.ts = np.zeros(0, dtype=np.int64)
        self.values = np.zeros((0, n_sensors), dtype=np.float32)

    @property
    def size(self) -> int:
        """Frames waiting for a gap to fill."""
        return int(self.seq.size)

    def epoch_of(self, ts_ms: int) -> int:
        """The counter epoch a frame at ``ts_ms`` belongs to (0 before any restart)."""
        if ts_ms > self.epoch_start_ts:
            return self.epoch
        first_remembered = self.epoch - len(self.history)
        inside = [i for i, (start, _, _) in enumerate(self.history) if ts_ms > start]
        return first_remembered + inside[-1] if inside else max(0, first_remembered - 1)

    def receive(self, seq: np.ndarray, ts: np.ndarray, values: np.ndarray) -> tuple[Frames | None, int, list[int]]:
        """Take frames in any order: (frames released in order or None, duplicates, late seqs refused)."""
        seq, ts = np.asarray(seq, dtype=np.int64), np.asarray(ts, dtype=np.int64)
        duplicates = 0
        if seq.size > 1 and not bool((seq[1:] > seq[:-1]).all()):
            # Re-sent within the batch: the same seq and ts twice.
            order = np.lexsort((ts, seq))
            seq, ts, values = seq[order], ts[order], values[order]
            first = np.ones(seq.size, dtype=bool)
            first[1:] = (seq[1:] != seq[:-1]) | (ts[1:] != ts[:-1])
            duplicates += int((~first).sum())
            seq, ts, values = seq[first], ts[first], values[first]
        late: list[int] = []
        if self.history and seq.size and bool((ts <= self.epoch_start_ts).any()):
            old = ts <= self.epoch_start_ts
            old_dups, old_late = self._earlier_epochs(seq[old], ts[old])
            duplicates += old_dups
            late += old_late
            seq, ts, values = seq[~old], ts[~old], values[~old]
        released: list[Frames] = []
        while seq.size:
            cut = self._restart_cut(seq, ts)
            if cut is None:
                now, rest = slice(None), None
            else:
                order = np.argsort(ts, kind="stable")
                now, rest = order[:cut], order[cut:]
            epoch_dups, epoch_late = self._receive_epoch(seq[now], ts[now], values[now], released)
            duplicates += epoch_dups
            late += epoch_late
            if rest is None:
                break
            self._new_epoch(released)
            seq, ts, values = seq[rest], ts[rest], values[rest]
        if not released:
            return None, duplicates, late
        if len(released) == 1:
            return released[0], duplicates, late
        return (np.concatenate([r[0] for r in released]), np.concatenate([r[1] for r in released]),
                np.concatenate([r[2] for r in released])), duplicates, late

    def _restart_cut(self, seq: np.ndarray, ts: np.ndarray) -> int | None:
        """Position, in time order, of the first frame that restarts the counter (None: no restart)."""
        high_seq = max(self.applied_seq, int(self.seq.max()) if self.seq.size else NO_SEQ)
        if high_seq == NO_SEQ and seq.size < 2:
            return None
        if seq.size and int(seq.min()) > high_seq and bool((seq[1:] > seq[:-1]).all()) \
                and bool((ts[1:] >= ts[:-1]).all()):
            return None  # the usual batch: new, in order
        order = np.argsort(ts, kind="stable")
        s, t = seq[order], ts[order]
        high_ts = max(self.applied_ts, int(self.ts.max()) if self.ts.size else NO_SEQ)
        seq_so_far = np.maximum.accumulate(np.concatenate([[high_seq], s]))[:-1]
        ts_so_far = np.maximum.accumulate(np.concatenate([[high_ts], t]))[:-1]
        restart = (seq_so_far != NO_SEQ) & (s <= seq_so_far) & (t > ts_so_far + self.restart_tolerance_ms)
        return int(np.argmax(restart)) if restart.any() else None

    def _new_epoch(self, released: list[Frames]) -> None:
        """The counter restarted: apply what waits (gaps skipped), remember this epoch, start a new one."""
        if self.seq.size:
            seq, ts, values = self.seq, self.ts, self.values
            self.seq, self.ts, self.values = seq[:0].copy(), ts[:0].copy(), values[:0].copy()
            if self.applied_seq == NO_SEQ:
                self.applied_seq = int(seq[0]) - 1
            self._record_gaps(seq)
            self.applied_seq, self.applied_ts = int(seq[-1]), max(self.applied_ts, int(ts.max()))
            released.append((seq, ts, values))
        self.history.append([self.epoch_start_ts, self.applied_seq, self.skipped])
        del self.history[:-_MAX_EPOCHS_REMEMBERED]
        self.epoch += 1
        self.epoch_start_ts = self.applied_ts
        self.applied_seq, self.applied_ts, self.skipped = NO_SEQ, NO_SEQ, []

    def _earlier_epochs(self, seq: np.ndarray, ts: np.ndarray) -> tuple[int, list[int]]:
        """Frames of an earlier epoch: (duplicates, late seqs). Older than the epochs remembered: duplicates."""
        is_late = np.zeros(seq.size, dtype=bool)
        ends = [s for s, _, _ in self.history[1:]] + [self.epoch_start_ts]
        for (start, last_seq, skipped), end in zip(self.history, ends, strict=True):
            inside = (ts > start) & (ts <= end)
            if not inside.any():
                continue
            is_late |= inside & ((seq > last_seq) | self._in_ranges(seq, skipped))
        return int((~is_late).sum()), seq[is_late].tolist()

    def _receive_epoch(self, seq: np.ndarray, ts: np.ndarray, values: np.ndarray,
                       released: list[Frames]) -> tuple[int, list[int]]:
        """Frames of the current epoch: into the buffer, the contiguous run out (appended to ``released``)."""
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
        if seq.size and seq[0] <= self.applied_seq:
            old = seq <= self.applied_seq
            is_late = self._in_ranges(seq[old], self.skipped)
            duplicates += int((~is_late).sum())
            late = seq[old][is_late].tolist()
            seq, ts, values = seq[~old], ts[~old], values[~old]
        duplicates += self._merge(seq, ts, values)
        frames = self._release()
        if frames is not None:
            released.append(frames)
        return duplicates, late

    @staticmethod
    def _in_ranges(seqs: np.ndarray, ranges: list[list[int]]) -> np.ndarray:
        late = np.zeros(seqs.size, dtype=bool)
        for lo, hi in ranges:
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
        self.applied_seq, self.applied_ts = int(seq[-1]), max(self.applied_ts, int(ts.max()))
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
        meta = {"applied_seq": self.applied_seq, "skipped": self.skipped, "applied_ts": self.applied_ts,
                "epoch": self.epoch, "epoch_start_ts": self.epoch_start_ts, "history": self.history}
        return meta, {"seq": self.seq, "ts": self.ts, "values": self.values}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], limit: int,
                   first_seq: int, restart_tolerance_ms: int = 0) -> ReorderBuffer:
        buffer = cls(limit, first_seq, restart_tolerance_ms=restart_tolerance_ms)
        buffer.applied_seq = int(meta["applied_seq"])
        buffer.skipped = [[int(lo), int(hi)] for lo, hi in meta["skipped"]]
        # Written before counter epochs existed: one epoch, its time taken from the frames applied.
        buffer.applied_ts = int(meta.get("applied_ts", NO_SEQ))
        buffer.epoch = int(meta.get("epoch", 0))
        buffer.epoch_start_ts = int(meta.get("epoch_start_ts", NO_SEQ))
        buffer.history = [[int(start), int(last), [[int(lo), int(hi)] for lo, hi in skipped]]
                          for start, last, skipped in meta.get("history", [])]
        buffer.seq, buffer.ts = arrays["seq"].astype(np.int64), arrays["ts"].astype(np.int64)
        buffer.values = arrays["values"].astype(np.float32)
        return buffer
