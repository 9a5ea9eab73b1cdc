"""The one in-process type for "a batch of frames", and the refusals of rows that cannot be one.

A ``FrameBatch`` holds the frames of one or several vehicles grouped by vehicle: rows
``offsets[i]:offsets[i+1]`` belong to ``vehicle_ids[i]``; ``values`` is rows x ``SENSORS`` float32 (the
telemetry contract's sensor order, NaN = the sensor did not report). Every source (the gRPC codec, the
run-folder readers, the generator, the what-if) hands the twins this type; ``FrameBatch.from_columns``
builds it from Arrow or a dict of numpy columns (``Columns``), ``FrameBatch.of_vehicle`` from one vehicle's
matrix; ``concat`` / ``slice_rows`` / ``select`` cut and join batches (the what-if's per-poll batches are
one-vehicle ``FrameBatch``es, joined by ``concat`` for the twin host).

The other forms, and the one place each converts:

- wire: the proto ``evtwin.v1.FrameBatch`` (packed columns) -> Arrow in ``serving.codec`` (``decode_batch``),
  -> ``FrameBatch`` by ``DecodedBatch.frames()`` (``from_columns``).
- storage: Arrow in ``SCHEMA.arrow_schema`` (the Parquet files, ``stream_vehicle_batches``), built by
  ``vehicle_record_batch`` only, read back into a ``FrameBatch`` by ``from_columns`` only.
- name-keyed columns in schema dtypes: the generator's day (``simulation.generator.VehicleChunk``) and the
  importer's vehicle (``configs.source_frames.VehicleFrames``, float64, only the fields the car sends). They
  stay because ``FrameBatch`` cannot carry them exactly: the schema's float64 fields (``odometer``,
  ``latitude``, ``longitude``) lose precision in float32 (an odometer of 100 000 km rounds to 1/128 km, a
  position to about a metre), and the Parquet files and the wire's ``double`` fields must keep them; an
  imported field the car never sends must stay absent, not NaN. The int8 ``charger_state`` (0..3) survives
  float32 exactly. Such columns reach the twins only through ``frames_matrix`` (``VehicleChunk.frames()``,
  tested equal to ``from_columns`` of its Arrow form) and Parquet only through ``vehicle_record_batch``.
- ``Columns``: the dict of numpy columns clients and sources build (``evtwin stream``); ``from_columns`` takes it.

>>> import numpy as np
>>> batch, refused = FrameBatch.from_columns({"vehicle_id": np.array(["B", "A", "B"]), "seq": np.array([1, 1, 2]),
...                                           "ts": np.array([10, 10, 20])})
>>> batch.vehicle_ids, batch.offsets.tolist(), batch.seq.tolist(), refused
(['A', 'B'], [0, 1, 3], [1, 1, 2], [])
>>> batch.values.shape == (3, len(SENSORS)) and bool(np.isnan(batch.values).all())
True
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from configs.schema import SCHEMA

# Columns of frames by name (``vehicle_id``, ``ts``, ``seq`` and sensors), one numpy array each, same length.
Columns = dict[str, np.ndarray]

SENSORS: tuple[str, ...] = SCHEMA.sensor_names
N_SENSORS = len(SENSORS)
KEY_COLUMNS: tuple[str, ...] = ("vehicle_id", "seq", "ts")


@dataclass(frozen=True)
class Rejection:
    """A frame refused with a reason (``code``: late, bad_key)."""

    vehicle_id: str
    seq: int
    code: str
    message: str


def vehicle_record_batch(vehicle_id: str, ts_ms: np.ndarray, seq: np.ndarray,
                         columns: Mapping[str, np.ndarray]) -> pa.RecordBatch:
    """One vehicle's rows in their storage form, ``SCHEMA.arrow_schema`` (the Parquet files, the Arrow streams).

    ``columns`` holds every sensor by name, in its schema dtype (the generator) or as float64 with NaN for a
    missing value (imported data): NaN stays NaN in a float field and becomes null in an integer one.

    >>> cols = {name: np.full(2, np.nan) for name in SENSORS}
    >>> batch = vehicle_record_batch("EV1", np.array([0, 1000]), np.array([1, 2]), cols)
    >>> batch.schema.equals(SCHEMA.arrow_schema), batch.column("charger_state").null_count
    (True, 2)
    """
    rows = len(ts_ms)
    arrays = [pa.repeat(pa.scalar(vehicle_id, pa.string()), rows),
              pa.array(ts_ms, type=SCHEMA.arrow_schema.field("ts").type), pa.array(seq, type=pa.int64())]
    for spec in SCHEMA.fields:
        values = np.asarray(columns[spec.name])
        if spec.dtype.startswith("int") and values.dtype.kind == "f":
            missing = ~np.isfinite(values)
            arrays.append(pa.array(np.where(missing, 0, values).astype(spec.numpy_type), mask=missing,
                                   type=spec.arrow_type))
        else:
            arrays.append(pa.array(values.astype(spec.numpy_type, copy=False), type=spec.arrow_type))
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA.arrow_schema)


def frames_matrix(columns: Mapping[str, Any], n: int) -> np.ndarray:
    """(n x sensors) float32 matrix from columns; a missing sensor is all NaN (a dropout).

    A pre-stacked matrix may be passed as ``columns["values"]`` (rows x ``SENSORS``): the cheap path
    the hosts use.
    """
    if "values" in columns:
        return np.asarray(columns["values"], dtype=np.float32).reshape(n, N_SENSORS)
    matrix = np.empty((n, N_SENSORS), dtype=np.float32)
    for j, name in enumerate(SENSORS):
        column = columns.get(name)
        matrix[:, j] = np.nan if column is None else np.asarray(column, dtype=np.float32)
    return matrix


@dataclass
class FrameBatch:
    """Frames of several vehicles, grouped: rows ``offsets[i]:offsets[i+1]`` belong to ``vehicle_ids[i]``."""

    vehicle_ids: list[str]
    offsets: np.ndarray
    seq: np.ndarray
    ts: np.ndarray
    values: np.ndarray  # rows x SENSORS float32

    @classmethod
    def of_vehicle(cls, vehicle_id: str, seq: np.ndarray, ts: np.ndarray, values: np.ndarray) -> FrameBatch:
        """One vehicle's frames (``values`` rows x ``SENSORS``, made float32); the arrays are not copied when they
        already have the batch's dtypes."""
        seq = np.asarray(seq, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.int64)
        values = np.asarray(values, dtype=np.float32)
        if seq.ndim != 1 or ts.shape != seq.shape:
            raise ValueError(f"seq and ts must be 1-d and of one length (got seq {seq.shape}, ts {ts.shape})")
        if values.shape != (seq.size, N_SENSORS):
            raise ValueError(f"values must be rows x {N_SENSORS} sensors = {(seq.size, N_SENSORS)} (got {values.shape})")
        return cls([vehicle_id], np.array([0, seq.size], dtype=np.int64), seq, ts, values)

    @classmethod
    def empty(cls) -> FrameBatch:
        """No frames, no vehicles."""
        return cls([], np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                   np.zeros((0, N_SENSORS), dtype=np.float32))

    @classmethod
    def concat(cls, batches: Iterable[FrameBatch]) -> FrameBatch:
        """The batches as one, grouped by vehicle: vehicles in order of first appearance, each vehicle's rows in
        the order of the batches (a vehicle in several batches gets one contiguous run of rows).

        >>> a = FrameBatch.of_vehicle("A", np.array([1, 2]), np.array([10, 20]), np.zeros((2, N_SENSORS)))
        >>> b = FrameBatch.of_vehicle("B", np.array([7]), np.array([15]), np.zeros((1, N_SENSORS)))
        >>> c = FrameBatch.of_vehicle("A", np.array([3]), np.array([30]), np.zeros((1, N_SENSORS)))
        >>> joined = FrameBatch.concat([a, b, c])
        >>> joined.vehicle_ids, joined.offsets.tolist(), joined.seq.tolist()
        (['A', 'B'], [0, 3, 4], [1, 2, 3, 7])
        """
        spans: dict[str, list[tuple[FrameBatch, int, int]]] = {}
        for batch in batches:
            for i, vehicle_id in enumerate(batch.vehicle_ids):
                lo, hi = int(batch.offsets[i]), int(batch.offsets[i + 1])
                if hi > lo:
                    spans.setdefault(vehicle_id, []).append((batch, lo, hi))
        if not spans:
            return cls.empty()
        pieces = [piece for vehicle_spans in spans.values() for piece in vehicle_spans]
        if len(pieces) == 1:
            batch, lo, hi = pieces[0]
            return cls(list(spans), np.array([0, hi - lo], dtype=np.int64), batch.seq[lo:hi], batch.ts[lo:hi],
                       batch.values[lo:hi])
        sizes = [sum(hi - lo for _, lo, hi in vehicle_spans) for vehicle_spans in spans.values()]
        return cls(list(spans), np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                   np.concatenate([b.seq[lo:hi] for b, lo, hi in pieces]),
                   np.concatenate([b.ts[lo:hi] for b, lo, hi in pieces]),
                   np.concatenate([b.values[lo:hi] for b, lo, hi in pieces]))

    def slice_rows(self, start: int, stop: int) -> FrameBatch:
        """Rows ``start:stop`` (views, not copies); vehicles left without a row are dropped.

        >>> batch = FrameBatch(["A", "B"], np.array([0, 2, 4]), np.arange(4), np.arange(4) * 10,
        ...                    np.zeros((4, N_SENSORS), dtype=np.float32))
        >>> part = batch.slice_rows(1, 3)
        >>> part.vehicle_ids, part.offsets.tolist(), part.seq.tolist(), batch.slice_rows(0, 2).vehicle_ids
        (['A', 'B'], [0, 1, 2], [1, 2], ['A'])
        """
        start, stop, _ = slice(start, stop).indices(self.rows)
        stop = max(start, stop)
        if len(self.vehicle_ids) == 1 and stop > start:  # the what-if's per-poll cut: no offsets to work out
            return FrameBatch(self.vehicle_ids, np.array([0, stop - start], dtype=np.int64), self.seq[start:stop],
                              self.ts[start:stop], self.values[start:stop])
        clipped = np.clip(self.offsets, start, stop) - start
        keep = np.flatnonzero(clipped[1:] > clipped[:-1])
        offsets = np.concatenate([[0], clipped[keep + 1]]).astype(np.int64)
        return FrameBatch([self.vehicle_ids[i] for i in keep], offsets, self.seq[start:stop], self.ts[start:stop],
                          self.values[start:stop])

    @property
    def first_ts(self) -> int:
        """The earliest frame time (ms); an error for a batch without frames."""
        return int(self._nonempty_ts("first_ts").min())

    @property
    def last_ts(self) -> int:
        """The latest frame time (ms); an error for a batch without frames."""
        return int(self._nonempty_ts("last_ts").max())

    def _nonempty_ts(self, asked: str) -> np.ndarray:
        if self.ts.size == 0:
            raise ValueError(f"{asked} of a FrameBatch without frames")
        return self.ts

    def columns(self) -> dict[str, np.ndarray]:
        """Every row as ``{"seq", "ts", "values"}``: for one vehicle's batch, what ``VehicleTwin.ingest`` takes."""
        return {"seq": self.seq, "ts": self.ts, "values": self.values}

    def to_columns(self) -> Columns:
        """The rows as a dict of columns with ``vehicle_id`` repeated per row: ``from_columns`` gives this batch back."""
        sizes = np.diff(self.offsets)
        vehicle_id = np.repeat(np.array(self.vehicle_ids, dtype=object), sizes)
        return {"vehicle_id": vehicle_id, "seq": self.seq, "ts": self.ts, "values": self.values}

    def parts(self) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """Per vehicle, in order: its id and its rows as ``{"seq", "ts", "values"}``."""
        for i, vehicle_id in enumerate(self.vehicle_ids):
            lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
            yield vehicle_id, {"seq": self.seq[lo:hi], "ts": self.ts[lo:hi], "values": self.values[lo:hi]}

    @property
    def rows(self) -> int:
        return int(self.seq.size)

    def select(self, indices: list[int]) -> FrameBatch:
        """The vehicles at ``indices`` (positions in ``vehicle_ids``), as one contiguous batch."""
        spans = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in indices]
        rows = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
        sizes = np.array([s.size for s in spans], dtype=np.int64)
        return FrameBatch([self.vehicle_ids[i] for i in indices], np.concatenate([[0], np.cumsum(sizes)]),
                          self.seq[rows], self.ts[rows], self.values[rows])

    @classmethod
    def from_columns(cls, batch: pa.Table | pa.RecordBatch | Mapping[str, Any]) -> tuple[FrameBatch, list[Rejection]]:
        """Group a batch (Arrow or dict of columns, any vehicles, any order) by vehicle.

        Rows without a vehicle id, seq or ts are refused (``bad_key``); missing sensors become NaN.
        A batch without one of the key columns at all is an error naming it.
        """
        arrow = isinstance(batch, (pa.Table, pa.RecordBatch))
        keys = {k: _column(batch, k) for k in KEY_COLUMNS}
        missing = [k for k, v in keys.items() if v is None]
        if missing:
            raise ValueError(f"batch lacks key column(s) {missing}")
        n = batch.num_rows if arrow else len(batch["seq"])
        names, codes = _vehicle_codes(keys["vehicle_id"])
        seq, seq_ok = _int_column(keys["seq"])
        ts, ts_ok = _int_column(keys["ts"])
        if arrow:
            columns: dict[str, Any] = {name: _float_column(batch.column(name)) for name in SENSORS
                                       if name in batch.schema.names}
        elif "values" in batch:
            columns = {"values": batch["values"]}
        else:
            columns = {name: batch[name] for name in SENSORS if name in batch}
        values = frames_matrix(columns, n)
        ok = (codes >= 0) & seq_ok & ts_ok
        rejected = [Rejection(names[c] if c >= 0 else "", int(s) if sk else -1, "bad_key",
                              "frame lacks " + ("vehicle_id" if c < 0 else "seq" if not sk else "ts"))
                    for c, s, sk in zip(codes[~ok], seq[~ok], seq_ok[~ok], strict=False)]
        codes, seq, ts, values = codes[ok], seq[ok], ts[ok], values[ok]
        order = np.argsort(codes, kind="stable")
        codes = codes[order]
        present, starts = np.unique(codes, return_index=True)
        offsets = np.concatenate([starts, [codes.size]]).astype(np.int64)
        return cls([names[c] for c in present], offsets, seq[order], ts[order], values[order]), rejected


