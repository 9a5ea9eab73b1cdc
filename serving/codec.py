"""The proto ``telemetry_pb2.FrameBatch`` (wire, packed columns) <-> Arrow columns, with structural validation;
``DecodedBatch.frames()`` hands the twins the in-process ``configs.frames.FrameBatch``.

Decoding is strict about structure (a batch the server cannot interpret is refused with the field and
value named) and lenient about physics (an impossible sensor value is a sensor fault that the twin
masks and alerts on, never a refused batch). No gRPC import here: errors carry the status *name*,
the servicer maps it to ``grpc.StatusCode``.

>>> import numpy as np
>>> from configs.schema import SCHEMA
>>> columns = {"vehicle_id": np.array(["V1", "V1"]), "ts": np.array([1_767_600_000_000, 1_767_600_010_000]),
...            "seq": np.array([1, 2]), "soc": np.array([80.0, 79.9])}
>>> batch = decode_batch(encode_columns(columns, batch_id=7), BatchLimits(), now_ms=1_767_600_020_000)
>>> batch.batch_id, batch.num_rows, batch.vehicle_ids, batch.record_batch.schema == SCHEMA.arrow_schema
(7, 2, ('V1',), True)
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from configs.frames import Columns, FrameBatch

# VEHICLE_ID_PATTERN is re-exported: the servicers match ids with it.
from configs.schema import SCHEMA, VEHICLE_ID_PATTERN, FieldSpec, is_vehicle_id  # noqa: F401
from protos.evtwin.v1 import alerts_pb2, telemetry_pb2, twin_pb2

# Earliest plausible frame time: 2000-01-01T00:00:00Z. Anything before is a unit error (s vs ms).
MIN_TS_MS = 946_684_800_000
SENSOR_NAMES = frozenset(SCHEMA.sensor_names)


class WireError(Exception):
    """A batch was refused; ``status`` is a gRPC status name, the message names the field and the value."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Unparseable:
    """What the server's deserializer returns for bytes that are not the expected message."""

    message_type: str
    error: str

    def describe(self) -> str:
        return f"request: not a valid {self.message_type} protobuf ({self.error})"


def safe_parser(message_type: Any) -> Any:
    """A request deserializer that never raises (gRPC would answer INTERNAL): bad bytes become Unparseable."""
    from google.protobuf.message import DecodeError

    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except (DecodeError, ValueError, RuntimeError) as error:
            return Unparseable(message_type.DESCRIPTOR.name, str(error)[:120] or type(error).__name__)

    return parse


@dataclass(frozen=True)
class BatchLimits:
    """What a single FrameBatch may contain (from ServingConfig)."""

    max_batch_frames: int = 10_000
    max_future_skew_ms: int = 5 * 60_000


@dataclass(frozen=True)
class DecodedBatch:
    """A validated batch: Arrow columns (SCHEMA.arrow_schema) plus the dictionary coding of vehicles."""

    batch_id: int
    record_batch: pa.RecordBatch
    vehicle_ids: tuple[str, ...]
    vehicle_index: np.ndarray  # int32 per row, index into vehicle_ids
    seq: np.ndarray  # int64 per row
    sensor_faults: int  # infinite or out-of-range sensor values (NaN is a missing reading)
    faulty_rows: np.ndarray  # bool per row: the row carries at least one of those values
    faulty_cells: dict[str, np.ndarray] = field(default_factory=dict)  # sensor -> bool per row, faulty sensors only
    last_seq: dict[str, int] = field(default_factory=dict)  # highest seq per vehicle in this batch

    @property
    def num_rows(self) -> int:
        return int(self.record_batch.num_rows)

    def frames(self) -> FrameBatch:
        """The frames grouped by vehicle, as the twins take them (``configs.frames.FrameBatch``)."""
        return frames_of([self.record_batch])


def frames_of(record_batches: list[pa.RecordBatch]) -> FrameBatch:
    """Decoded batches' frames as one ``FrameBatch`` (a vehicle's rows keep their arrival order)."""
    frames, refused = FrameBatch.from_columns(pa.Table.from_batches(record_batches, schema=SCHEMA.arrow_schema))
    if refused:  # decoding refuses a batch with a missing key, so this is a bug, not bad input
        raise AssertionError(f"decoded batch has rows without keys: {refused[:3]}")
    return frames


