"""Sensor faults of one vehicle: values outside the telemetry contract (NaN, inf, impossible), in episodes.

A fault episode starts at a faulty frame more than ``clear_ms`` after the previous faulty one; an
episode raises one ``sensor_fault`` alert unless it starts within ``cooldown_ms`` of the last one raised.
The frame is still applied: the feature function is NaN-aware and scores data quality itself.

>>> tracker = SensorFaultTracker(n_sensors=2, clear_ms=100, cooldown_ms=1000)
>>> invalid = np.array([[True, False], [True, True], [False, False]])
>>> [(e.ts_ms, e.seq, e.sensors) for e in tracker.observe(np.array([1, 2, 3]), np.array([10, 20, 30]), invalid)]
[(10, 1, (0,))]
>>> tracker.counts.tolist()
[2, 1]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from twins.reorder import NO_SEQ


@dataclass(frozen=True)
class FaultEpisode:
    """The first faulty frame of an episode that raises an alert, and its faulty sensors (positions)."""

    ts_ms: int
    seq: int
    sensors: tuple[int, ...]


class SensorFaultTracker:
    """Counts faulty values per sensor and decides which fault episodes raise an alert."""

    def __init__(self, n_sensors: int, clear_ms: int, cooldown_ms: int) -> None:
        self.clear_ms = int(clear_ms)
        self.cooldown_ms = int(cooldown_ms)
        self.counts = np.zeros(n_sensors, dtype=np.int64)
        self.last_fault_ts = NO_SEQ
        self.cooldown_until = NO_SEQ

    def observe(self, seq: np.ndarray, ts: np.ndarray, invalid: np.ndarray) -> list[FaultEpisode]:
        """Frames in seq order with their (frames x sensors) invalid mask: the episodes to alert on."""
        rows = np.flatnonzero(invalid.any(axis=1))
        if rows.size == 0:
            return []
        self.counts += invalid.sum(axis=0)
        fault_ts = ts[rows]
        previous = np.concatenate([[self.last_fault_ts], np.maximum.accumulate(fault_ts)[:-1]])
        episode_starts = rows[(fault_ts - previous) > self.clear_ms]
        self.last_fault_ts = max(self.last_fault_ts, int(fault_ts.max()))
        raised = []
        for r in episode_starts:
            if int(ts[r]) < self.cooldown_until:
                continue
            self.cooldown_until = int(ts[r]) + self.cooldown_ms
            raised.append(FaultEpisode(int(ts[r]), int(seq[r]), tuple(np.flatnonzero(invalid[r]).tolist())))
        return raised

    # ------------------------------------------------------------------ state
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"last_fault_ts": self.last_fault_ts, "cooldown_until": self.cooldown_until}, {"counts": self.counts}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], clear_ms: int,
                   cooldown_ms: int) -> SensorFaultTracker:
        tracker = cls(arrays["counts"].size, clear_ms, cooldown_ms)
        tracker.counts = arrays["counts"].astype(np.int64)
        tracker.last_fault_ts = int(meta["last_fault_ts"])
        tracker.cooldown_until = int(meta["cooldown_until"])
        return tracker
