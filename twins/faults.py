"""Sensor faults of one vehicle, per *fitted* sensor, in episodes: out of range, spike, stuck, dropout, drift.

A vehicle's signal profile is learned from what it sends: NaN is "no reading", a sensor with fewer than
``fit_readings`` readings is *not fitted* (the vehicle may not have it) unless it is declared. A sensor
that never reported never counts as faulty and never raises an alert. Per sensor and frame:

* ``out_of_range``: a reading outside the schema's physical [min, max] (inf included), from the sensor's
  first reading on (an impossible value is a fault whatever came before). The other kinds judge fitted
  sensors only:
* ``spike``: a reading that jumps away from the previous one and straight back at the next, both steps
  larger than the sensor's bound: ``spike_fraction`` of its physical range (schema), or, if larger,
  ``_LEARNED_SPIKE_MARGIN`` x the largest such excursion it made in the twin's first ``spike_learn_ms``
  (a pump that cycles on and off between two readings learns that it does), to a value more than
  ``_SPIKE_ENVELOPE_MARGIN`` (20 %) of the physical range outside the range the sensor read then. None is
  flagged while learning; a spike is flagged at the reading that confirms it (the one after).
* ``stuck``: the same value, reading after reading, for ``stuck_ms`` of *active* time (frames where an
  ``activity`` signal exceeds its level: the vehicle drives; or, for a sensor that changed at nearly every
  reading while learned, where ``related_moving`` sensors of its schema subsystem change), and for
  ``stuck_factor`` times the longest such flat run the sensor made in its first ``stuck_learn_ms`` of active
  time, at a value it did not rest at then (signals legitimately flat while driving: charge power 0, an
  idle pump, learn that).
* ``dropout``: no reading for longer than ``dropout_ms`` (time, not frames: vehicles report at different
  rates) while frames keep arriving.
* ``drift``: a member of a redundancy group (sensors that read alike, e.g. the four tyre pressures) whose
  difference to the group median moved more than ``drift_fraction`` of its range from the difference it
  had over the group's first ``drift_learn_readings`` complete readings.

An episode of one (sensor, kind) starts at a faulty frame and raises ONE alert; it ends at the first good
reading more than ``clear_ms`` after its last faulty frame (the sensor recovered), after which a new fault
is a new episode. Every statistic is an exact integer or a sequential sum, so batching never changes the
state: frames one by one or in one call give the same bytes.

>>> tracker = SensorFaultTracker(np.array([0.0, 0.0]), np.array([10.0, 10.0]), FaultSettings(fit_readings=1))
>>> values = np.array([[1.0, np.nan], [20.0, np.nan], [2.0, np.nan]])
>>> [(e.seq, e.sensor, e.kind) for e in tracker.observe(np.array([1, 2, 3]), np.array([10, 20, 30]), values)]
[(2, 0, 'out_of_range')]
>>> tracker.fitted.tolist(), tracker.counts.tolist()  # sensor 1 never reported: not fitted, no fault
([True, False], [1, 0])
"""
from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from configs.schema import SCHEMA
from configs.settings import TwinsConfig
from twins.reorder import NO_SEQ

# A spike's reading lies this share of the physical range beyond where the sensor went while learned: a
# pump or HVAC that reaches a little higher than on its first day is not a spike.
_SPIKE_ENVELOPE_MARGIN = 0.2
_LEARNED_SPIKE_MARGIN = 1.5  # a spike must exceed the largest excursion learned by half again
_REST_VALUES = 8
_CONTINUOUS_SHARE = 0.9  # a continuous signal changes at least this often while its subsystem moves
_MIN_RELATED_READINGS = 100  # values a sensor may rest at while the vehicle is active (charger state 0, pump off, ...)


class FaultKind(StrEnum):
    OUT_OF_RANGE = "out_of_range"
    SPIKE = "spike"
    STUCK = "stuck"
    DROPOUT = "dropout"
    DRIFT = "drift"


KINDS: tuple[FaultKind, ...] = tuple(FaultKind)
_N_KINDS = len(KINDS)