def _wire_type(spec: FieldSpec) -> Any:
    """numpy dtype a column arrives in on the wire (int8 travels as sint32)."""
    return np.int32 if spec.dtype == "int8" else spec.numpy_type


def _check_vehicle_id(vehicle_id: str, where: str) -> None:
    if not is_vehicle_id(vehicle_id):
        raise WireError(
            "INVALID_ARGUMENT",
            f"{where}={vehicle_id[:80]!r}: a vehicle id is 1-64 characters of [A-Za-z0-9._:/-], starting alphanumeric",
        )


def _vehicle_dictionary(msg: telemetry_pb2.FrameBatch) -> list[str]:
    ids = list(msg.vehicle_ids)
    seen: set[str] = set()
    for i, vehicle_id in enumerate(ids):
        _check_vehicle_id(vehicle_id, f"vehicle_ids[{i}]")
        if vehicle_id in seen:
            raise WireError("INVALID_ARGUMENT", f"vehicle_ids[{i}]={vehicle_id!r}: listed twice")
        seen.add(vehicle_id)
    return ids


def _column_rows(msg: telemetry_pb2.FrameBatch,
                 ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Rows given as packed columns: (vehicle_index, ts, seq, sensors)."""
    ts = np.array(msg.ts, dtype=np.int64)
    n = len(ts)
    seq = np.array(msg.seq, dtype=np.int64)
    if len(seq) != n:
        raise WireError("INVALID_ARGUMENT", f"seq: {len(seq)} values for {n} rows (ts has {n})")
    if len(msg.vehicle_index) == 0:
        if n and len(ids) != 1:
            raise WireError("INVALID_ARGUMENT",
                            f"vehicle_index: empty, allowed only with exactly one vehicle_ids entry (got {len(ids)})")
        index = np.zeros(n, dtype=np.int32)
    else:
        index = np.array(msg.vehicle_index, dtype=np.int64)
        if len(index) != n:
            raise WireError("INVALID_ARGUMENT", f"vehicle_index: {len(index)} values for {n} rows (ts has {n})")
        bad = np.flatnonzero(index >= len(ids))
        if len(bad):
            i = int(bad[0])
            raise WireError("INVALID_ARGUMENT",
                            f"vehicle_index[{i}]={int(index[i])}: out of range, vehicle_ids has {len(ids)} entries")
        index = index.astype(np.int32)
    sensors: dict[str, np.ndarray] = {}
    for spec in SCHEMA.fields:
        values = getattr(msg, spec.name)
        if len(values) == 0:
            continue
        if len(values) != n:
            raise WireError("INVALID_ARGUMENT", f"{spec.name}: {len(values)} values for {n} rows (ts has {n})")
        sensors[spec.name] = np.array(values, dtype=_wire_type(spec))
    return index, ts, seq, sensors


def _frame_rows(frames: Iterable[telemetry_pb2.Frame],
                ids: list[str]) -> tuple[list[int], list[int], list[int], dict[str, list[float]]]:
    """Rows given as Frame messages; new vehicle ids are appended to ``ids``."""
    position = {vehicle_id: i for i, vehicle_id in enumerate(ids)}
    index: list[int] = []
    ts: list[int] = []
    seq: list[int] = []
    sensors: dict[str, list[float]] = {spec.name: [] for spec in SCHEMA.fields}
    for row, frame in enumerate(frames):
        _check_vehicle_id(frame.vehicle_id, f"frames[{row}].vehicle_id")
        if frame.vehicle_id not in position:
            position[frame.vehicle_id] = len(ids)
            ids.append(frame.vehicle_id)
        index.append(position[frame.vehicle_id])
        ts.append(frame.ts)
        seq.append(frame.seq)
        for spec in SCHEMA.fields:
            has = frame.HasField(spec.name)
            sensors[spec.name].append(getattr(frame, spec.name) if has else _missing(spec))
    return index, ts, seq, sensors


# int8 travels as sint32 and has no NaN: an absent reading is int32's minimum, which no enum uses; it becomes
# null below and is a missing reading, not a sensor fault (a -1 sent by a client is a fault).
_MISSING_INT8 = -2**31


def _missing(spec: FieldSpec) -> float:
    return _MISSING_INT8 if spec.dtype == "int8" else math.nan


def _check_keys(index: np.ndarray, ts: np.ndarray, seq: np.ndarray, ids: list[str], limits: BatchLimits,
                now_ms: int) -> None:
    if len(ts) > limits.max_batch_frames:
        raise WireError("RESOURCE_EXHAUSTED",
                        f"batch: {len(ts)} frames, the limit is {limits.max_batch_frames}; split it")
    early = np.flatnonzero(ts < MIN_TS_MS)
    if len(early):
        i = int(early[0])
        raise WireError("INVALID_ARGUMENT", f"ts[{i}]={int(ts[i])}: before 2000-01-01 (ts is UTC milliseconds)")
    future = np.flatnonzero(ts > now_ms + limits.max_future_skew_ms)
    if len(future):
        i = int(future[0])
        raise WireError("INVALID_ARGUMENT",
                        f"ts[{i}]={int(ts[i])}: {(int(ts[i]) - now_ms) / 1000:.0f} s in the future "
                        f"(allowed skew {limits.max_future_skew_ms / 1000:.0f} s)")
    low = np.flatnonzero(seq < 0)
    if len(low):
        i = int(low[0])
        raise WireError("INVALID_ARGUMENT", f"seq[{i}]={int(seq[i])}: seq is a counter, 0 or more")
    if len(seq) > 1:
        # Row order within each vehicle: seq increases, or falls back with a later ts (the counter restarted,
        # README "Delivery"); a row that is neither is a client bug.
        order = np.lexsort((np.arange(len(seq)), index))
        same_vehicle = index[order][1:] == index[order][:-1]
        not_increasing = np.flatnonzero(same_vehicle & (np.diff(seq[order]) <= 0) & (np.diff(ts[order]) <= 0))
        if len(not_increasing):
            row = int(order[not_increasing[0] + 1])
            previous = int(order[not_increasing[0]])
            raise WireError("INVALID_ARGUMENT",
                            f"seq[{row}]={int(seq[row])}: not above seq[{previous}]={int(seq[previous])} "
                            f"for vehicle {ids[int(index[row])]!r} and not later (ts {int(ts[row])} <= "
                            f"{int(ts[previous])}): seq must increase within a batch, or restart with a later ts")


def _sensor_faults(sensors: Mapping[str, np.ndarray], n: int) -> tuple[int, np.ndarray, dict[str, np.ndarray]]:
    """(impossible sensor values, rows holding one, per faulty sensor its rows), judged on the wire values."""
    # NaN compares false both ways (a missing reading, not a fault); +-inf falls outside every range.
    faults = 0
    rows = np.zeros(n, dtype=bool)
    cells: dict[str, np.ndarray] = {}
    for name, values in sensors.items():
        spec = SCHEMA.field(name)
        as_float = values.astype(np.float64, copy=False)
        bad = (as_float < spec.min) | (as_float > spec.max)
        if spec.dtype == "int8":
            bad &= values != _MISSING_INT8
        count = np.count_nonzero(bad)
        if count:
            faults += count
            rows |= bad
            cells[name] = bad
    return int(faults), rows, cells


def _arrow_column(spec: FieldSpec, values: np.ndarray | None, n: int) -> pa.Array:
    if spec.dtype == "int8":
        if values is None:
            return pa.nulls(n, type=pa.int8())
        values = np.asarray(values, dtype=np.int64)
        invalid = (values < spec.min) | (values > spec.max)
        return pa.array(np.clip(values, -128, 127).astype(np.int8), type=pa.int8(), mask=invalid)
    if values is None:
        return pa.array(np.full(n, np.nan, dtype=spec.numpy_type), type=spec.arrow_type)
    return pa.array(np.asarray(values, dtype=spec.numpy_type), type=spec.arrow_type)


def decode_batch(msg: telemetry_pb2.FrameBatch, limits: BatchLimits, now_ms: int) -> DecodedBatch:
    """Validate the structure of ``msg`` and return its rows as Arrow columns; raises WireError."""
    ids = _vehicle_dictionary(msg)
    index, ts, seq, sensors = _column_rows(msg, ids)
    if len(msg.frames):
        if len(msg.frames) + len(ts) > limits.max_batch_frames:
            raise WireError("RESOURCE_EXHAUSTED",
                            f"batch: {len(msg.frames) + len(ts)} frames, the limit is {limits.max_batch_frames}")
        n_columns = len(ts)
        f_index, f_ts, f_seq, f_sensors = _frame_rows(msg.frames, ids)
        index = np.concatenate([index, np.array(f_index, dtype=np.int32)])
        ts = np.concatenate([ts, np.array(f_ts, dtype=np.int64)])
        seq = np.concatenate([seq, np.array(f_seq, dtype=np.int64)])
        for spec in SCHEMA.fields:
            head = sensors.get(spec.name, np.full(n_columns, _missing(spec), dtype=_wire_type(spec)))
            sensors[spec.name] = np.concatenate([head, np.array(f_sensors[spec.name], dtype=_wire_type(spec))])
    return _validated(msg.batch_id, ids, index, ts, seq, sensors, limits, now_ms)


def decode_columns(columns: Mapping[str, Any], batch_id: int, limits: BatchLimits, now_ms: int) -> DecodedBatch:
    """Like ``decode_batch`` for rows already in columns (``vehicle_id``, ``ts`` int ms, ``seq``, any sensors;
    NaN = missing), as an ingest that is not gRPC (HTTP/JSON) receives them; raises WireError."""
    unknown = sorted(set(columns) - {"vehicle_id", "ts", "seq"} - SENSOR_NAMES)
    if unknown:
        raise WireError("INVALID_ARGUMENT", f"{unknown[0]}: not a telemetry field")
    try:
        # object, not str: numpy's str dtype silently drops trailing NUL characters ("V1\x00" became "V1").
        vehicle_column = np.asarray(columns["vehicle_id"], dtype=object).reshape(-1)
        ts = np.asarray(columns["ts"], dtype=np.int64)
        seq = np.asarray(columns["seq"], dtype=np.int64)
    except KeyError as missing:
        raise WireError("INVALID_ARGUMENT", f"{missing.args[0]}: required column missing") from None
    except (TypeError, ValueError, OverflowError) as error:  # OverflowError: beyond int64
        raise WireError("INVALID_ARGUMENT", f"vehicle_id/ts/seq: not strings/integers ({error})") from None
    for name, values in (("ts", ts), ("seq", seq)):
        if values.ndim != 1:
            raise WireError("INVALID_ARGUMENT", f"{name}: a column of {values.ndim} dimensions (shape "
                                                f"{values.shape}); one value per row expected")
    n = len(ts)
    not_text = [i for i, value in enumerate(vehicle_column.tolist()) if not isinstance(value, str)]
    if not_text:
        i = not_text[0]
        raise WireError("INVALID_ARGUMENT", f"vehicle_id[{i}]={vehicle_column[i]!r:.80}: not a string")
    for name, values in (("vehicle_id", vehicle_column), ("seq", seq)):
        if len(values) != n:
            raise WireError("INVALID_ARGUMENT", f"{name}: {len(values)} values for {n} rows (ts has {n})")
    ids_array, first_row, index = np.unique(vehicle_column, return_index=True, return_inverse=True)
    ids = ids_array.tolist()
    for vehicle_id, row in zip(ids, first_row.tolist(), strict=False):
        _check_vehicle_id(vehicle_id, f"vehicle_id[{row}]")
    sensors: dict[str, np.ndarray] = {}
    for spec in SCHEMA.fields:
        if spec.name not in columns:
            continue
        try:
            values = np.asarray(columns[spec.name], dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as error:
            raise WireError("INVALID_ARGUMENT", f"{spec.name}: not numbers ({error})") from None
        if values.ndim != 1:
            raise WireError("INVALID_ARGUMENT", f"{spec.name}: a column of {values.ndim} dimensions (shape "
                                                f"{values.shape}); one value per row expected")
        if len(values) != n:
            raise WireError("INVALID_ARGUMENT", f"{spec.name}: {len(values)} values for {n} rows (ts has {n})")
        if spec.dtype == "int8":
            values = np.where(np.isfinite(values), values, _missing(spec)).clip(-2**31, 2**31 - 1)
        sensors[spec.name] = values.astype(_wire_type(spec))
    return _validated(batch_id, ids, index.astype(np.int32).reshape(-1), ts, seq, sensors, limits, now_ms)


def _validated(batch_id: int, ids: list[str], index: np.ndarray, ts: np.ndarray, seq: np.ndarray,
               sensors: dict[str, np.ndarray], limits: BatchLimits, now_ms: int) -> DecodedBatch:
    """Rows from either wire shape -> a checked DecodedBatch (the one place keys are validated)."""
    _check_keys(index, ts, seq, ids, limits, now_ms)
    n = len(ts)
    faults, faulty_rows, faulty_cells = _sensor_faults(sensors, n)
    dictionary = pa.array(ids, type=pa.string())
    vehicle_column = dictionary.take(pa.array(index, type=pa.int32()))
    arrays = [vehicle_column, pa.array(ts, type=pa.timestamp("ms", tz="UTC")), pa.array(seq, type=pa.int64())]
    arrays += [_arrow_column(spec, sensors.get(spec.name), n) for spec in SCHEMA.fields]
    record_batch = pa.RecordBatch.from_arrays(arrays, schema=SCHEMA.arrow_schema)
    last_seq: dict[str, int] = {}
    if n:
        highest = np.full(len(ids), -1, dtype=np.int64)
        np.maximum.at(highest, index, seq)
        last_seq = {ids[i]: int(s) for i, s in enumerate(highest) if s >= 0}
    return DecodedBatch(batch_id, record_batch, tuple(ids), index, seq, faults, faulty_rows, faulty_cells, last_seq)


def encode_columns(columns: Mapping[str, Any], batch_id: int = 0) -> telemetry_pb2.FrameBatch:
    """Build a FrameBatch from columns (``vehicle_id``, ``ts`` int ms, ``seq`` and any sensors).

    Vehicle ids are dictionary-coded; sensors missing from ``columns`` are left empty (absent).
    """
    vehicle_column = np.asarray(columns["vehicle_id"]).astype(str)
    ids, index = np.unique(vehicle_column, return_inverse=True)
    msg = telemetry_pb2.FrameBatch(batch_id=batch_id, vehicle_ids=ids.tolist())
    if len(ids) > 1:
        msg.vehicle_index.extend(index.astype(np.int64).tolist())
    msg.ts.extend(np.asarray(columns["ts"]).astype("datetime64[ms]").astype(np.int64).tolist())
    msg.seq.extend(np.asarray(columns["seq"], dtype=np.int64).tolist())
    for spec in SCHEMA.fields:
        if spec.name in columns:
            values = np.asarray(columns[spec.name])
            if spec.dtype == "int8":
                values = np.where(np.isnan(values.astype(np.float64)), _MISSING_INT8, values).astype(np.int64)
            getattr(msg, spec.name).extend(values.tolist())
    return msg


def to_columns(batch: pa.RecordBatch | pa.Table | Mapping[str, Any]) -> Columns:
    """Arrow batch (SCHEMA.arrow_schema) or column dict -> dict of numpy arrays; ts as int64 ms, nulls NaN."""
    if isinstance(batch, Mapping):
        columns = {k: np.asarray(v) for k, v in batch.items()}
        columns["ts"] = np.asarray(columns["ts"]).astype("datetime64[ms]").astype(np.int64) \
            if np.asarray(columns["ts"]).dtype.kind == "M" else np.asarray(columns["ts"], dtype=np.int64)
        return columns
    columns = {}
    for name in batch.schema.names:
        column = batch.column(name)
        if name == "vehicle_id":
            columns[name] = np.asarray(column.to_pylist(), dtype=object)
        elif name == "ts":
            columns[name] = column.cast(pa.int64()).to_numpy(zero_copy_only=False)
        elif name == "seq":
            columns[name] = column.to_numpy(zero_copy_only=False).astype(np.int64)
        elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            columns[name] = column.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False) \
                if column.null_count or pa.types.is_integer(column.type) else column.to_numpy(zero_copy_only=False)
    return columns


def encode_record_batch(batch: pa.RecordBatch | pa.Table, batch_id: int = 0) -> telemetry_pb2.FrameBatch:
    """FrameBatch from an Arrow batch in SCHEMA.arrow_schema (what the generator and Parquet give)."""
    return encode_columns(to_columns(batch), batch_id)


def alert_to_proto(alert: Any) -> alerts_pb2.Alert:
    """``twins.types.Alert`` (dataclass) or its dict form -> Alert message."""
    get = alert.get if isinstance(alert, Mapping) else (lambda key, default=None: getattr(alert, key, default))
    risk = get("risk") or {}
    return alerts_pb2.Alert(
        alert_id=str(get("alert_id", "")),
        vehicle_id=str(get("vehicle_id", "")),
        rule=str(get("rule", "")),
        ts_ms=int(get("ts_ms", 0) or 0),
        seq=int(get("seq", 0) or 0),
        score=float(get("score", 0.0) or 0.0),
        signals=[alerts_pb2.SignalShare(name=str(name), share=float(share)) for name, share in (get("signals") or ())],
        message=str(get("message", "") or ""),
        mode=str(get("mode") or ""),
        severity=int(get("severity") or 0),
        risk=[alerts_pb2.HorizonRisk(horizon_days=int(h), probability=float(p)) for h, p in sorted(risk.items())],
    )


def alert_from_proto(msg: alerts_pb2.Alert) -> dict[str, Any]:
    """Alert message -> plain dict (client side)."""
    return {
        "alert_id": msg.alert_id, "vehicle_id": msg.vehicle_id, "rule": msg.rule, "ts_ms": msg.ts_ms,
        "seq": msg.seq, "score": msg.score, "signals": [(s.name, s.share) for s in msg.signals],
        "message": msg.message, "mode": msg.mode or None, "severity": msg.severity or None,
        "risk": {r.horizon_days: r.probability for r in msg.risk},
    }


def frame_to_proto(frame: Mapping[str, Any]) -> telemetry_pb2.Frame:
    """One frame as a dict (vehicle_id, ts, seq, sensors; None/NaN = missing) -> Frame message."""
    msg = telemetry_pb2.Frame(vehicle_id=str(frame.get("vehicle_id", "")), ts=int(frame.get("ts", 0) or 0),
                              seq=int(frame.get("seq", 0) or 0))
    for spec in SCHEMA.fields:
        value = frame.get(spec.name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        setattr(msg, spec.name, int(value) if spec.dtype == "int8" else float(value))
    return msg


def _total(counts: Any) -> int:
    """A count, or per-field counts (dict) summed."""
    if isinstance(counts, Mapping):
        return int(sum(counts.values()))
    return int(counts or 0)


def summary_to_proto(summary: Mapping[str, Any]) -> twin_pb2.TwinSummary:
    """``fleet.summary(vehicle_id)`` dict -> TwinSummary message (unknown keys are ignored)."""
    baseline = summary.get("baseline") or {}
    risk = summary.get("risk") or {}
    msg = twin_pb2.TwinSummary(
        vehicle_id=str(summary.get("vehicle_id", "")),
        applied_seq=int(summary.get("applied_seq") or 0),
        acked_seq=int(summary.get("acked_seq") or 0),
        last_ts_ms=int(summary.get("last_ts_ms") or 0),
        frames_applied=int(summary.get("frames_applied") or 0),
        windows_closed=int(summary.get("windows_closed") or 0),
        anomaly_score=float(summary.get("anomaly_score") or 0.0),
        baseline=[twin_pb2.BaselineStat(feature=str(k), mean=float(v[0]), std=float(v[1])) for k, v in baseline.items()],
        risk=[alerts_pb2.HorizonRisk(horizon_days=int(h), probability=float(p))
              for h, p in sorted(risk.items(), key=lambda kv: int(kv[0]))],
        open_alerts=[alert_to_proto({"alert_id": a} if isinstance(a, str) else a) for a in summary.get("open_alerts") or ()],
        head_version=str(summary.get("head_version") or ""),
        sensor_faults=_total(summary.get("sensor_faults")),
        fitted_sensors=[str(name) for name in summary.get("fitted_sensors") or ()],
        sensor_fault_episodes=sum(_total(kinds) for kinds in (summary.get("sensor_fault_episodes") or {}).values()),
        open_sensor_faults=[str(fault) for fault in summary.get("open_sensor_faults") or ()],
        seq_epoch=int(summary.get("seq_epoch") or 0),
    )
    last_frame = summary.get("last_frame")
    if last_frame:
        msg.last_frame.CopyFrom(frame_to_proto(last_frame))
    return msg
