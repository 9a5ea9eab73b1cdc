"""FrameBatch <-> columns: values survive the trip, structure errors name field and value, physics never refuses."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.schema import SCHEMA
from protos.evtwin.v1 import telemetry_pb2
from serving.codec import (
    BatchLimits,
    WireError,
    decode_batch,
    decode_columns,
    encode_columns,
    encode_record_batch,
    summary_to_proto,
)

NOW = 1_767_600_000_000
LIMITS = BatchLimits(max_batch_frames=1000, max_future_skew_ms=60_000)


def _columns(n: int, vehicles: tuple[str, ...] = ("V1",)) -> dict[str, np.ndarray]:
    vehicle = np.array([vehicles[i % len(vehicles)] for i in range(n)])
    seq = np.zeros(n, dtype=np.int64)
    for v in vehicles:
        rows = vehicle == v
        seq[rows] = np.arange(1, rows.sum() + 1)
    columns = {"vehicle_id": vehicle, "ts": NOW - 10_000 * n + 10_000 * np.arange(n), "seq": seq}
    for spec in SCHEMA.fields:
        columns[spec.name] = np.full(n, (spec.min + spec.max) / 2 if spec.dtype != "int8" else 1)
    return columns


def _refusal(msg: telemetry_pb2.FrameBatch) -> WireError:
    with pytest.raises(WireError) as caught:
        decode_batch(msg, LIMITS, NOW)
    return caught.value


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.integers(1, 4), st.data())
def test_values_survive_encode_and_decode(n: int, vehicles: int, data: st.DataObject) -> None:
    columns = _columns(n, tuple(f"V{i}" for i in range(vehicles)))
    columns["soc"] = np.array(data.draw(st.lists(st.floats(0, 100, width=32), min_size=n, max_size=n)), dtype=np.float32)
    batch = decode_batch(encode_columns(columns, batch_id=3), LIMITS, NOW)
    assert batch.batch_id == 3 and batch.num_rows == n and batch.sensor_faults == 0
    assert batch.record_batch.column("vehicle_id").to_pylist() == columns["vehicle_id"].tolist()
    assert batch.record_batch.column("seq").to_pylist() == columns["seq"].tolist()
    assert np.array_equal(batch.record_batch.column("soc").to_numpy(), columns["soc"])
    assert batch.last_seq == {v: int(columns["seq"][columns["vehicle_id"] == v].max()) for v in set(columns["vehicle_id"])}


def test_an_arrow_batch_from_the_generator_schema_round_trips() -> None:
    import pyarrow as pa

    columns = _columns(5)
    arrays = [pa.array(columns["vehicle_id"]), pa.array(columns["ts"], type=pa.timestamp("ms", tz="UTC")),
              pa.array(columns["seq"])]
    arrays += [pa.array(columns[f.name].astype(f.numpy_type), type=f.arrow_type) for f in SCHEMA.fields]
    record_batch = pa.RecordBatch.from_arrays(arrays, schema=SCHEMA.arrow_schema)
    decoded = decode_batch(encode_record_batch(record_batch), LIMITS, NOW)
    assert decoded.record_batch.equals(record_batch)


def test_impossible_values_are_counted_faults_not_refusals() -> None:
    columns = _columns(4)
    columns["pack_voltage"] = np.array([np.nan, np.inf, -5.0, 400.0])
    columns["charger_state"] = np.array([1, 9, -1, 2])
    batch = decode_batch(encode_columns(columns), LIMITS, NOW)
    assert batch.sensor_faults == 4  # inf, -5 V, charger 9, charger -1 (NaN is a missing reading)
    # The rows holding them, judged on the wire values (charger 9 is a fault although it arrives as null).
    assert batch.faulty_rows.tolist() == [False, True, True, False]
    assert batch.record_batch.column("charger_state").to_pylist() == [1, None, None, 2]
    assert math.isnan(batch.record_batch.column("pack_voltage")[0].as_py())


def test_an_absent_int8_reading_is_missing_not_a_fault() -> None:
    """A Frame without charger_state, and a NaN charger_state in columns: null, no fault, no faulty row."""
    frame = telemetry_pb2.Frame(vehicle_id="EV000001", ts=NOW - 1_000, seq=1, pack_voltage=400.0)
    via_frame = decode_batch(telemetry_pb2.FrameBatch(batch_id=1, frames=[frame]), LIMITS, NOW)
    columns = _columns(2)
    columns["charger_state"] = np.array([np.nan, 1.0])
    via_columns = decode_columns(columns, 2, LIMITS, NOW)
    for batch in (via_frame, via_columns):
        assert batch.sensor_faults == 0 and not batch.faulty_rows.any()
        assert batch.record_batch.column("charger_state")[0].as_py() is None


def test_an_absent_sensor_column_becomes_missing_readings() -> None:
    columns = {k: v for k, v in _columns(3).items() if k != "soc"}
    batch = decode_batch(encode_columns(columns), LIMITS, NOW)
    assert np.isnan(batch.record_batch.column("soc").to_numpy()).all()


@pytest.mark.parametrize("mutate, status, needle", [
    (lambda m: m.soc.pop(), "INVALID_ARGUMENT", "soc: 2 values for 3 rows"),
    (lambda m: m.seq.pop(), "INVALID_ARGUMENT", "seq: 2 values for 3 rows"),
    (lambda m: m.vehicle_ids.append("V2"), "INVALID_ARGUMENT", "vehicle_index"),
    (lambda m: m.vehicle_ids.__setitem__(0, ""), "INVALID_ARGUMENT", "vehicle_ids[0]=''"),
    (lambda m: m.vehicle_ids.__setitem__(0, "bad id!"), "INVALID_ARGUMENT", "vehicle_ids[0]='bad id!'"),
    (lambda m: m.ts.__setitem__(1, NOW + 3_600_000), "INVALID_ARGUMENT", f"ts[1]={NOW + 3_600_000}"),
    (lambda m: m.ts.__setitem__(2, 1_767_600_000), "INVALID_ARGUMENT", "ts[2]=1767600000: before 2000"),
    (lambda m: m.seq.__setitem__(0, -1), "INVALID_ARGUMENT", "seq[0]=-1"),
    (lambda m: (m.seq.__setitem__(2, 1), m.ts.__setitem__(2, m.ts[1])), "INVALID_ARGUMENT",
     "seq[2]=1: not above seq[1]=2"),  # the same ts: not a counter restart
])
def test_structural_errors_name_the_field_and_value(mutate, status: str, needle: str) -> None:
    msg = encode_columns(_columns(3))
    mutate(msg)
    error = _refusal(msg)
    assert error.status == status and needle in error.message, error.message


def test_index_out_of_range_is_named() -> None:
    msg = encode_columns(_columns(4, ("A", "B")))
    msg.vehicle_index[3] = 7
    assert "vehicle_index[3]=7" in _refusal(msg).message


def test_too_many_frames_is_resource_exhausted() -> None:
    error = _refusal(encode_columns(_columns(LIMITS.max_batch_frames + 1)))
    assert error.status == "RESOURCE_EXHAUSTED" and "1001 frames" in error.message


def test_frame_rows_and_columns_combine() -> None:
    msg = encode_columns(_columns(2))
    msg.frames.add(vehicle_id="V9", ts=NOW - 1, seq=5, soc=42.0)
    batch = decode_batch(msg, LIMITS, NOW)
    assert batch.num_rows == 3 and batch.vehicle_ids == ("V1", "V9")
    assert batch.record_batch.column("soc")[2].as_py() == 42.0
    assert math.isnan(batch.record_batch.column("speed")[2].as_py())


def test_an_empty_batch_is_valid() -> None:
    assert decode_batch(telemetry_pb2.FrameBatch(batch_id=1), LIMITS, NOW).num_rows == 0


def test_a_twin_summary_becomes_a_message() -> None:
    msg = summary_to_proto({"vehicle_id": "V1", "applied_seq": 9, "risk": {"7": 0.1, "30": 0.4},
                            "baseline": {"soc_mean": [50.0, 2.0]},
                            "last_frame": {"vehicle_id": "V1", "ts": NOW, "seq": 9, "soc": 50.0}})
    assert [(r.horizon_days, round(r.probability, 3)) for r in msg.risk] == [(7, 0.1), (30, 0.4)]
    assert msg.last_frame.soc == 50.0 and not msg.last_frame.HasField("speed")


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 120), st.integers(1, 4), st.data())
def test_columns_decode_exactly_as_the_same_rows_sent_as_a_frame_batch(n: int, vehicles: int,
                                                                        data: st.DataObject) -> None:
    columns = _columns(n, tuple(f"V{i}" for i in range(vehicles)))
    finite = st.one_of(st.sampled_from([math.nan, -1e9, 1e9, 0.0]), st.floats(-10, 300))
    for name, values in (("soc", st.one_of(finite, st.sampled_from([math.inf, -math.inf]))), ("speed", finite),
                         ("charger_state", finite)):  # int8 travels as sint32 on the wire: no infinity there
        columns[name] = np.array(data.draw(st.lists(values, min_size=n, max_size=n)), dtype=np.float64)
    del columns["pack_current"]  # an absent column is missing readings on both paths
    via_wire = decode_batch(encode_columns(columns, batch_id=9), LIMITS, NOW)
    direct = decode_columns(columns, 9, LIMITS, NOW)
    assert direct.record_batch.schema == via_wire.record_batch.schema
    def cells(batch: object) -> dict[str, list]:  # NaN made comparable (NaN != NaN)
        return {name: ["NaN" if isinstance(v, float) and math.isnan(v) else v for v in values]
                for name, values in batch.to_pydict().items()}

    assert cells(direct.record_batch) == cells(via_wire.record_batch)
    assert (direct.batch_id, direct.vehicle_ids, direct.sensor_faults, direct.last_seq) == \
        (via_wire.batch_id, via_wire.vehicle_ids, via_wire.sensor_faults, via_wire.last_seq)
    assert direct.faulty_rows.tolist() == via_wire.faulty_rows.tolist()


@pytest.mark.parametrize("change, needle", [
    (lambda c: c.pop("seq"), "seq: required column missing"),
    (lambda c: c.update(seq=c["seq"][:-1]), "seq: 2 values for 3 rows"),
    (lambda c: c.update(soc=[1.0, "x", 2.0]), "soc: not numbers"),
    (lambda c: c.update(torque=[1.0, 2.0, 3.0]), "torque: not a telemetry field"),
    (lambda c: c.update(vehicle_id=np.array(["V1", "bad id!", "V1"])), "'bad id!'"),
    (lambda c: c.update(seq=np.array([1, 3, 2]), ts=np.array([NOW - 3, NOW - 2, NOW - 2])), "seq must increase"),
    (lambda c: c.update(seq=np.array([0, 1, -1])), "seq[2]=-1: seq is a counter, 0 or more"),
])
def test_column_errors_name_the_field_and_value(change, needle: str) -> None:
    columns = _columns(3)
    change(columns)
    with pytest.raises(WireError, match=re.escape(needle)):
        decode_columns(columns, 1, LIMITS, NOW)


def test_a_counter_may_start_at_zero_and_restart_within_a_batch() -> None:
    columns = _columns(4)
    columns["seq"] = np.array([0, 1, 0, 1])  # an ECU reboot after the second frame: seq falls back, ts goes on
    batch = decode_columns(columns, 1, LIMITS, NOW)
    assert batch.num_rows == 4


def test_memory_fleet_names_the_faulty_sensors_and_ignores_missing_readings() -> None:
    from serving.backend import MemoryFleet

    columns = _columns(3)
    columns["charger_state"] = np.array([np.nan, 9.0, 1.0])  # row 0 missing (not a fault), row 1 out of range
    columns["pack_voltage"] = np.array([400.0, np.inf, 400.0])
    fleet = MemoryFleet(fault_cooldown_ms=0)
    result = fleet.ingest_now(decode_columns(columns, 1, LIMITS, NOW))
    assert [(a.rule, a.seq) for a in result.alerts] == [("sensor_fault", 2)]
    assert [name for name, _ in result.alerts[0].signals] == ["pack_voltage", "charger_state"]
    assert "pack_voltage, charger_state outside the physical range" in result.alerts[0].message


class _CountingFleet:
    """A synchronous stand-in for TwinFleet: records each ingest call, acks every row, one alert per vehicle."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail

    def ingest(self, frames):
        import time

        from configs.frames import FrameBatch
        from twins.types import Alert, IngestResult

        assert isinstance(frames, FrameBatch)  # the twins get the one in-process frame type
        time.sleep(0.05)  # long enough for the other streams' batches to queue behind this call
        self.calls.append(frames.rows)
        if self.fail:
            raise RuntimeError("twins down")
        acks = {vehicle: int(part["seq"].max()) for vehicle, part in frames.parts()}
        alerts = [Alert(f"a-{v}", v, "anomaly", ts_ms=NOW, seq=s, score=1.0, signals=(), message="") for v, s in acks.items()]
        return IngestResult(acks=acks, alerts=alerts)