@dataclass(frozen=True)
class FaultSettings:
    """Detection settings (``FaultSettings.from_config`` reads them from ``twins.*``); times in ms."""

    fit_readings: int = 10
    clear_ms: int = 30 * 60_000
    dropout_ms: int = 30 * 60_000
    stuck_ms: int = 60 * 60_000
    stuck_learn_ms: int = 12 * 3_600_000
    stuck_factor: float = 3.0
    activity: tuple[tuple[int, float], ...] = ()  # (sensor, level): the vehicle is active when |value| > level
    related: tuple[tuple[int, ...], ...] = ()  # groups of related sensors (the schema's subsystems)
    related_moving: int = 0  # a sensor is also active when this many related sensors change (0: off)
    spike_fraction: float = 0.2
    spike_learn_ms: int = 24 * 3_600_000
    drift_groups: tuple[tuple[int, ...], ...] = ()
    drift_fraction: float = 0.05
    drift_learn_readings: int = 60
    declared: tuple[int, ...] = ()  # sensors fitted from the first frame (a declared profile)

    @classmethod
    def from_config(cls, cfg: TwinsConfig, sensors: Sequence[str], vehicle_id: str = "") -> FaultSettings:
        """``vehicle_id`` picks its model's declared profile (``twins.vehicle_models``, first matching pattern)."""
        position = {name: j for j, name in enumerate(sensors)}
        declared = set(cfg.declared_sensors or ())
        model = next((m for pattern, m in cfg.vehicle_models.items() if fnmatch.fnmatchcase(vehicle_id, pattern)), None)
        if model is not None:
            declared |= set(cfg.sensor_profiles[model])
        return cls(
            fit_readings=cfg.sensor_fit_readings,
            clear_ms=int(cfg.sensor_fault_clear_minutes * 60_000),
            dropout_ms=int(cfg.sensor_dropout_minutes * 60_000),
            stuck_ms=int(cfg.sensor_stuck_minutes * 60_000),
            stuck_learn_ms=int(cfg.sensor_stuck_learn_hours * 3_600_000),
            stuck_factor=cfg.sensor_stuck_factor,
            activity=tuple((position[name], float(level)) for name, level in sorted(cfg.sensor_activity.items())),
            related=tuple(tuple(group) for group in _subsystems(sensors)),
            related_moving=cfg.sensor_stuck_related_moving,
            spike_fraction=cfg.sensor_spike_range_fraction,
            spike_learn_ms=int(cfg.sensor_spike_learn_hours * 3_600_000),
            drift_groups=tuple(tuple(position[name] for name in group) for group in cfg.sensor_drift_groups),
            drift_fraction=cfg.sensor_drift_range_fraction,
            drift_learn_readings=cfg.sensor_drift_learn_readings,
            declared=tuple(sorted(position[name] for name in declared)),
        )


def _subsystems(sensors: Sequence[str]) -> list[list[int]]:
    """Positions of ``sensors`` grouped by the schema's subsystem (sensors outside the schema: none)."""
    groups: dict[str, list[int]] = {}
    for j, name in enumerate(sensors):
        if name in SCHEMA.sensor_names:
            groups.setdefault(SCHEMA.field(name).subsystem, []).append(j)
    return [group for group in groups.values() if len(group) > 1]


@dataclass(frozen=True)
class FaultEpisode:
    """The first faulty frame of an episode (which raises the alert), its sensor (position) and kind."""

    ts_ms: int
    seq: int
    sensor: int
    kind: str


def _forward_fill_positions(mask: np.ndarray) -> np.ndarray:
    """Per (row, column): the latest row at or before it where ``mask`` holds, -1 if none."""
    rows = np.arange(mask.shape[0])[:, None]
    return np.maximum.accumulate(np.where(mask, rows, -1), axis=0)


