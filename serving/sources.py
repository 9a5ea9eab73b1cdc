"""Where streamed frames come from: a generated run's Parquet (replay) or the generator itself (live).

Both yield column dicts of at most ``batch_frames`` rows, several vehicles interleaved in time order (a
gateway's view of its vehicles); ``paced`` spaces them out at real time or N times faster.

>>> import numpy as np
>>> columns = {"vehicle_id": np.array(["A", "B", "A"]), "ts": np.array([1, 2, 3]), "seq": np.array([1, 1, 2])}
>>> [len(b["seq"]) for b in chunk_by_time(columns, batch_frames=2)]
[2, 1]
"""
from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from configs.frames import Columns
from configs.runs import RAW_FRAMES, list_vehicles, read_vehicle_frames
from configs.schema import SCHEMA
from configs.settings import Config
from serving.client import select_rows, to_columns
from simulation.fleet import sample_profiles
from simulation.generator import stream_vehicle_batches


def chunk_by_time(columns: Columns, batch_frames: int) -> Iterator[Columns]:
    """Rows sorted by (ts, vehicle, seq), cut into batches of ``batch_frames``."""
    order = np.lexsort((columns["seq"], columns["vehicle_id"].astype(str), columns["ts"]))
    for start in range(0, len(order), batch_frames):
        yield select_rows(columns, order[start:start + batch_frames])


def read_run_frames(run_dir: str | Path, vehicles: Iterable[str] | None = None) -> pa.Table:
    """All raw frames of a run (optionally some vehicles) as one table in SCHEMA.arrow_schema."""
    ids = sorted(vehicles) if vehicles else list_vehicles(run_dir)
    if not ids:
        raise FileNotFoundError(f"{Path(run_dir) / RAW_FRAMES}: no raw frames (generate a run first: evtwin generate)")
    tables = [read_vehicle_frames(run_dir, v) for v in ids]
    return pa.concat_tables([t.select(list(SCHEMA.column_names)).cast(SCHEMA.arrow_schema) for t in tables])


def replay_run(run_dir: str | Path, vehicles: Iterable[str] | None = None, batch_frames: int = 1000) -> Iterator[Columns]:
    """A run's frames in time order, in batches."""
    yield from chunk_by_time(to_columns(read_run_frames(run_dir, vehicles)), batch_frames)


def live_fleet(config: Config, vehicles: Iterable[str] | None = None, batch_frames: int = 1000,
               batch_seconds: int = 600) -> Iterator[Columns]:
    """Frames straight from the generator (no Parquet), vehicles merged in time order."""
    wanted = set(vehicles) if vehicles else None
    profiles = [p for p in sample_profiles(config.simulation, config.seed) if wanted is None or p.vehicle_id in wanted]
    streams = [stream_vehicle_batches(p, config.simulation, config.seed, batch_seconds=batch_seconds) for p in profiles]
    heap: list[tuple[int, int, Columns]] = []
    for i, stream in enumerate(streams):
        _push_next(heap, i, stream)
    pending: list[Columns] = []
    rows = 0
    while heap:
        _, i, columns = heapq.heappop(heap)
        pending.append(columns)
        rows += len(columns["seq"])
        _push_next(heap, i, streams[i])
        if rows >= batch_frames:
            merged = {k: np.concatenate([c[k] for c in pending]) for k in pending[0]}
            yield from chunk_by_time(merged, batch_frames)
            pending, rows = [], 0
    if pending:
        yield from chunk_by_time({k: np.concatenate([c[k] for c in pending]) for k in pending[0]}, batch_frames)


def _push_next(heap: list, i: int, stream: Iterator[pa.RecordBatch]) -> None:
    for batch in stream:
        if batch.num_rows:
            columns = to_columns(batch)
            heapq.heappush(heap, (int(columns["ts"][0]), i, columns))
            return


async def paced(batches: Iterable[Columns], speed: float, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], Any] = asyncio.sleep) -> AsyncIterator[Columns]:
    """Release each batch when its first frame is due: real time (speed 1), N x faster, or at once (0)."""
    start_wall: float | None = None
    start_ts = 0
    for batch in batches:
        if speed > 0:
            first_ts = int(batch["ts"].min())
            if start_wall is None:
                start_wall, start_ts = clock(), first_ts
            delay = start_wall + (first_ts - start_ts) / 1000 / speed - clock()
            if delay > 0:
                await sleep(delay)
        yield batch
