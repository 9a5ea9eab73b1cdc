"""The run directory: its layout (file names, ground-truth schemas; docs/CONTRACTS.md) and the one set of
readers every package uses (pyarrow, no pandas). ``evtwin generate`` writes it (``simulation.writer``).

>>> list_vehicles("runs/does-not-exist")
[]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from configs.schema import SCHEMA

RAW_FRAMES = "raw_frames"
AGGREGATES = "aggregates"
EVENTS_FILE = "events.parquet"
SENSOR_FAULTS_FILE = "sensor_faults.parquet"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.json"
PLOTS = "plots"

EVENTS_SCHEMA = pa.schema([
    pa.field("vehicle_id", pa.string(), nullable=False),
    pa.field("mode", pa.string(), nullable=False),
    pa.field("onset_ms", pa.int64(), nullable=False),
    pa.field("failure_ms", pa.int64(), nullable=False),
    pa.field("severity", pa.int8(), nullable=False),
    pa.field("observed", pa.bool_(), nullable=False),
    pa.field("component", pa.string(), nullable=False),
])
SENSOR_FAULTS_SCHEMA = pa.schema([
    pa.field("vehicle_id", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("field", pa.string(), nullable=False),
    pa.field("start_ms", pa.int64(), nullable=False),
    pa.field("end_ms", pa.int64(), nullable=False),
    pa.field("magnitude", pa.float64(), nullable=False),
])


def vehicle_frames_dir(run_dir: str | Path, vehicle_id: str) -> Path:
    return Path(run_dir) / RAW_FRAMES / f"vehicle_id={vehicle_id}"


def list_vehicles(run_dir: str | Path) -> list[str]:
    """Vehicle ids that have raw frames in the run, sorted."""
    root = Path(run_dir) / RAW_FRAMES
    if not root.is_dir():
        return []
    return sorted(p.name.split("=", 1)[1] for p in root.iterdir() if p.is_dir() and p.name.startswith("vehicle_id="))


def _read_files(paths: list[Path], schema: pa.Schema | None = None) -> pa.Table:
    # ParquetFile reads exactly the file: no hive-partition columns are inferred from the path.
    tables = [pq.ParquetFile(p).read() for p in paths]
    if not tables:
        if schema is None:
            raise FileNotFoundError("no Parquet files found")
        return schema.empty_table()
    return pa.concat_tables(tables)


def read_vehicle_frames(run_dir: str | Path, vehicle_id: str, columns: list[str] | None = None) -> pa.Table:
    """All frames of one vehicle (schema ``SCHEMA.arrow_schema``), sorted by ``seq``."""
    directory = vehicle_frames_dir(run_dir, vehicle_id)
    paths = sorted(directory.glob("day=*/*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no frames for vehicle {vehicle_id!r} under {directory}")
    if columns is not None:
        wanted = list(dict.fromkeys(["seq", *columns]))
        table = pa.concat_tables([pq.ParquetFile(p).read(columns=wanted) for p in paths])
    else:
        table = _read_files(paths, SCHEMA.arrow_schema)
    table = table.sort_by("seq")
    return table.select(columns) if columns is not None else table


def read_events(run_dir: str | Path) -> pa.Table:
    """Ground-truth failures: vehicle_id, mode, onset_ms, failure_ms, severity, observed, component."""
    return pq.ParquetFile(Path(run_dir) / EVENTS_FILE).read()


def read_sensor_faults(run_dir: str | Path) -> pa.Table:
    """Injected sensor faults: vehicle_id, kind, field, start_ms, end_ms, magnitude."""
    return pq.ParquetFile(Path(run_dir) / SENSOR_FAULTS_FILE).read()


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The run's manifest (seed, window, row counts, config); a clear error when the folder is not a run."""
    path = Path(run_dir) / MANIFEST_FILE
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no {MANIFEST_FILE} (is this a run directory from `evtwin generate`?)")
    return json.loads(path.read_text())


def read_aggregates(run_dir: str | Path, level: Literal["hourly", "daily"],
                    vehicle_id: str | None = None) -> pa.Table:
    """Per vehicle-hour or vehicle-day aggregates (mean/min/max of each sensor), sorted by vehicle and time."""
    if level not in ("hourly", "daily"):
        raise ValueError(f"aggregate level must be 'hourly' or 'daily' (got {level!r})")
    root = Path(run_dir) / AGGREGATES / level
    pattern = f"vehicle_id={vehicle_id}/*.parquet" if vehicle_id else "vehicle_id=*/*.parquet"
    table = _read_files(sorted(root.glob(pattern)))
    return table.sort_by([("vehicle_id", "ascending"), ("period_start_ms", "ascending")])
