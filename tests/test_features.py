"""Windows and the one feature function: determinism, batch == incremental, NaN robustness."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.schema import SCHEMA
from training.features import (
    FEATURE_NAMES,
    REQUIRED_COLUMNS,
    FeatureState,
    vehicle_feature_matrix,
    window_raw_features,
)
from training.windows import WindowAssembler, in_order_mask, window_index

HOUR = 3_600_000


def synthetic_frames(hours: float, interval_s: float = 30.0, seed: int = 0, start_ms: int = 0) -> dict[str, np.ndarray]:
    """Plausible frames: every sensor within its physical range, with noise and a driving pattern."""
    rng = np.random.default_rng(seed)
    n = int(hours * 3600 / interval_s)
    ts = start_ms + (np.arange(n) * interval_s * 1000).astype(np.int64)
    lo, hi = SCHEMA.lower_bounds, SCHEMA.upper_bounds
    mid = lo + 0.3 * (hi - lo)
    cols = {name: mid[j] + rng.normal(0, 0.01 * (hi[j] - lo[j]), n) for j, name in enumerate(SCHEMA.sensor_names)}
    driving = (np.sin(np.arange(n) / 50.0) > 0).astype(float)
    cols["speed"] = driving * (50 + rng.normal(0, 5, n)).clip(0)
    cols["pack_current"] = driving * 80 + rng.normal(0, 10, n)
    cols["charger_state"] = np.where(driving > 0, 0, 1).astype(float)
    cols["odometer"] = 1000 + np.cumsum(cols["speed"] * interval_s / 3600)
    cols["ts"] = ts
    return cols


def stream_features(cols: dict[str, np.ndarray], window_ms: int, stride_ms: int, chunk_sizes: list[int],
                    round_trip: bool = False) -> tuple[list[int], list[np.ndarray]]:
    """The online path: chunks of frames -> WindowAssembler -> FeatureState.update (as a twin does)."""
    asm, state = WindowAssembler(window_ms, stride_ms), FeatureState()
    ends, rows, start, k = [], [], 0, 0
    n = cols["ts"].size
    while start < n:
        size = chunk_sizes[k % len(chunk_sizes)]
        k += 1
        sl = slice(start, min(n, start + size))
        start = sl.stop
        frames = {c: cols[c][sl] for c in ("ts", *REQUIRED_COLUMNS)}
        for end, window in asm.push(cols["ts"][sl], frames):
            rows.append(state.update(window, end_ms=end))
            ends.append(end)
        if round_trip:
            asm = WindowAssembler.from_bytes(asm.to_bytes())
            state = FeatureState.from_bytes(state.to_bytes())
    return ends, rows


# --- windows -----------------------------------------------------------------------------------------

def test_tumbling_windows_partition_the_frames_and_leave_the_open_window_out() -> None:
    ts = np.arange(0, 10 * HOUR, 60_000, dtype=np.int64)
    ends, lo, hi = window_index(ts, HOUR, HOUR)
    assert ends.tolist() == [h * HOUR for h in range(10)]
    assert lo[1:].tolist() == hi[:-1].tolist()
    for e, a, b in zip(ends, lo, hi, strict=False):
        assert np.all((ts[a:b] > e - HOUR) & (ts[a:b] <= e))


def test_overlapping_windows_hold_every_frame_in_their_span() -> None:
    ts = np.arange(0, 6 * HOUR, 600_000, dtype=np.int64)
    ends, lo, hi = window_index(ts, 2 * HOUR, HOUR)
    for e, a, b in zip(ends, lo, hi, strict=False):
        inside = np.flatnonzero((ts > e - 2 * HOUR) & (ts <= e))
        assert (a, b) == (inside[0], inside[-1] + 1)


def test_empty_windows_in_a_gap_are_skipped_online_and_offline() -> None:
    ts = np.concatenate([np.arange(0, HOUR, 60_000), np.arange(5 * HOUR, 6 * HOUR + 1, 60_000)]).astype(np.int64)
    ends, _, _ = window_index(ts, HOUR, HOUR)
    asm = WindowAssembler(HOUR, HOUR)
    online = [end for end, _ in asm.push(ts, {"x": np.zeros(ts.size)})]
    assert online == ends.tolist()
    assert HOUR * 2 not in online


def test_frames_older_than_the_newest_are_dropped_the_same_way_online() -> None:
    ts = np.array([0, 10, 5, 20, 15, 30], dtype=np.int64)
    assert in_order_mask(ts).tolist() == [True, True, False, True, False, True]
    asm = WindowAssembler(20, 20)
    asm.push(ts[:3], {"x": np.zeros(3)})
    asm.push(ts[3:], {"x": np.zeros(3)})
    assert asm.late_frames == 2


# --- features: determinism, batch == incremental ----------------------------------------------------

def test_feature_names_are_unique_and_match_vector_length() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    cols = synthetic_frames(3)
    _, X = vehicle_feature_matrix(cols, HOUR, HOUR)
    assert X.shape[1] == len(FEATURE_NAMES) and X.dtype == np.float32


def test_features_are_deterministic() -> None:
    cols = synthetic_frames(30, seed=3)
    e1, X1 = vehicle_feature_matrix(cols, HOUR, HOUR)
    e2, X2 = vehicle_feature_matrix({k: v.copy() for k, v in cols.items()}, HOUR, HOUR)
    assert np.array_equal(e1, e2) and X1.tobytes() == X2.tobytes()  # NaN bits included


@pytest.mark.parametrize("window_h, stride_h", [(1, 1), (2, 1)])
@pytest.mark.parametrize("chunks", [[1], [7, 100, 3], [5000]])
def test_streaming_through_assembler_and_state_equals_offline_matrix(window_h, stride_h, chunks) -> None:
    cols = synthetic_frames(26, interval_s=60, seed=1)
    ends, X = vehicle_feature_matrix(cols, window_h * HOUR, stride_h * HOUR)
    online_ends, rows = stream_features(cols, window_h * HOUR, stride_h * HOUR, chunks, round_trip=chunks == [7, 100, 3])
    assert online_ends == ends.tolist()
    assert np.array_equal(np.stack(rows), X, equal_nan=True)


def test_state_refuses_bytes_from_another_feature_definition() -> None:
    blob = FeatureState().to_bytes().replace(b"features_hash", b"features_hasX")
    with pytest.raises(KeyError, match="features_hash"):
        FeatureState.from_bytes(blob)


# --- NaN robustness ----------------------------------------------------------------------------------

def _nan_features(X: np.ndarray) -> set[str]:
    return {name for name, bad in zip(FEATURE_NAMES, np.isnan(X).any(axis=0), strict=True) if bad}


def test_dropouts_carry_values_forward_and_a_sensor_never_sent_stays_missing() -> None:
    cols = synthetic_frames(48, seed=2)
    rng = np.random.default_rng(5)
    for name in REQUIRED_COLUMNS:
        cols[name] = np.where(rng.random(cols[name].size) < 0.3, np.nan, cols[name])
    cols["cell_voltage_max"][: 400] = np.nan  # a sensor silent for hours
    cols["coolant_flow"][:] = np.nan  # and one never reporting at all
    _, X = vehicle_feature_matrix(cols, HOUR, HOUR)
    assert not np.isinf(X).any()
    # While the cell-voltage sensor is silent its features are missing (no value ever existed), then finite.
    spread = X[:, FEATURE_NAMES.index("cell_v_spread_mean")]
    assert np.isnan(spread[0]) and np.isfinite(spread[4:]).all()
    # Every feature of the flow sensor is missing, never a made-up 0; features of other sensors are not.
    missing = _nan_features(X[4:])
    assert {"coolant_flow_mean", "flow_per_pump_krpm", "flow_per_krpm_acc1d", "coolant_dt_per_flow_z"} <= missing
    assert not {"coolant_temp_in_mean", "coolant_dt_mean", "pump_speed_mean", "motor_rise_per_krpm"} & missing
    # This vehicle never sleeps (its DC-DC converter is never off): the 12 V rest terms are missing too.
    assert {"sleep_aux_v_acc1d", "wake_dcdc_acc1d"} <= missing
    assert missing <= {n for n in FEATURE_NAMES if "flow" in n or n.startswith(("sleep_", "wake_", "aux_sleep"))}


def test_a_vehicle_without_speed_is_driving_by_motor_speed_or_current() -> None:
    ts = np.arange(0, 12 * HOUR, 60_000, dtype=np.int64)
    minute = ts // 60_000
    speed = np.where((minute // 20) % 3 == 0, 60.0, 0.0)  # 20 minutes of driving in every hour
    cols = {"ts": ts, **{c: np.full(ts.size, 1.0) for c in REQUIRED_COLUMNS}}
    cols.update(speed=speed, motor_speed=100.0 * speed, pack_current=1.5 * speed + 1.0, charger_state=np.zeros(ts.size))
    share = FEATURE_NAMES.index("driving_share")
    _, with_speed = vehicle_feature_matrix(cols, HOUR, HOUR)
    assert np.allclose(with_speed[1:, share], 1 / 3, atol=0.02)  # (the first window holds the first frame only)
    for absent in (("speed",), ("speed", "motor_speed")):
        reduced = {k: (np.full(ts.size, np.nan) if k in absent else v) for k, v in cols.items()}
        _, X = vehicle_feature_matrix(reduced, HOUR, HOUR)
        np.testing.assert_array_equal(X[:, share], with_speed[:, share], err_msg=str(absent))
    silent = {k: (np.full(ts.size, np.nan) if k in ("speed", "motor_speed", "pack_current", "charger_state",
                                                     "charge_power") else v) for k, v in cols.items()}
    _, X = vehicle_feature_matrix(silent, HOUR, HOUR)
    assert np.isnan(X[:, share]).all()  # no signal says whether it moves: unknown, not "parked"


def test_a_window_of_all_nan_frames_carries_the_last_valid_values_forward() -> None:
    cols = synthetic_frames(3, seed=4)
    ends, X = vehicle_feature_matrix(cols, HOUR, HOUR)
    state = FeatureState()
    for e in ends:
        sel = (cols["ts"] > e - HOUR) & (cols["ts"] <= e)
        last = state.update({c: cols[c][sel] for c in ("ts", *REQUIRED_COLUMNS)}, end_ms=int(e))
    blank = {c: np.full(10, np.nan) for c in REQUIRED_COLUMNS}
    x = state.update({"ts": np.arange(10, dtype=np.int64), **blank}, end_ms=int(ends[-1]) + HOUR)
    assert np.array_equal(np.isnan(x), np.isnan(last))  # what had a value keeps it, nothing is invented
    i = FEATURE_NAMES.index("cell_v_spread_mean")
    assert x[i] == last[i]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=40),
       st.integers(0, len(REQUIRED_COLUMNS) - 1))
def test_any_values_in_any_sensor_give_no_infinite_feature(values, column) -> None:
    n = len(values)
    window = {c: np.full(n, 1.0) for c in REQUIRED_COLUMNS}
    window[REQUIRED_COLUMNS[column]] = np.asarray(values, dtype=np.float64)
    state = FeatureState()
    for k in range(3):
        x = state.update({"ts": np.arange(n, dtype=np.int64), **window}, end_ms=k * HOUR)
        assert not np.isinf(x).any()
        assert np.isfinite(x[FEATURE_NAMES.index("n_frames")])


def test_empty_window_is_allowed_and_missing_not_zero() -> None:
    x = FeatureState().update({"ts": np.zeros(0, dtype=np.int64), **{c: np.zeros(0) for c in REQUIRED_COLUMNS}}, end_ms=0)
    assert x[FEATURE_NAMES.index("n_frames")] == 0 and np.isnan(x[FEATURE_NAMES.index("pack_voltage_mean")])
    assert not np.isinf(x).any()


# --- features measure what they say -----------------------------------------------------------------

def test_growing_cell_spread_shows_in_spread_trend_and_vehicle_delta() -> None:
    cols = synthetic_frames(24 * 20, interval_s=120, seed=6)
    days = cols["ts"] / 86_400_000
    growth = np.clip(days - 12, 0, None) * 0.01  # imbalance starts on day 12
    cols["cell_voltage_min"] = cols["cell_voltage_min"] - growth
    ends, X = vehicle_feature_matrix(cols, HOUR, HOUR)
    spread = X[:, FEATURE_NAMES.index("cell_v_spread_mean")]
    z = X[:, FEATURE_NAMES.index("cell_v_spread_mean_z")]
    trend = X[:, FEATURE_NAMES.index("cell_v_spread_mean_trend")]
    early, late = ends < 11 * 86_400_000, ends > 18 * 86_400_000
    assert spread[late].mean() > spread[early].mean() + 0.05
    assert z[late].mean() > 3 and abs(z[early][48:].mean()) < 1.5
    assert trend[late].mean() > trend[early].mean()


def test_raw_window_features_are_hand_checkable() -> None:
    n = 4
    values = np.full((n, len(REQUIRED_COLUMNS)), 1.0)
    j = {c: i for i, c in enumerate(REQUIRED_COLUMNS)}
    values[:, j["cell_voltage_max"]] = [4.0, 4.1, 4.2, np.nan]
    values[:, j["cell_voltage_min"]] = [3.9, 3.9, 4.0, 3.9]
    values[:, j["ambient_temp"]] = 20.0
    values[:, j["motor_temp"]] = [30.0, 40.0, 50.0, 60.0]
    raw = window_raw_features(values)
    from training.features import RAW_NAMES
    get = lambda name: raw[RAW_NAMES.index(name)]  # noqa: E731
    assert get("cell_v_spread_mean") == pytest.approx((0.1 + 0.2 + 0.2) / 3)
    assert get("cell_v_spread_max") == pytest.approx(0.2)
    assert get("motor_rise_mean") == pytest.approx(25.0)
    assert get("motor_temp_max") == pytest.approx(60.0)
    assert get("nan_share") == pytest.approx(1 / (n * len(REQUIRED_COLUMNS)))
    assert get("n_frames") == n


def test_a_reading_beyond_float32_range_saturates_instead_of_becoming_inf() -> None:
    """An odometer jump from 3.4e38 to -1e31 km (found by hypothesis) once made distance features inf."""
    window = {c: np.full(2, 1.0) for c in REQUIRED_COLUMNS}
    window["odometer"] = np.array([3.4028234663852886e38, -1.0141204801825835e31])
    state = FeatureState()
    for k in range(3):
        x = state.update({"ts": np.arange(2, dtype=np.int64), **window}, end_ms=k * HOUR)
        assert not np.isinf(x).any()  # NaN would be "missing"; inf is never a feature
