"""A host's write-ahead log of accepted frames (``twins.durability: "wal"``): one fsynced append per ingest
call, then the ack; twin snapshots (checkpoints) are taken now and then instead of on every call.

The log lives beside the checkpoints (``<checkpoint uri>/wal/``, via ``pyarrow.fs``) as segments of Arrow IPC
streams: one record batch per append, rows (vehicle_id, part, seq, ts, values), ``part`` numbering the
vehicle runs of the call (a vehicle may come twice in one call: each run is replayed as its own step). A
segment is named ``<creation ns>-<writer>.arrows`` so names sort in log order across hosts and restarts; a
record's position is ``<segment>#<batch index>``, and positions compare as strings. A snapshot carries the
position it includes (``VehicleTwin.log_position``); a restore is the snapshot plus the twin's records after it.

On a local filesystem a segment is appended to and synced (file, and the folder when it is created) and rotated
at ``segment_bytes``; object stores cannot append, so there every append is a segment of its own. A torn last
record (a crash mid-append) was never acknowledged: readers stop at it.

Known limit: a host deletes only segments whose every record it has seen snapshotted (its own, and those of
its dead predecessors); a segment holding another host's vehicles is never deleted by this one (it may still
be that host's open segment). After a restart that places vehicles on other hosts than before, old segments
therefore stay until something removes them (every host reads them at start); a sweep that deletes a segment
once every vehicle in it has a checkpoint past it, and its writer is known dead, is not built.

>>> import tempfile
>>> from configs.frames import N_SENSORS, FrameBatch
>>> root = tempfile.mkdtemp()
>>> log = WriteAheadLog(root)
>>> batch = FrameBatch.of_vehicle("v1", np.array([1, 2]), np.array([10, 20]), np.zeros((2, N_SENSORS)))
>>> position = log.append([("v1", batch.columns())])
>>> log.close()
>>> [(r.position == position, r.vehicle_id, r.columns["seq"].tolist()) for r in read_log(root)]
[(True, 'v1', [1, 2])]
"""
from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from configs.frames import N_SENSORS
from twins.store import open_filesystem

SEGMENT_SUFFIX = ".arrows"
SEGMENT_BYTES = 64 << 20
SCHEMA = pa.schema([("vehicle_id", pa.string()), ("part", pa.int32()), ("seq", pa.int64()), ("ts", pa.int64()),
                    ("values", pa.list_(pa.float32(), N_SENSORS))])

def log_root(checkpoint_uri: str) -> str:
    """The log's folder (or prefix) for a checkpoint store's URI."""
    return checkpoint_uri.rstrip("/") + "/wal"


def segment_of(position: str) -> str:
    """The segment name of a record position."""
    return position.split("#", 1)[0]


@dataclass
class LogRecord:
    """One vehicle run of one logged call: replayed as one ingest step."""

    position: str
    vehicle_id: str
    columns: dict[str, np.ndarray]  # {"seq", "ts", "values"}: what ``VehicleTwin.ingest`` takes


def _record_batch(parts: Iterable[tuple[str, Mapping[str, np.ndarray]]]) -> pa.RecordBatch:
    parts = list(parts)
    sizes = [len(columns["seq"]) for _, columns in parts]
    vehicle_ids = np.repeat(np.array([v for v, _ in parts], dtype=object), sizes)
    part = np.repeat(np.arange(len(parts), dtype=np.int32), sizes)
    seq = np.concatenate([np.asarray(c["seq"], dtype=np.int64) for _, c in parts]) if parts else np.zeros(0, np.int64)
    ts = np.concatenate([np.asarray(c["ts"], dtype=np.int64) for _, c in parts]) if parts else np.zeros(0, np.int64)
    values = (np.concatenate([np.asarray(c["values"], dtype=np.float32).reshape(-1, N_SENSORS) for _, c in parts])
              if parts else np.zeros((0, N_SENSORS), np.float32))
    flat = pa.array(values.reshape(-1), type=pa.float32())
    return pa.RecordBatch.from_arrays(
        [pa.array(vehicle_ids, type=pa.string()), pa.array(part), pa.array(seq), pa.array(ts),
         pa.FixedSizeListArray.from_arrays(flat, N_SENSORS)], schema=SCHEMA)


def _serialise(batch: pa.RecordBatch, with_schema: bool, appended: bool = True) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SCHEMA) as writer:
        writer.write_batch(batch)
    data = sink.getvalue().to_pybytes()
    if not appended:
        return data
    # A segment that is appended to holds no end-of-stream marker (a reader stops at the end of the file
    # anyway), and only its first append carries the stream's schema message.
    start = 0 if with_schema else len(SCHEMA.serialize().to_pybytes())
    return data[start:len(data) - 8]


