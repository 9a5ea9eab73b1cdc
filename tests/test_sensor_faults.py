"""Sensor faults per fitted sensor (``twins.faults``): one table-driven case per kind, the profile, and the
episode state machine against a frame-by-frame reference (hypothesis)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.settings import load_config
from twins.faults import FaultSettings, SensorFaultTracker
from twins.twin import SENSORS

# A small vehicle at 1 Hz: 0 speed (the activity signal), 1-2 temperatures, 3-6 four tyre pressures.
LOWER = np.array([0.0, -40.0, -40.0, 0.0, 0.0, 0.0, 0.0])
UPPER = np.array([250.0, 90.0, 90.0, 450.0, 450.0, 450.0, 450.0])
SETTINGS = FaultSettings(fit_readings=5, clear_ms=10_000, dropout_ms=30_000, stuck_ms=60_000, stuck_learn_ms=120_000,
                         stuck_factor=2.0, activity=((0, 1.0),), spike_fraction=0.2, spike_learn_ms=120_000,
                         drift_groups=((3, 4, 5, 6),), drift_fraction=0.05, drift_learn_readings=60)
N = 900


def healthy(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.empty((N, LOWER.size))
    values[:, 0] = 40 + 20 * np.sin(np.arange(N) / 50) + rng.normal(0, 1, N)
    values[:, 1] = 30 + np.cumsum(rng.normal(0, 0.05, N))
    values[:, 2] = 35 + np.cumsum(rng.normal(0, 0.05, N))
    values[:, 3:] = 240 + np.array([0.0, 3.0, -2.0, 1.0]) + rng.normal(0, 0.5, (N, 4))
    return values


def run(values: np.ndarray, chunk: int | None = None) -> tuple[list[tuple[int, int, str]], SensorFaultTracker]:
    tracker = SensorFaultTracker(LOWER, UPPER, SETTINGS)
    seq = np.arange(1, N + 1)
    ts = 1_700_000_000_000 + 1000 * np.arange(N)
    episodes = []
    step = chunk or N
    for lo in range(0, N, step):
        episodes += [(e.seq, e.sensor, e.kind) for e in tracker.observe(seq[lo:lo + step], ts[lo:lo + step],
                                                                          values[lo:lo + step])]
    return episodes, tracker


def _out_of_range(v: np.ndarray) -> None:
    v[500, 1] = 500.0


def _spike(v: np.ndarray) -> None:
    v[500, 1] += 50.0


def _stuck(v: np.ndarray) -> None:
    v[500:800, 2] = v[500, 2]


def _dropout(v: np.ndarray) -> None:
    v[500:700, 1] = np.nan


def _drift(v: np.ndarray) -> None:
    v[400:, 4] += np.linspace(0, 40, N - 400)


def _missing_everywhere(v: np.ndarray) -> None:
    v[:, 2] = np.nan


def _missing_but_for_an_impossible_value(v: np.ndarray) -> None:
    v[:, 2] = np.nan
    v[300, 2] = 999.0  # its only reading is impossible: a fault although the sensor never fitted


@pytest.mark.parametrize(("inject", "expected"), [
    (None, []),
    (_out_of_range, [(501, 1, "out_of_range")]),
    (_spike, [(502, 1, "spike")]),  # confirmed by the reading after it
    (_stuck, [(561, 2, "stuck")]),  # held from row 500: 60 s flat while driving (its own flat runs: ~0)
    (_dropout, [(531, 1, "dropout")]),  # last reading at row 499: row 530 is 31 s later
    (_drift, [(None, 4, "drift")]),
    (_missing_everywhere, []),
    (_missing_but_for_an_impossible_value, [(301, 2, "out_of_range")]),
], ids=["healthy", "out_of_range", "spike", "stuck", "dropout", "drift", "never_sent", "one_impossible_reading"])
def test_each_kind_raises_one_episode_naming_the_sensor(inject, expected) -> None:
    values = healthy()
    if inject is not None:
        inject(values)
    episodes, tracker = run(values)
    if expected and expected[0][0] is None:  # drift: when depends on the noise; once, after ~22.5 kPa
        assert [(s, k) for _, s, k in episodes] == [(4, "drift")] and 400 + 0.5 * 500 < episodes[0][0]
    else:
        learned_flat = int(tracker.longest_flat_ms[2])
        assert episodes == expected, f"longest learned flat run of sensor 2: {learned_flat} ms"
    assert tracker.episodes.sum() == len(expected)
    assert (tracker.counts > 0).sum() == len({s for _, s, _ in expected})


def test_not_fitted_sensors_are_reported_as_such() -> None:
    values = healthy()
    _missing_everywhere(values)
    _, tracker = run(values)
    assert tracker.fitted.tolist() == [True, True, False, True, True, True, True]


def test_a_declared_sensor_that_never_reports_is_a_dropout() -> None:
    values = healthy()
    _missing_everywhere(values)
    tracker = SensorFaultTracker(LOWER, UPPER, FaultSettings(**{**SETTINGS.__dict__, "declared": (2,)}))
    episodes = tracker.observe(np.arange(1, N + 1), 1000 * np.arange(N), values)
    assert [(e.seq, e.sensor, e.kind) for e in episodes] == [(32, 2, "dropout")]


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_batching_never_changes_the_episodes_or_the_state(chunk: int) -> None:
    values = healthy()
    values[300, 1] += 50.0  # a spike before the dropout of the same sensor
    for inject in (_stuck, _dropout, _drift):
        inject(values)
    whole, whole_tracker = run(values)
    split, split_tracker = run(values, chunk)
    assert whole == split and len(whole) == 4
    for (key, a), b in zip(whole_tracker.to_state()[1].items(), split_tracker.to_state()[1].values(), strict=True):
        assert np.array_equal(a, b, equal_nan=True), key


def test_the_config_builds_the_settings_and_refuses_unknown_sensors_by_name() -> None:
    cfg = load_config(overrides=['twins.sensor_drift_groups=[["tyre_pressure_fl","tyre_pressure_fr","tyre_pressure_rl"]]',
                                 'twins.declared_sensors=["soc"]']).twins
    built = FaultSettings.from_config(cfg, SENSORS)
    assert built.declared == (SENSORS.index("soc"),) and len(built.drift_groups[0]) == 3
    with pytest.raises(Exception, match="warp_drive"):
        load_config(overrides=['twins.declared_sensors=["warp_drive"]'])
    with pytest.raises(Exception, match="'van'"):
        load_config(overrides=['twins.vehicle_models={"VAN-*": "van"}'])


def test_a_vehicle_model_declares_its_profile() -> None:
    cfg = load_config(overrides=['twins.sensor_profiles={"van": ["soc", "speed"], "car": ["soh"]}',
                                 'twins.vehicle_models={"VAN-*": "van", "*": "car"}']).twins
    van = FaultSettings.from_config(cfg, SENSORS, "VAN-0007")
    car = FaultSettings.from_config(cfg, SENSORS, "CAR-1")
    assert van.declared == tuple(sorted((SENSORS.index("soc"), SENSORS.index("speed"))))
    assert car.declared == (SENSORS.index("soh"),)


# ------------------------------------------------------------------ the episode state machine
def reference(ts: list[int], x: list[float], fit: int, clear: int) -> list[int]:
    """Frame by frame, out-of-range faults of one sensor in [0, 10]: the rows whose frames start an episode.

    An impossible reading is a fault from the sensor's first reading (``fit`` does not gate it)."""
    is_open, last_bad, starts = False, 0, []
    for row, (t, value) in enumerate(zip(ts, x, strict=True)):
        present = not np.isnan(value)
        bad = present and not 0 <= value <= 10
        good = present and 0 <= value <= 10
        if is_open:
            if bad:
                last_bad = t
            elif good and t > last_bad + clear:
                is_open = False
        elif bad:
            is_open, last_bad = True, t
            starts.append(row)
    return starts


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5_000), st.sampled_from(["good", "bad", "missing"])), min_size=1, max_size=80),
       st.integers(1, 4), st.integers(0, 8_000), st.integers(1, 9))
