"""Streaming a real fleet through a signal catalog: source rows -> contract columns for the client library.

Files (what ``evtwin stream --catalog FILE --model NAME INPUT...`` sends)::

    batches, report = catalog_batches(load_catalog("voltra_e5").profile("E5-LR"), ["logs/day1.csv"])
    await client.stream(batches)

Live rows (a gateway reading the car's own names and units), converted batch by batch::

    convert = CatalogConverter(load_catalog("voltra_e5").profile())
    await client.stream(rows_from_the_car(), convert=convert)

Both number frames exactly as ``evtwin import`` does (``configs.counters.SeqRebaser``: seq 1, 2, 3 ... per
vehicle in time order whatever the car's counter does), so a file streamed twice is acknowledged as
duplicates the second time, and streaming equals importing then replaying. Fields a vehicle does not
send are left out of the batch (absent), not filled.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from configs.catalog import SourceProfile
from configs.counters import SeqRebaser
from configs.schema import SCHEMA
from configs.source_frames import SourceReport, collect_vehicles, group_rows
from serving.client import Columns
from serving.sources import chunk_by_time


class CatalogConverter:
    """Callable: a batch of source rows (Arrow table or column dict) -> contract columns, in time order.

    Stateful: per vehicle it continues the seq numbering across batches (rows older than a frame already
    converted are dropped as late and counted in ``counters``). Bad values are counted in ``issues``.
    """

    def __init__(self, profile: SourceProfile, vehicle_id: str | None = None) -> None:
        self.profile = profile
        self.vehicle_id = vehicle_id  # the vehicle of every row, when the catalog has no vehicle column
        self._rebaser = SeqRebaser()
        self.issues: Counter[tuple[str, str]] = Counter()

    @property
    def counters(self) -> dict[str, Any]:
        return self._rebaser.reports

    def __call__(self, rows: pa.Table | Mapping[str, Any]) -> Columns:
        decoded = self.profile.decode(rows, vehicle_id=self.vehicle_id)
        self.issues.update(decoded.issues)
        picked: list[np.ndarray] = []
        seqs: list[np.ndarray] = []
        for vehicle, rows_of in group_rows(decoded.vehicle_id):
            counter = decoded.counter[rows_of] if decoded.counter is not None else None
            order, seq = self._rebaser.assign(vehicle, decoded.ts_ms[rows_of], counter)
            picked.append(rows_of[order])
            seqs.append(seq)
        index = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
        columns: Columns = {"vehicle_id": decoded.vehicle_id[index], "ts": decoded.ts_ms[index],
                            "seq": np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)}
        columns.update({name: values[index] for name, values in decoded.columns.items()})
        order = np.lexsort((columns["seq"], columns["vehicle_id"].astype(str), columns["ts"]))
        return {name: values[order] for name, values in columns.items()}


def catalog_batches(profile: SourceProfile, paths: Iterable[str | Path], vehicles: Iterable[str] | None = None,
                    batch_frames: int = 1000) -> tuple[list[Columns], SourceReport]:
    """Every frame of ``paths`` (optionally some vehicles) in time order, in batches, and what decoding found."""
    paths = list(paths)
    if not paths:
        raise ValueError("--catalog needs input files (CSV or Parquet) to stream")
    frames, report = collect_vehicles(profile, paths)
    wanted = set(vehicles) if vehicles else None
    frames = [f for f in frames if wanted is None or f.vehicle_id in wanted]
    if not frames:
        raise ValueError(f"no frames to stream from {len(paths)} file(s)"
                         + (f" for vehicles {sorted(wanted)}" if wanted else ""))
    present = [name for name in SCHEMA.sensor_names if any(name in f.columns for f in frames)]
    columns: Columns = {
        "vehicle_id": np.concatenate([np.full(f.num_rows, f.vehicle_id, dtype=object) for f in frames]),
        "ts": np.concatenate([f.ts_ms for f in frames]),
        "seq": np.concatenate([f.seq for f in frames]),
    }
    for name in present:  # NaN for a vehicle without the field: it never reports it, so it stays not fitted
        columns[name] = np.concatenate([f.columns.get(name, np.full(f.num_rows, np.nan)) for f in frames])
    return list(chunk_by_time(columns, batch_frames)), report


def describe_report(report: SourceReport) -> str:
    """One line for the console: bad values per signal and counter restarts."""
    bad = ", ".join(f"{signal} {kind} {n}" for (signal, kind), n in sorted(report.issues.items())) or "none"
    restarts = sum(c.restarts for c in report.counters.values())
    return f"catalog decoding: {report.rows_read:,} rows read; bad values: {bad}; counter restarts: {restarts}"