def _take(matrix: np.ndarray, positions: np.ndarray, missing: float) -> np.ndarray:
    """``matrix[positions[r, j], j]`` where the position is >= 0, else ``missing``."""
    columns = np.arange(matrix.shape[1])[None, :]
    return np.where(positions >= 0, matrix[np.maximum(positions, 0), columns], missing)


class SensorFaultTracker:
    """The vehicle's signal profile, fault detection per fitted sensor and the episode state machine."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, settings: FaultSettings) -> None:
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self.settings = settings
        n = self.lower.size
        self.declared = np.zeros(n, dtype=bool)
        self.declared[list(settings.declared)] = True
        self.readings = np.zeros(n, dtype=np.int64)  # non-NaN readings seen
        self.first_ts = NO_SEQ
        self.last_frame_ts = NO_SEQ
        self.max_ts = NO_SEQ
        self.last_reading_ts = np.full(n, NO_SEQ, dtype=np.int64)
        self.last_values = np.full((2, n), np.nan)  # the two latest good readings (older, newer)
        self.flat_ms = np.zeros(n, dtype=np.int64)  # active time since the reading last changed
        self.active_ms = np.zeros(n, dtype=np.int64)  # active time seen while fitted (stuck learning)
        self.longest_flat_ms = np.zeros(n, dtype=np.int64)
        self.rest_values = np.full((n, _REST_VALUES), np.nan)
        self.learned_excursion = np.zeros(n, dtype=np.float64)
        self.related_readings = np.zeros(n, dtype=np.int64)  # while learning, its subsystem moving
        self.related_changes = np.zeros(n, dtype=np.int64)
        self.envelope = np.vstack([np.full(n, np.inf), np.full(n, -np.inf)])  # (min, max) read while learning
        self.drift_sum = np.zeros(n, dtype=np.float64)
        self.drift_n = np.zeros(n, dtype=np.int64)
        self.open = np.zeros((n, _N_KINDS), dtype=bool)
        self.last_bad_ts = np.full((n, _N_KINDS), NO_SEQ, dtype=np.int64)
        self.counts = np.zeros(n, dtype=np.int64)  # faulty frames per (fitted) sensor
        self.episodes = np.zeros((n, _N_KINDS), dtype=np.int64)

    @property
    def fitted(self) -> np.ndarray:
        """Per sensor: fitted (declared, or at least ``fit_readings`` readings)."""
        return self.declared | (self.readings >= self.settings.fit_readings)

    def open_faults(self) -> list[tuple[int, str]]:
        """(sensor, kind) of the episodes in progress."""
        return [(int(j), str(KINDS[k])) for j, k in zip(*np.nonzero(self.open), strict=True)]

    def observe(self, seq: np.ndarray, ts: np.ndarray, values: np.ndarray) -> list[FaultEpisode]:
        """Frames in seq order (rows x sensors, NaN = no reading): the episodes that start, in frame order."""
        if seq.size == 0:
            return []
        s = self.settings
        ts = np.asarray(ts, dtype=np.int64)
        v = np.asarray(values, dtype=np.float64)
        if self.first_ts == NO_SEQ:
            self.first_ts = int(ts[0])
        present = ~np.isnan(v)
        with np.errstate(invalid="ignore"):
            good = present & (v >= self.lower) & (v <= self.upper)  # finite and physical
        if self.fitted.all():  # the usual case once a twin knows its vehicle
            fitted = np.ones(v.shape, dtype=bool)
        else:
            fitted = self.declared | ((self.readings + np.cumsum(present, axis=0)) >= s.fit_readings)
        bad = np.empty((_N_KINDS,) + v.shape, dtype=bool)  # kind x rows x sensors
        bad[KINDS.index(FaultKind.OUT_OF_RANGE)] = present & ~good
        bad[KINDS.index(FaultKind.DROPOUT)] = self._dropouts(ts, present)
        running_max = np.maximum.accumulate(np.concatenate([[self.max_ts], ts]))[1:]
        self.max_ts = int(running_max[-1])
        learning = (running_max - self.first_ts < s.spike_learn_ms)[:, None]  # a prefix of the rows
        bad[KINDS.index(FaultKind.SPIKE)], changed, unchanged = self._spikes(v, good, learning & fitted)
        bad[KINDS.index(FaultKind.STUCK)] = self._stuck(ts, v, good, fitted, changed, unchanged)
        bad[KINDS.index(FaultKind.DRIFT)] = self._drift(v, good)
        bad &= fitted[None]
        # An impossible reading is a fault from the first one: the sensor sends (it is there), and what it
        # sends cannot be physical. The fitting rule only keeps statistical kinds from judging too early.
        bad[KINDS.index(FaultKind.OUT_OF_RANGE)] = present & ~good
        self.counts += bad.any(axis=0).sum(axis=0)
        self.readings += present.sum(axis=0)
        self.last_frame_ts = int(ts[-1])
        if not self.open.any() and not bad.any():
            return []
        return self._episodes(seq, ts, bad, good, present)

    # ------------------------------------------------------------------ detectors
    def _dropouts(self, ts: np.ndarray, present: np.ndarray) -> np.ndarray:
        # A declared sensor never heard from counts from the twin's first frame.
        if present.all():  # the usual batch: every sensor read in every frame
            self.last_reading_ts = np.full(present.shape[1], ts[-1], dtype=np.int64)
            return np.zeros(present.shape, dtype=bool)
        before = np.where(self.last_reading_ts == NO_SEQ, self.first_ts, self.last_reading_ts)
        positions = _forward_fill_positions(present)
        last = np.where(positions >= 0, ts[np.maximum(positions, 0)], before).astype(np.int64)
        self.last_reading_ts = last[-1].copy()
        self.last_reading_ts[(self.readings == 0) & ~present.any(axis=0)] = NO_SEQ
        return ~present & (ts[:, None] - last > self.settings.dropout_ms)

    def _spikes(self, v: np.ndarray, good: np.ndarray, learning: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Spikes, and per row whether a good reading changed / repeated the previous good reading."""
        extended = np.vstack([self.last_values, np.where(good, v, np.nan)])
        all_good = bool(good.all())
        if all_good:  # the usual batch: the previous good reading is the row before (or the carried ones)
            previous, earlier = extended[1:-1], extended[:-2]
        else:
            latest = _forward_fill_positions(~np.isnan(extended))
            previous_pos = latest[1:-1]  # per batch row: the latest good reading before it
            earlier_pos = _take(np.vstack([np.full((1, v.shape[1]), -1), latest]), previous_pos, -1).astype(np.int64)
            previous = _take(extended, previous_pos, np.nan)
            earlier = _take(extended, earlier_pos, np.nan)
        with np.errstate(invalid="ignore"):
            changed = good & ~np.isnan(previous) & (v != previous)
            unchanged = good & (v == previous)
            step_in, step_out = previous - earlier, v - previous
            excursion = np.where(good & (step_in * step_out < 0)
                                 & (np.abs(v - earlier) < 0.5 * np.minimum(np.abs(step_in), np.abs(step_out))),
                                 np.minimum(np.abs(step_in), np.abs(step_out)), 0.0)  # NaN compares False: 0
        # Learning rows are a prefix: every row after them sees the final learned excursion and envelope.
        self.learned_excursion = np.maximum(self.learned_excursion, np.where(learning, excursion, 0.0).max(axis=0))
        learned = learning & good
        self.envelope[0] = np.minimum(self.envelope[0], np.where(learned, v, np.inf).min(axis=0))
        self.envelope[1] = np.maximum(self.envelope[1], np.where(learned, v, -np.inf).max(axis=0))
        bound = np.maximum(self.settings.spike_fraction * (self.upper - self.lower),
                           _LEARNED_SPIKE_MARGIN * self.learned_excursion)
        # The spike's reading left where the sensor went while learned (an on/off pump cycling stays inside).
        margin = _SPIKE_ENVELOPE_MARGIN * (self.upper - self.lower)
        outside = (previous < self.envelope[0] - margin) | (previous > self.envelope[1] + margin)
        spike = ~learning & (excursion > bound) & outside
        if all_good:
            self.last_values = extended[-2:].copy()
        else:
            last_two = latest[-1], _take(np.vstack([np.full((1, v.shape[1]), -1), latest]),
                                         latest[-1][None, :], -1)[0].astype(np.int64)
            self.last_values = np.vstack([_take(extended, last_two[1][None, :], np.nan),
                                          _take(extended, last_two[0][None, :], np.nan)])
        return spike, changed, unchanged

    def _stuck(self, ts: np.ndarray, v: np.ndarray, good: np.ndarray, fitted: np.ndarray, changed: np.ndarray,
               unchanged: np.ndarray) -> np.ndarray:
        s = self.settings
        if not s.activity and not s.related_moving:
            return np.zeros(v.shape, dtype=bool)
        previous_ts = np.concatenate([[self.last_frame_ts if self.last_frame_ts != NO_SEQ else ts[0]], ts[:-1]])
        dt = np.maximum(ts - previous_ts, 0)[:, None]
        with np.errstate(invalid="ignore"):
            driving = np.zeros((ts.size, 1), dtype=bool)
            for j, level in s.activity:
                driving[:, 0] |= np.abs(v[:, j]) > level  # NaN: not a sign of activity
        active = driving
        if s.related_moving:
            related = np.zeros(v.shape, dtype=bool)
            for group in s.related:
                members = list(group)
                moving = changed[:, members].sum(axis=1, keepdims=True) - changed[:, members]
                related[:, members] = moving >= s.related_moving
            active = driving | related
        active_total = self.active_ms + np.cumsum(np.where(active & fitted & good, dt, 0), axis=0)
        learning = active_total < s.stuck_learn_ms  # a prefix of the rows
        if s.related_moving:
            # Related sensors moving count as activity only for a sensor that, while learned, changed at nearly
            # every such reading (a noisy analog signal); an odometer or a wear estimate rests while parked.
            sample = related & fitted & good & learning
            self.related_readings += sample.sum(axis=0)
            self.related_changes += (sample & changed).sum(axis=0)
            continuous = ((self.related_readings >= _MIN_RELATED_READINGS)
                          & (self.related_changes >= _CONTINUOUS_SHARE * self.related_readings))
            active = np.where(learning, active, driving | (related & continuous))
        cumulative = np.cumsum(np.where(unchanged & active & fitted, dt, 0), axis=0)
        reset = _forward_fill_positions(changed)
        base = np.where(reset >= 0, _take(cumulative, reset, 0), -self.flat_ms).astype(np.int64)
        flat = cumulative - base
        flat_before = np.vstack([self.flat_ms[None, :], flat[:-1]])
        self.longest_flat_ms = np.maximum(self.longest_flat_ms,
                                          np.where(changed & learning, flat_before, 0).max(axis=0))
        self._learn_rest_values(v, unchanged & active & fitted & learning)
        self.flat_ms, self.active_ms = flat[-1].copy(), active_total[-1].copy()
        threshold = np.maximum(s.stuck_ms, s.stuck_factor * self.longest_flat_ms)
        stuck = unchanged & ~learning & (flat >= threshold)
        if stuck.any():  # rare: only then compare with the values the sensor rests at
            rows, columns = np.nonzero(stuck)
            stuck[rows, columns] = ~(v[rows, columns, None] == self.rest_values[columns]).any(axis=1)
        return stuck

    def _learn_rest_values(self, v: np.ndarray, repeated: np.ndarray) -> None:
        """The first ``_REST_VALUES`` distinct values each sensor repeated while active (in frame order)."""
        for j in np.flatnonzero(repeated.any(axis=0)):
            known = self.rest_values[j][~np.isnan(self.rest_values[j])]
            room = _REST_VALUES - known.size
            if room <= 0:
                continue
            values = v[repeated[:, j], j]
            distinct, first = np.unique(values, return_index=True)
            new = distinct[np.argsort(first)]
            new = new[~np.isin(new, known)][:room]
            self.rest_values[j, known.size:known.size + new.size] = new

    def _drift(self, v: np.ndarray, good: np.ndarray) -> np.ndarray:
        s = self.settings
        drift = np.zeros(v.shape, dtype=bool)
        for group in s.drift_groups:
            members = list(group)
            rows = np.flatnonzero(good[:, members].all(axis=1))
            if rows.size == 0:
                continue
            difference = v[np.ix_(rows, members)] - np.median(v[np.ix_(rows, members)], axis=1, keepdims=True)
            n_before = int(self.drift_n[members[0]])
            learn = max(0, min(rows.size, s.drift_learn_readings - n_before))
            # Sequential sums (as frame by frame): the offsets of the learning readings.
            sums = np.cumsum(np.vstack([self.drift_sum[members][None, :], difference[:learn]]), axis=0)
            self.drift_sum[members] = sums[-1]
            self.drift_n[members] = n_before + learn
            if n_before + learn < s.drift_learn_readings or learn == rows.size:
                continue
            offset = self.drift_sum[members] / s.drift_learn_readings
            tolerance = s.drift_fraction * (self.upper[members] - self.lower[members])
            drift[np.ix_(rows[learn:], members)] = np.abs(difference[learn:] - offset) > tolerance
        return drift

    # ------------------------------------------------------------------ episodes
    def _episodes(self, seq: np.ndarray, ts: np.ndarray, bad: np.ndarray, good: np.ndarray,
                  present: np.ndarray) -> list[FaultEpisode]:
        clear = self.settings.clear_ms
        started: list[tuple[int, int, int]] = []  # (row, sensor, kind)
        for j, k in zip(*np.nonzero(bad.any(axis=1).T | self.open), strict=True):
            faulty = bad[k, :, j]
            recovered = (present[:, j] if KINDS[k] == FaultKind.DROPOUT else good[:, j]) & ~faulty
            is_open, last_bad = bool(self.open[j, k]), int(self.last_bad_ts[j, k])
            row = 0
            while row < ts.size:
                if not is_open:
                    upcoming = np.flatnonzero(faulty[row:])
                    if upcoming.size == 0:
                        break
                    row += int(upcoming[0])
                    started.append((row, int(j), int(k)))
                    is_open, last_bad = True, int(ts[row])
                    row += 1
                    continue
                bad_ts = np.where(faulty[row:], ts[row:], NO_SEQ)
                latest_bad = np.maximum.accumulate(np.concatenate([[last_bad], bad_ts]))[:-1]
                ends = np.flatnonzero(recovered[row:] & (ts[row:] > latest_bad + clear))
                if ends.size == 0:
                    last_bad = max(last_bad, int(bad_ts.max()))
                    break
                last_bad = int(latest_bad[ends[0]])
                row += int(ends[0])
                is_open = False
            self.open[j, k], self.last_bad_ts[j, k] = is_open, last_bad
        started.sort()
        for _, j, k in started:
            self.episodes[j, k] += 1
        return [FaultEpisode(int(ts[r]), int(seq[r]), j, str(KINDS[k])) for r, j, k in started]

    # ------------------------------------------------------------------ state
    _SCALARS = ("first_ts", "last_frame_ts", "max_ts")
    _ARRAYS = ("readings", "last_reading_ts", "last_values", "flat_ms", "active_ms", "longest_flat_ms",
               "rest_values", "learned_excursion", "envelope", "related_readings", "related_changes",
               "drift_sum", "drift_n", "open", "last_bad_ts", "counts", "episodes")

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({name: getattr(self, name) for name in self._SCALARS},
                {name: getattr(self, name) for name in self._ARRAYS})

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], lower: np.ndarray, upper: np.ndarray,
                   settings: FaultSettings) -> SensorFaultTracker:
        tracker = cls(lower, upper, settings)
        for name in cls._SCALARS:
            setattr(tracker, name, int(meta[name]))
        for name in cls._ARRAYS:
            setattr(tracker, name, arrays[name].astype(getattr(tracker, name).dtype))
        return tracker