class WriteAheadLog:
    """The appending side: one writer per host (``writer`` tells its segments apart from other hosts')."""

    def __init__(self, root_uri: str, writer: str | None = None, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.fs, self.root = open_filesystem(root_uri)
        self.fs.create_dir(self.root, recursive=True)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.writer = writer or uuid.uuid4().hex[:12]
        self.segment_bytes = segment_bytes
        self.segment: str | None = None  # the open (local) segment
        self._fd: int | None = None
        self._size = 0
        self._batches = 0
        self._last_ns = 0

    def follow(self, segment: str) -> None:
        """Name this writer's next segments after ``segment`` (one found in the log at start)."""
        self._last_ns = max(self._last_ns, int(segment.split("-", 1)[0]))

    def _new_name(self) -> str:
        now = max(time.time_ns(), self._last_ns + 1)  # strictly increasing within a writer
        self._last_ns = now
        return f"{now:020d}-{self.writer}"

    def append(self, parts: Iterable[tuple[str, Mapping[str, np.ndarray]]]) -> str:
        """Append one call's vehicle runs as one record, durably; its position. Raises OSError if it is not
        durable (the record may be on disk but torn or unsynced; the next append starts a new segment)."""
        batch = _record_batch(parts)
        if not self.local:
            name = self._new_name()
            with self.fs.open_output_stream(f"{self.root}/{name}{SEGMENT_SUFFIX}") as out:  # a PUT is atomic
                out.write(_serialise(batch, with_schema=True, appended=False))
            return f"{name}#{0:010d}"
        if self._fd is None or self._size >= self.segment_bytes:
            self._open_segment()
        assert self._fd is not None and self.segment is not None
        data = _serialise(batch, with_schema=self._size == 0)
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write to the log segment {self.segment!r} ({written} of {len(data)} bytes)")
            self._sync()
        except OSError:
            # Not acknowledged, so not to be replayed: cut it off (best effort: were the cut to fail too, a
            # restart would replay frames whose re-sent copies then count as duplicates), and never append to
            # this segment again.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
                self._sync()
            self.close()
            raise
        position = f"{self.segment}#{self._batches:010d}"
        self._size += len(data)
        self._batches += 1
        return position

    def _sync(self) -> None:
        os.fsync(self._fd)  # type: ignore[arg-type]

    def _open_segment(self) -> None:
        self.close()
        name = self._new_name()
        path = f"{self.root}/{name}{SEGMENT_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        folder = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(folder)  # the new segment's name survives a crash
        finally:
            os.close(folder)
        self.segment, self._size, self._batches = name, 0, 0

    def close(self) -> None:
        """Close the open segment (the next append opens a new one)."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self.segment = None, None

    def delete(self, segment: str) -> None:
        """Remove a segment every twin of which is snapshotted past it."""
        if segment == self.segment:
            self.close()
        try:
            self.fs.delete_file(f"{self.root}/{segment}{SEGMENT_SUFFIX}")
        except FileNotFoundError:
            pass


def segments(root_uri: str) -> list[str]:
    """The log's segment names, in log order."""
    fs, root = open_filesystem(root_uri)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return sorted(i.base_name[: -len(SEGMENT_SUFFIX)] for i in infos if i.base_name.endswith(SEGMENT_SUFFIX))


def read_segment(root_uri: str, segment: str) -> Iterator[LogRecord]:
    """A segment's records in log order (a torn last record ends it)."""
    fs, root = open_filesystem(root_uri)
    try:
        with fs.open_input_stream(f"{root}/{segment}{SEGMENT_SUFFIX}") as source:
            data = source.read()
    except FileNotFoundError:
        return
    try:
        reader = pa.ipc.open_stream(data)
    except (pa.ArrowInvalid, OSError):
        return  # not even a schema: created, never appended to
    index = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError):
            return  # a torn tail: that append was never acknowledged
        position = f"{segment}#{index:010d}"
        index += 1
        vehicle_ids = batch.column("vehicle_id").to_pylist()
        part = batch.column("part").to_numpy()
        seq, ts = batch.column("seq").to_numpy(), batch.column("ts").to_numpy()
        values = batch.column("values").flatten().to_numpy().reshape(-1, N_SENSORS)
        bounds = np.flatnonzero(np.diff(part)) + 1
        for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(part)]]), strict=True):
            if hi > lo:
                yield LogRecord(position, vehicle_ids[lo], {"seq": seq[lo:hi].copy(), "ts": ts[lo:hi].copy(),
                                                           "values": values[lo:hi].copy()})


def read_log(root_uri: str) -> Iterator[LogRecord]:
    """Every record of the log, in log order."""
    for segment in segments(root_uri):
        yield from read_segment(root_uri, segment)
