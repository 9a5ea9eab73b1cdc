"""The contract's frame counter for data from real vehicles: ``seq`` re-based from whatever the source sends.

A source's counter may start at 0 or any value, restart (an ECU reboot), jump, or not exist. The twins
need ``seq`` strictly increasing per vehicle from 1 (docs/CONTRACTS.md). ``SeqRebaser`` puts each vehicle's
frames in time order (ties by counter) and numbers them 1, 2, 3 ... without gaps; the counter serves only
to tell a duplicate from a new frame and to report restarts and lost frames. Pure numpy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CounterReport:
    """What re-basing found for one vehicle (all counts of rows)."""

    frames: int = 0
    restarts: int = 0  # the source counter went down (or stood still) while time advanced: an ECU reboot
    duplicates: int = 0  # same time and counter as the previous row (no counter: same time): dropped
    late: int = 0  # older than a frame already assigned (streaming only): dropped
    lost_frames: int = 0  # counter gaps between consecutive rows (frames the source numbered but never sent)


@dataclass
class _SeqState:
    ts_ms: int
    counter: float
    seq: int


class SeqRebaser:
    """Assigns the contract's ``seq`` (1, 2, 3 ... per vehicle, strictly increasing, no gaps).

    The source counter may start anywhere, restart (an ECU reboot), jump or be absent: frames are put in
    time order (ties by counter) and numbered consecutively. The counter only tells duplicates apart
    from new frames, and restarts and lost frames apart for the report. Stateful across calls, so a
    stream of batches (time-ordered per vehicle) gets the same seq as one call with all rows.

    >>> rebaser = SeqRebaser()
    >>> order, seq = rebaser.assign("EV1", np.array([10, 20, 30, 40]), np.array([0.0, 1.0, 0.0, 1.0]))
    >>> seq.tolist(), rebaser.reports["EV1"].restarts
    ([1, 2, 3, 4], 1)
    """

    def __init__(self) -> None:
        self._state: dict[str, _SeqState] = {}
        self.reports: dict[str, CounterReport] = {}

    def assign(self, vehicle_id: str, ts_ms: np.ndarray, counter: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(indices of the rows kept, in frame order; their seq) for rows of one vehicle."""
        ts_ms = np.asarray(ts_ms, dtype=np.int64)
        has_counter = counter is not None
        counts = np.asarray(counter, dtype=np.float64) if has_counter else np.zeros(len(ts_ms))
        report = self.reports.setdefault(vehicle_id, CounterReport())
        order = np.lexsort((np.arange(len(ts_ms)), np.nan_to_num(counts, nan=-np.inf), ts_ms))
        ts, cnt = ts_ms[order], counts[order]
        state = self._state.get(vehicle_id)
        if state is not None:
            late = ts < state.ts_ms
            report.late += int(late.sum())
            order, ts, cnt = order[~late], ts[~late], cnt[~late]
        prev_ts = np.r_[state.ts_ms if state else np.iinfo(np.int64).min, ts[:-1]]
        prev_cnt = np.r_[state.counter if state else np.nan, cnt[:-1]]
        duplicate = (ts == prev_ts) & ((cnt == prev_cnt) if has_counter else True)
        report.duplicates += int(duplicate.sum())
        order, ts, cnt = order[~duplicate], ts[~duplicate], cnt[~duplicate]
        if has_counter:
            valid = ~np.isnan(cnt)
            chain = np.r_[state.counter if state and not np.isnan(state.counter) else np.nan, cnt[valid]]
            steps = np.diff(chain)
            steps = steps[~np.isnan(steps)]
            report.restarts += int((steps <= 0).sum())
            report.lost_frames += int(np.clip(steps[steps > 0] - 1, 0, None).sum())
        first = state.seq + 1 if state else 1
        seq = np.arange(first, first + len(order), dtype=np.int64)
        report.frames += len(order)
        if len(order):
            last_counter = cnt[~np.isnan(cnt)][-1] if has_counter and (~np.isnan(cnt)).any() else \
                (state.counter if state else np.nan)
            self._state[vehicle_id] = _SeqState(int(ts[-1]), float(last_counter), int(seq[-1]))
        return order, seq