@pytest.mark.parametrize("fail", [False, True])
def test_concurrent_batches_are_coalesced_and_split_back_to_their_streams(fail: bool) -> None:
    import asyncio

    from serving.backend import TwinFleetBackend

    fleet = _CountingFleet(fail=fail)
    backend = TwinFleetBackend(fleet)
    batches = [decode_columns(_columns(4 + k, (f"V{k}",)), k, LIMITS, NOW) for k in range(4)]

    async def run() -> list:
        return await asyncio.gather(*(backend.ingest(b) for b in batches), return_exceptions=True)

    results = asyncio.run(run())
    assert len(fleet.calls) < len(batches)  # batches that arrived together went in one call, not one each
    assert sum(fleet.calls) == sum(b.num_rows for b in batches)  # every batch reached the fleet once
    for k, result in enumerate(results):
        if fail:
            assert isinstance(result, RuntimeError) and "twins down" in str(result)
        else:
            assert result.acks == {f"V{k}": 4 + k}
            assert [a.vehicle_id for a in result.alerts] == [f"V{k}"]


def test_a_decoded_batch_hands_the_twins_its_frames_grouped_by_vehicle() -> None:
    from configs.frames import FrameBatch

    columns = {"vehicle_id": np.array(["V2", "V1", "V2"]), "ts": np.array([NOW - 3000, NOW - 2000, NOW - 1000]),
               "seq": np.array([1, 1, 2]), "soc": np.array([50.0, 60.0, 51.0])}
    frames = decode_columns(columns, 1, LIMITS, NOW).frames()
    assert isinstance(frames, FrameBatch)
    # vehicles in order of first appearance, each vehicle's rows contiguous and in arrival order
    assert frames.vehicle_ids == ["V2", "V1"] and frames.offsets.tolist() == [0, 2, 3]
    assert frames.seq.tolist() == [1, 2, 1] and frames.ts.tolist() == [NOW - 3000, NOW - 1000, NOW - 2000]
    soc = list(SCHEMA.sensor_names).index("soc")
    assert frames.values[:, soc].tolist() == [50.0, 51.0, 60.0]