def test_one_alert_per_episode_recovery_ends_it_and_never_one_for_a_sensor_never_sent(frames, fit, clear, chunk) -> None:
    ts = np.cumsum([gap for gap, _ in frames]).astype(np.int64)
    x = np.array([{"good": 5.0, "bad": 50.0, "missing": np.nan}[kind] for _, kind in frames])
    rules = FaultSettings(fit_readings=fit, clear_ms=clear, dropout_ms=10**12, spike_fraction=1.0)
    tracker = SensorFaultTracker(np.array([0.0]), np.array([10.0]), rules)
    starts = []
    seq = np.arange(ts.size)
    for lo in range(0, ts.size, chunk):
        starts += [e.seq for e in tracker.observe(seq[lo:lo + chunk], ts[lo:lo + chunk], x[lo:lo + chunk, None])]
    assert starts == reference(ts.tolist(), x.tolist(), fit, clear)
    if np.isnan(x).all():  # never sent: never a fault
        assert starts == [] and tracker.counts.sum() == 0


def test_stuck_while_related_sensors_move_but_not_a_sensor_that_rests_while_parked() -> None:
    """Parked (no activity signal above its level): a noisy temperature held flat is stuck, while a
    counter-like sensor of the same subsystem (flat most readings, like an odometer) is not."""
    values = healthy()
    values[:, 0] = 0.0  # parked all along: no driving time
    rows = np.arange(N)  # a counter-like sensor: steps every 20 readings while learned, then every 300
    values[:, 5] = 240 + np.where(rows < 150, np.floor(rows / 20), 8 + np.floor((rows - 150) / 300))
    _stuck(values)  # sensor 2 held from row 500
    related = FaultSettings(**{**SETTINGS.__dict__, "related": ((1, 2, 3, 4, 5, 6),), "related_moving": 2,
                               "drift_groups": ()})
    tracker = SensorFaultTracker(LOWER, UPPER, related)
    episodes = tracker.observe(np.arange(1, N + 1), 1000 * np.arange(N), values)
    assert [(e.sensor, e.kind) for e in episodes] == [(2, "stuck")]


def test_a_reading_a_little_above_the_learned_range_is_not_a_spike() -> None:
    """A pump that once reaches a little higher than on its first day (seen in the demo fleet: 6 false alerts):
    learned between 0 and 5 of a 0-10 range, a one-reading jump to 6.5 (0.15 of the range above) is its
    normal work, one to 9.5 (0.45 above) is a spike."""
    rules = FaultSettings(fit_readings=1, spike_learn_ms=100 * 60_000, dropout_ms=10**12, stuck_ms=10**12)
    tracker = SensorFaultTracker(np.array([0.0]), np.array([10.0]), rules)
    values = np.zeros(400)
    values[:100] = np.concatenate([np.linspace(0.0, 5.0, 50), np.linspace(5.0, 0.0, 50)])  # learned, no blips
    values[200] = 6.5
    values[300] = 9.5
    ts = np.arange(values.size, dtype=np.int64) * 60_000
    episodes = tracker.observe(np.arange(values.size), ts, values[:, None])
    assert [(e.seq, e.kind) for e in episodes] == [(301, "spike")]
