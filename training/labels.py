"""Labels for windows and the vehicle-level split: pure numpy over hand-checkable event tables.

For a window ending at ``t`` and a horizon ``h``:

* **positive** (1) if a failure time lies in ``(t, t + h]``;
* **censored** (-1: excluded, never negative) if ``t + h`` passes the time up to which failures are
  known (``known_until_ms``: the end of observation for real data) and no failure lies in
  ``(t, known_until_ms]``;
* **negative** (0) otherwise.

The coming failure (mode, severity, time) is the first failure after ``t``. Anomaly ground truth: a
window ``(t - window_ms, t]`` is *degrading* when it overlaps an event's ``[onset, failure]`` and a
*sensor fault* when it overlaps a sensor fault's ``[start, end]``; windows shortly after a failure
(repair, ``post_failure_ms``) are flagged so evaluation can leave them out.

>>> t = np.array([0, 5, 10])
>>> horizon_labels(t, failure_ms=np.array([10]), horizon_ms=5, known_until_ms=12).tolist()
[0, 1, -1]
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "MS_PER_DAY", "VehicleEvents", "horizon_labels", "next_failure_index", "interval_overlap",
    "vehicle_labels", "vehicle_strata", "assign_splits", "temporal_cutoff_ms", "NO_MODE",
]

MS_PER_DAY = 86_400_000
NO_MODE = ""  # mode of "no coming failure"


@dataclass(frozen=True)
class VehicleEvents:
    """One vehicle's ground truth: failures (any order) and sensor-fault intervals."""

    failure_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    onset_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    mode: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    severity: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    fault_start_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    fault_end_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def build(cls, failures: Sequence[tuple[int, int, str, int]] = (),
              faults: Sequence[tuple[int, int]] = ()) -> VehicleEvents:
        """From (onset_ms, failure_ms, mode, severity) tuples and (start_ms, end_ms) fault tuples."""
        order = sorted(range(len(failures)), key=lambda i: failures[i][1])
        f = [failures[i] for i in order]
        return cls(
            failure_ms=np.array([x[1] for x in f], dtype=np.int64),
            onset_ms=np.array([x[0] for x in f], dtype=np.int64),
            mode=np.array([x[2] for x in f], dtype=object),
            severity=np.array([x[3] for x in f], dtype=np.int64),
            fault_start_ms=np.array([x[0] for x in faults], dtype=np.int64),
            fault_end_ms=np.array([x[1] for x in faults], dtype=np.int64),
        )

    def sorted(self) -> VehicleEvents:
        order = np.argsort(self.failure_ms, kind="stable")
        return VehicleEvents(self.failure_ms[order], self.onset_ms[order], self.mode[order],
                             self.severity[order], self.fault_start_ms, self.fault_end_ms)


def next_failure_index(window_end_ms: np.ndarray, failure_ms_sorted: np.ndarray) -> np.ndarray:
    """Index of the first failure strictly after each window end (``len(failures)`` when none).

    >>> next_failure_index(np.array([0, 10, 11]), np.array([10, 20])).tolist()
    [0, 1, 1]
    """
    return np.searchsorted(np.asarray(failure_ms_sorted, dtype=np.int64),
                           np.asarray(window_end_ms, dtype=np.int64), side="right")


def horizon_labels(window_end_ms: np.ndarray, failure_ms: np.ndarray, horizon_ms: int,
                   known_until_ms: int) -> np.ndarray:
    """int8 per window: 1 failure in (t, t+h], 0 none and t+h known, -1 censored."""
    t = np.asarray(window_end_ms, dtype=np.int64)
    failures = np.sort(np.asarray(failure_ms, dtype=np.int64))
    idx = next_failure_index(t, failures)
    padded = np.concatenate([failures, [np.iinfo(np.int64).max]])
    nxt = padded[idx]
    positive = nxt <= t + horizon_ms
    censored = ~positive & (t + horizon_ms > known_until_ms)
    return np.where(positive, 1, np.where(censored, -1, 0)).astype(np.int8)


