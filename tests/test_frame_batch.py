"""``configs.frames.FrameBatch`` as the one in-process batch: building one vehicle's, concatenating, slicing, and
the generator's day (schema dtypes, the Parquet form) converted to it exactly as the Arrow path converts it."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from configs.frames import N_SENSORS, SENSORS, FrameBatch
from configs.settings import load_config
from simulation.fleet import sample_profile
from simulation.generator import simulate_vehicle


def _vehicle(vehicle_id: str, seq: list[int], first_value: float = 0.0) -> FrameBatch:
    n = len(seq)
    values = first_value + np.arange(n * N_SENSORS, dtype=np.float32).reshape(n, N_SENSORS)
    return FrameBatch.of_vehicle(vehicle_id, np.array(seq), np.array(seq) * 1000, values)


def test_of_vehicle_refuses_columns_that_do_not_fit_and_names_them() -> None:
    with pytest.raises(ValueError, match=r"values must be rows x"):
        FrameBatch.of_vehicle("A", np.arange(3), np.arange(3), np.zeros((3, N_SENSORS - 1)))
    with pytest.raises(ValueError, match=r"seq \(3,\), ts \(2,\)"):
        FrameBatch.of_vehicle("A", np.arange(3), np.arange(2), np.zeros((3, N_SENSORS)))
    batch = FrameBatch.of_vehicle("A", np.arange(2), np.arange(2), np.zeros((2, N_SENSORS)))
    assert batch.values.dtype == np.float32 and batch.seq.dtype == batch.ts.dtype == np.int64


def test_concat_groups_each_vehicles_rows_in_batch_order() -> None:
    a1, b1, a2, c0 = _vehicle("A", [1, 2]), _vehicle("B", [5]), _vehicle("A", [3, 4], 100.0), _vehicle("C", [])
    joined = FrameBatch.concat([a1, c0, b1, a2])
    assert joined.vehicle_ids == ["A", "B"]  # C has no frames: no empty run for it
    assert joined.offsets.tolist() == [0, 4, 5]
    assert joined.seq.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(joined.values, np.concatenate([a1.values, a2.values, b1.values]))
    parts = dict(joined.parts())
    assert parts["A"]["ts"].tolist() == [1000, 2000, 3000, 4000]
    # Multi-vehicle batches concatenate the same way (a vehicle of a later batch joins its earlier run).
    again = FrameBatch.concat([FrameBatch.concat([a1, b1]), a2])
    np.testing.assert_array_equal(again.offsets, joined.offsets)
    np.testing.assert_array_equal(again.values, joined.values)
    assert FrameBatch.concat([c0]).rows == 0


def test_concat_of_a_batch_and_a_round_trip_through_columns_give_the_batch_back() -> None:
    batch = FrameBatch.concat([_vehicle("B", [7, 8, 9]), _vehicle("A", [1, 2])])
    same = FrameBatch.concat([batch])
    assert same.vehicle_ids == batch.vehicle_ids and same.seq.tolist() == batch.seq.tolist()
    back, refused = FrameBatch.from_columns(batch.to_columns())
    assert not refused
    assert back.vehicle_ids == ["A", "B"]  # from_columns sorts the vehicles
    assert dict((v, p["seq"].tolist()) for v, p in back.parts()) == {"A": [1, 2], "B": [7, 8, 9]}
    np.testing.assert_array_equal(back.select([1]).values, batch.select([0]).values)


def test_slice_rows_keeps_the_vehicles_it_cuts_through_and_the_time_span() -> None:
    batch = FrameBatch.concat([_vehicle("A", [1, 2, 3]), _vehicle("B", [4, 5])])
    middle = batch.slice_rows(2, 4)
    assert middle.vehicle_ids == ["A", "B"] and middle.offsets.tolist() == [0, 1, 2]
    assert (middle.first_ts, middle.last_ts) == (3000, 4000)
    assert batch.slice_rows(3, 5).vehicle_ids == ["B"]
    assert batch.slice_rows(4, 99).seq.tolist() == [5]
    empty = batch.slice_rows(3, 3)
    assert empty.rows == 0 and empty.vehicle_ids == [] and empty.offsets.tolist() == [0]
    one = _vehicle("A", [1, 2, 3]).slice_rows(1, 3)
    assert one.vehicle_ids == ["A"] and one.offsets.tolist() == [0, 2] and one.seq.tolist() == [2, 3]
    assert _vehicle("A", [1, 2, 3]).slice_rows(2, 1).vehicle_ids == []
    with pytest.raises(ValueError, match="last_ts of a FrameBatch without frames"):
        _ = empty.last_ts


def test_the_generators_day_converts_to_the_frame_batch_the_arrow_path_makes() -> None:
    """One conversion: ``VehicleChunk.frames()`` == ``FrameBatch.from_columns(chunk.to_record_batch())``; int8
    charger_state survives float32 exactly, the float64 fields (odometer, position) do not, which is why the
    generator keeps its schema-dtype day for Parquet."""
    config = load_config(None, ["simulation.num_vehicles=1", "simulation.duration_days_per_vehicle=2",
                                "simulation.sensor_fault_rate_per_day=1", "simulation.frame_interval_s=300"])
    profile = sample_profile(config.simulation, 3, 0)
    chunks = list(simulate_vehicle(profile, config.simulation, 3))
    assert len(chunks) >= 2
    for chunk in chunks:
        frames = chunk.frames()
        via_arrow, refused = FrameBatch.from_columns(pa.Table.from_batches([chunk.to_record_batch()]))
        assert not refused and frames.vehicle_ids == via_arrow.vehicle_ids == [profile.vehicle_id]
        np.testing.assert_array_equal(frames.seq, via_arrow.seq)
        np.testing.assert_array_equal(frames.ts, via_arrow.ts)
        np.testing.assert_array_equal(frames.values, via_arrow.values)
        charger = frames.values[:, SENSORS.index("charger_state")]
        np.testing.assert_array_equal(charger.astype(np.int8), chunk.columns["charger_state"])
        assert set(np.unique(chunk.columns["charger_state"]).tolist()) <= {0, 1, 2, 3}
    odometer = np.concatenate([c.columns["odometer"] for c in chunks])
    assert odometer.dtype == np.float64
    assert (odometer.astype(np.float32).astype(np.float64) != odometer).any()
