"""Importing a real fleet's recordings into a run folder (layout in docs/CONTRACTS.md), through a catalog.

    evtwin import --catalog configs/catalogs/voltra_e5.json --model E5-LR --out runs/myfleet logs/*.csv

The run folder is the generator's layout, so ``prepare``/``train``/``evaluate``/``stream`` read it the
same way: ``raw_frames/`` (one Parquet per vehicle and UTC day, columns ``SCHEMA.arrow_schema``; a field
the vehicle does not send is all NaN, null for ``charger_state``), ``aggregates/hourly|daily``, and a
manifest that records the catalog, the fields each vehicle sends (``fitted_sensors``), the bad values per
signal and the counter restarts. There is no ``events.parquet`` (no failure labels) and no
``sensor_faults.parquet`` (no injected-fault ground truth) unless the data came with them.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from configs import runs as io
from configs.catalog import Catalog
from configs.frames import vehicle_record_batch
from configs.schema import SCHEMA
from configs.source_frames import SourceReport, VehicleFrames, collect_vehicles
from simulation.writer import (
    MS_PER_DAY,
    MS_PER_HOUR,
    PARQUET_OPTIONS,
    _aggregate_table,
    coarsen_partials,
    day_label,
    finish_partials,
    period_partials,
    prepare_run_dir,
)

IMPORT_SOURCE = "import"


@dataclass
class ImportSummary:
    """What an import wrote and noticed (the manifest holds the same, JSON-ready)."""

    run_dir: str
    num_vehicles: int
    frames: int
    seconds: float
    report: SourceReport
    fitted_sensors: dict[str, list[str]] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)


def write_vehicle_frames(run_dir: Path, frames: VehicleFrames, start_ms: int) -> tuple[int, int]:
    """One Parquet per UTC day plus hourly/daily aggregates; returns (hourly rows, daily rows)."""
    rows = frames.num_rows
    full = {name: frames.columns.get(name, np.full(rows, np.nan)) for name in SCHEMA.sensor_names}
    day_of = (frames.ts_ms - start_ms) // MS_PER_DAY
    cuts = np.flatnonzero(np.r_[True, day_of[1:] != day_of[:-1], True])
    hourly: list[dict[str, np.ndarray]] = []
    daily: list[dict[str, np.ndarray]] = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        day_index = int(day_of[lo])
        ts_ms, day_columns = frames.ts_ms[lo:hi], {name: values[lo:hi] for name, values in full.items()}
        day_dir = io.vehicle_frames_dir(run_dir, frames.vehicle_id) / f"day={day_label(start_ms + day_index * MS_PER_DAY)}"
        day_dir.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_batches([vehicle_record_batch(frames.vehicle_id, ts_ms, frames.seq[lo:hi], day_columns)])
        pq.write_table(table, day_dir / f"part-{day_index}.parquet", **PARQUET_OPTIONS)
        hours = period_partials(ts_ms, day_columns, start_ms, MS_PER_HOUR)
        hourly.append(finish_partials(hours, start_ms, MS_PER_HOUR))
        daily.append(finish_partials(coarsen_partials(hours, 24), start_ms, MS_PER_DAY))
    for level, parts in (("hourly", hourly), ("daily", daily)):
        directory = run_dir / io.AGGREGATES / level / f"vehicle_id={frames.vehicle_id}"
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(_aggregate_table(frames.vehicle_id, parts), directory / "part-0.parquet", compression="zstd")
    return sum(len(p["frames"]) for p in hourly), sum(len(p["frames"]) for p in daily)


def import_fleet(catalog: Catalog, model: str | None, inputs: Iterable[str | Path], run_dir: str | Path, *,
                 overwrite: bool = False, on_file: Callable[[str, int], None] | None = None,
                 on_vehicle: Callable[[VehicleFrames], None] | None = None) -> ImportSummary:
    """Convert ``inputs`` through ``catalog``/``model`` and write them as the run folder ``run_dir``."""
    began = time.perf_counter()
    profile = catalog.profile(model)
    inputs = [Path(p) for p in inputs]
    missing = [str(p) for p in inputs if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"input files not found: {', '.join(missing)}")
    vehicles, report = collect_vehicles(profile, inputs, on_file=on_file)
    if not vehicles:
        raise ValueError(f"no frames in {len(inputs)} input file(s): every row lacked a time or vehicle id "
                         f"(bad values: {report.issues_by_signal()})")
    path = prepare_run_dir(run_dir, overwrite)
    first_ms = min(int(v.ts_ms[0]) for v in vehicles)
    start_ms = first_ms - first_ms % MS_PER_DAY  # UTC midnight, as the generator's windows
    end_ms = max(int(v.ts_ms[-1]) for v in vehicles) + 1
    hourly_rows = daily_rows = frames = 0
    intervals: list[np.ndarray] = []
    for vehicle in vehicles:
        hours, days = write_vehicle_frames(path, vehicle, start_ms)
        hourly_rows, daily_rows, frames = hourly_rows + hours, daily_rows + days, frames + vehicle.num_rows
        intervals.append(np.diff(vehicle.ts_ms))
        if on_vehicle is not None:
            on_vehicle(vehicle)
    steps = np.concatenate(intervals)
    fitted = {v.vehicle_id: list(v.fitted) for v in vehicles}
    manifest = {
        "source": IMPORT_SOURCE,
        "schema_version": SCHEMA.version,
        "catalog": {"name": catalog.name, "model": profile.model, "path": catalog.path, "sha256": catalog.sha256},
        "inputs": [str(p) for p in inputs],
        "num_vehicles": len(vehicles),
        "start_ms": start_ms,
        "end_ms": end_ms,
        # the median spacing of consecutive frames (real sources vary: 1 Hz driving, a frame a minute parked)
        "frame_interval_s": float(np.median(steps)) / 1000 if steps.size else None,
        "rows": {"raw_frames": frames, "hourly": hourly_rows, "daily": daily_rows, "events": 0, "sensor_faults": 0},
        "has_events": False,
        "events_by_mode": {},
        "fitted_sensors": fitted,
        "bad_values": report.issues_by_signal(),
        "counters": {vid: vars(c) for vid, c in sorted(report.counters.items())},
        "missing_signals": sorted(report.missing_signals),
        "ignored_columns": sorted(report.ignored_columns),
    }
    (path / io.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return ImportSummary(run_dir=str(path), num_vehicles=len(vehicles), frames=frames,
                         seconds=time.perf_counter() - began, report=report, fitted_sensors=fitted, manifest=manifest)