def interval_overlap(window_end_ms: np.ndarray, window_ms: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """bool per window: ``(t - window_ms, t]`` overlaps any closed interval ``[start, end]``.

    >>> interval_overlap(np.array([10, 20, 30]), 10, np.array([15]), np.array([20])).tolist()
    [False, True, False]
    """
    t = np.asarray(window_end_ms, dtype=np.int64)[:, None]
    starts = np.asarray(starts, dtype=np.int64)[None, :]
    ends = np.asarray(ends, dtype=np.int64)[None, :]
    if starts.size == 0:
        return np.zeros(t.shape[0], dtype=bool)
    return ((starts <= t) & (ends > t - window_ms)).any(axis=1)


def vehicle_labels(window_end_ms: np.ndarray, window_ms: int, events: VehicleEvents,
                   horizons_days: Sequence[int], known_until_ms: int,
                   post_failure_ms: int = 3 * MS_PER_DAY) -> dict[str, np.ndarray]:
    """Every label column for one vehicle's windows (see the module docstring).

    Columns: ``y_<h>d`` (int8 1/0/-1) per horizon, ``next_failure_ms`` (-1 none), ``next_mode``
    (``NO_MODE`` none), ``next_severity`` (0 none), ``degrading``, ``sensor_fault``, ``anomaly``
    (either), ``post_failure``, ``event_onset_ms`` / ``event_failure_ms`` of the degradation the window
    overlaps (-1 none).
    """
    t = np.asarray(window_end_ms, dtype=np.int64)
    ev = events.sorted()
    out: dict[str, np.ndarray] = {}
    for h in horizons_days:
        out[f"y_{h}d"] = horizon_labels(t, ev.failure_ms, int(h) * MS_PER_DAY, known_until_ms)
    idx = next_failure_index(t, ev.failure_ms)
    has_next = idx < ev.failure_ms.size
    safe = np.minimum(idx, max(ev.failure_ms.size - 1, 0))
    if ev.failure_ms.size:
        out["next_failure_ms"] = np.where(has_next, ev.failure_ms[safe], -1).astype(np.int64)
        out["next_mode"] = np.where(has_next, ev.mode[safe], NO_MODE).astype(str).astype(object)
        out["next_severity"] = np.where(has_next, ev.severity[safe], 0).astype(np.int8)
    else:
        out["next_failure_ms"] = np.full(t.size, -1, dtype=np.int64)
        out["next_mode"] = np.full(t.size, NO_MODE, dtype=object)
        out["next_severity"] = np.zeros(t.size, dtype=np.int8)
    degrading, onset, failure = _overlapping_event(t, window_ms, ev)
    out["degrading"] = degrading
    out["event_onset_ms"] = onset
    out["event_failure_ms"] = failure
    out["sensor_fault"] = interval_overlap(t, window_ms, ev.fault_start_ms, ev.fault_end_ms)
    out["anomaly"] = out["degrading"] | out["sensor_fault"]
    out["post_failure"] = interval_overlap(t, window_ms, ev.failure_ms + 1, ev.failure_ms + post_failure_ms)
    return out


def _overlapping_event(t: np.ndarray, window_ms: int, ev: VehicleEvents) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whether each window overlaps an [onset, failure] interval, and that interval (earliest failure)."""
    none = np.full(t.size, -1, dtype=np.int64)
    if ev.failure_ms.size == 0:
        return np.zeros(t.size, dtype=bool), none, none.copy()
    hit = (ev.onset_ms[None, :] <= t[:, None]) & (ev.failure_ms[None, :] > t[:, None] - window_ms)
    any_hit = hit.any(axis=1)
    first = hit.argmax(axis=1)  # failures are sorted: the earliest overlapping event
    onset = np.where(any_hit, ev.onset_ms[first], -1).astype(np.int64)
    failure = np.where(any_hit, ev.failure_ms[first], -1).astype(np.int64)
    return any_hit, onset, failure


# --- splits ------------------------------------------------------------------------------------------

def vehicle_strata(vehicle_ids: Sequence[str], first_mode: Mapping[str, str]) -> dict[str, str]:
    """Stratum of each vehicle: the mode of its first known failure, or 'healthy'."""
    return {v: first_mode.get(v) or "healthy" for v in vehicle_ids}


def assign_splits(strata: Mapping[str, str], fractions: Mapping[str, float], seed: int) -> dict[str, str]:
    """Vehicle -> split, every vehicle in exactly one split, stratified by ``strata``.

    Vehicles are shuffled within each stratum (seeded), strata are laid end to end, and each vehicle in
    turn goes to the split furthest below its target share, so every stratum spreads over the splits in
    proportion (a stratum of one vehicle lands where the running totals need it).

    >>> s = assign_splits({f"v{i}": "a" for i in range(10)}, {"train": 0.6, "validation": 0.2, "test": 0.2}, 0)
    >>> sorted(list(s.values()).count(k) for k in ("train", "validation", "test"))
    [2, 2, 6]
    """
    names = [k for k in ("train", "validation", "test") if fractions.get(k, 0) > 0] or list(fractions)
    total = sum(fractions[k] for k in names)
    target = np.array([fractions[k] / total for k in names])
    rng = np.random.default_rng(seed)
    ordered: list[str] = []
    for stratum in sorted(set(strata.values())):
        members = sorted(v for v, s in strata.items() if s == stratum)
        ordered += [members[i] for i in rng.permutation(len(members))]
    counts = np.zeros(len(names))
    out: dict[str, str] = {}
    for i, vehicle in enumerate(ordered):
        deficit = target * (i + 1) - counts
        k = int(np.argmax(deficit))
        counts[k] += 1
        out[vehicle] = names[k]
    return out


def temporal_cutoff_ms(start_ms: int, end_ms: int, horizons_days: Sequence[int], fraction: float) -> int | None:
    """Time after which test windows lie (and before which train/validation windows lie), if data allow.

    Applied only when ``fraction > 0``, the test side spans at least the longest horizon and the
    training side twice that (its labels are censored at the cut, so it needs room for negatives);
    otherwise ``None`` (vehicle-disjoint splits over the whole observation).

    >>> temporal_cutoff_ms(0, 120 * MS_PER_DAY, [7, 30], 0.5) == 60 * MS_PER_DAY
    True
    >>> temporal_cutoff_ms(0, 60 * MS_PER_DAY, [7, 30], 0.5) is None
    True
    """
    if fraction <= 0:
        return None
    cut = start_ms + int((end_ms - start_ms) * fraction)
    longest = max(horizons_days) * MS_PER_DAY
    if cut - start_ms < 2 * longest or end_ms - cut < longest:
        return None
    return cut