def _column(batch: Any, name: str) -> Any:
    if isinstance(batch, (pa.Table, pa.RecordBatch)):
        return batch.column(name) if name in batch.schema.names else None
    return batch.get(name)


def _vehicle_codes(column: Any) -> tuple[list[str], np.ndarray]:
    """(distinct vehicle ids, per row the position of its id or -1 for a missing one)."""
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        combined = pa.chunked_array([column]).combine_chunks() if isinstance(column, pa.Array) else column.combine_chunks()
        encoded = combined.dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        null_vid = np.asarray(encoded.indices.is_null().to_numpy(zero_copy_only=False))
        return encoded.dictionary.to_pylist(), np.where(null_vid, -1, np.nan_to_num(codes, nan=-1)).astype(np.int64)
    names, codes = np.unique(np.asarray(column, dtype=object).astype(str), return_inverse=True)
    return [str(n) for n in names], codes.astype(np.int64)


def _int_column(column: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        return np.asarray(column.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64), valid
    array = np.asarray(column)
    if array.dtype.kind == "M":
        array = array.astype("datetime64[ms]").astype(np.int64)
    if array.dtype.kind == "f":
        valid = np.isfinite(array)
        return np.where(valid, array, 0).astype(np.int64), valid
    return array.astype(np.int64), np.ones(array.shape, dtype=bool)


def _float_column(column: Any) -> np.ndarray:
    return np.asarray(column.cast(pa.float32()).fill_null(np.nan).to_numpy(zero_copy_only=False), dtype=np.float32)
