"""Writing a run directory: raw frames, aggregates, ground truth and a manifest.

Each vehicle is written by one call of ``write_vehicle`` (a day chunk at a time, so memory stays flat);
``write_run`` fans vehicles out over worker processes. Vehicles are independent random streams, so the
output is byte-for-byte the same whatever the number of workers.
"""
from __future__ import annotations

import json
import resource
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from configs import runs
from configs.schema import SCHEMA
from configs.settings import Config, SimulationConfig, config_from_dict
from simulation.failures import FAILURE_MODES, UNSEEN_FAILURE_MODES, FailureEvent, SensorFault
from simulation.fleet import observation_window, sample_profile
from simulation.generator import simulate_vehicle, vehicle_events, vehicle_sensor_faults

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
_FLOAT_FIELDS = [f.name for f in SCHEMA.fields if f.dtype.startswith("float")]
# zstd level 1 with byte-stream-split floats: ~1.4 M rows/s per core here, ~45 % smaller than plain.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd", "compression_level": 1, "use_dictionary": ["vehicle_id"],
    "use_byte_stream_split": _FLOAT_FIELDS, "write_statistics": ["ts", "seq"],
}


@dataclass(frozen=True)
class VehicleResult:
    """What writing one vehicle produced."""

    index: int
    vehicle_id: str
    frames: int
    hourly_rows: int
    daily_rows: int
    events: list[FailureEvent]
    sensor_faults: list[SensorFault]
    peak_rss_mib: float = 0.0  # of the process that wrote the vehicle (a worker, or the caller)
    cpu_seconds: float = 0.0  # CPU time spent on this vehicle (load-independent cost)


@dataclass
class RunSummary:
    """Totals of a written run (also in its manifest)."""

    run_dir: str
    num_vehicles: int
    frames: int
    seconds: float
    events_by_mode: dict[str, int] = field(default_factory=dict)
    observed_by_mode: dict[str, int] = field(default_factory=dict)
    severity_counts: dict[int, int] = field(default_factory=dict)
    sensor_faults_by_kind: dict[str, int] = field(default_factory=dict)
    healthy_vehicles: int = 0
    peak_worker_rss_mib: float = 0.0  # largest resident set of any process that wrote vehicles
    cpu_seconds: float = 0.0  # CPU time of all vehicles, summed over processes
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def period_partials(ts_ms: np.ndarray, columns: Mapping[str, np.ndarray], origin_ms: int,
                    period_ms: int) -> dict[str, np.ndarray]:
    """Per period (counted from ``origin_ms``): frames, and per sensor the valid count, sum, min and max.

    Partials combine exactly (sums add, minima take the minimum), so daily figures come from hourly
    ones without a second pass over the frames. NaN (dropouts) are not counted.
    """
    keys = (ts_ms - origin_ms) // period_ms
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    frames = np.diff(np.r_[starts, keys.shape[0]])
    out: dict[str, np.ndarray] = {"period": keys[starts], "frames": frames}
    for name in SCHEMA.sensor_names:
        values = columns[name]
        missing = np.isnan(values) if values.dtype.kind == "f" else None
        if missing is not None and missing.any():
            out[f"{name}:n"] = np.add.reduceat(~missing, starts)
            out[f"{name}:sum"] = np.add.reduceat(np.where(missing, 0.0, values), starts, dtype=np.float64)
            out[f"{name}:min"] = np.minimum.reduceat(np.where(missing, np.inf, values), starts)
            out[f"{name}:max"] = np.maximum.reduceat(np.where(missing, -np.inf, values), starts)
        else:
            out[f"{name}:n"] = frames
            out[f"{name}:sum"] = np.add.reduceat(values, starts, dtype=np.float64)
            out[f"{name}:min"] = np.minimum.reduceat(values, starts)
            out[f"{name}:max"] = np.maximum.reduceat(values, starts)
    return out


def coarsen_partials(partials: dict[str, np.ndarray], factor: int) -> dict[str, np.ndarray]:
    """Combine partials of consecutive periods into periods ``factor`` times longer (hours -> days)."""
    keys = partials["period"] // factor
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    out: dict[str, np.ndarray] = {"period": keys[starts]}
    for name, values in partials.items():
        if name == "period":
            continue
        reducer = np.minimum if name.endswith(":min") else np.maximum if name.endswith(":max") else np.add
        out[name] = reducer.reduceat(values, starts)
    return out


def finish_partials(partials: dict[str, np.ndarray], origin_ms: int, period_ms: int) -> dict[str, np.ndarray]:
    """Mean/min/max columns (NaN where a period had no valid value) from partials."""
    out: dict[str, np.ndarray] = {"period_start_ms": origin_ms + partials["period"] * period_ms,
                                  "frames": partials["frames"].astype(np.int32)}
    for name in SCHEMA.sensor_names:
        count = partials[f"{name}:n"]
        empty = count == 0
        if empty.any():
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"{name}_mean"] = np.where(empty, np.nan, partials[f"{name}:sum"] / np.maximum(count, 1))
            out[f"{name}_min"] = np.where(empty, np.nan, partials[f"{name}:min"])
            out[f"{name}_max"] = np.where(empty, np.nan, partials[f"{name}:max"])
        else:
            out[f"{name}_mean"] = partials[f"{name}:sum"] / count
            out[f"{name}_min"] = partials[f"{name}:min"]
            out[f"{name}_max"] = partials[f"{name}:max"]
    return out


def aggregate_columns(ts_ms: np.ndarray, columns: Mapping[str, np.ndarray], origin_ms: int,
                      period_ms: int) -> dict[str, np.ndarray]:
    """Mean/min/max of every sensor per period counted from ``origin_ms``; NaN (dropouts) ignored.

    >>> import numpy as np
    >>> cols = {f.name: np.arange(4, dtype=np.float32) for f in SCHEMA.fields}
    >>> out = aggregate_columns(np.array([0, 1, 2, 3]) * 1800_000, cols, 0, 3_600_000)
    >>> out["frames"].tolist(), out["soc_mean"].tolist(), out["soc_max"].tolist()
    ([2, 2], [0.5, 2.5], [1.0, 3.0])
    """
    return finish_partials(period_partials(ts_ms, columns, origin_ms, period_ms), origin_ms, period_ms)


def aggregate_schema() -> pa.Schema:
    fields = [pa.field("vehicle_id", pa.string()), pa.field("period_start_ms", pa.int64()),
              pa.field("frames", pa.int32())]
    for name in SCHEMA.sensor_names:
        fields += [pa.field(f"{name}_{stat}", pa.float32() if name != "odometer" else pa.float64())
                   for stat in ("mean", "min", "max")]
    return pa.schema(fields)


def _aggregate_table(vehicle_id: str, parts: list[dict[str, np.ndarray]]) -> pa.Table:
    schema = aggregate_schema()
    merged = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    rows = merged["frames"].shape[0]
    arrays = [pa.repeat(pa.scalar(vehicle_id, pa.string()), rows)]
    arrays += [pa.array(merged[f.name].astype(f.type.to_pandas_dtype())) for f in schema if f.name != "vehicle_id"]
    return pa.Table.from_arrays(arrays, schema=schema)


def day_label(ms: int) -> str:
    """UTC date of a timestamp, the ``day=`` partition value.

    >>> day_label(1767571200000)
    '2026-01-05'
    """
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def write_vehicle(config: Config, run_dir: str | Path, index: int) -> VehicleResult:
    """Simulate and write one vehicle: a Parquet file per day, then its hourly and daily aggregates."""
    began = time.process_time()
    sim_cfg: SimulationConfig = config.simulation
    profile = sample_profile(sim_cfg, config.seed, index)
    start_ms, _ = observation_window(sim_cfg)
    frames_root = runs.vehicle_frames_dir(run_dir, profile.vehicle_id)
    row_group = max(1, int(sim_cfg.chunk_hours * 3600 / sim_cfg.frame_interval_s))
    hourly: list[dict[str, np.ndarray]] = []
    daily: list[dict[str, np.ndarray]] = []
    frames = 0
    for chunk in simulate_vehicle(profile, sim_cfg, config.seed):
        day_dir = frames_root / f"day={day_label(start_ms + chunk.day_index * MS_PER_DAY)}"
        day_dir.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_batches([chunk.to_record_batch()])
        pq.write_table(table, day_dir / f"part-{chunk.day_index}.parquet", row_group_size=row_group,
                       **PARQUET_OPTIONS)
        hours = period_partials(chunk.ts_ms, chunk.columns, start_ms, MS_PER_HOUR)
        hourly.append(finish_partials(hours, start_ms, MS_PER_HOUR))
        daily.append(finish_partials(coarsen_partials(hours, 24), start_ms, MS_PER_DAY))
        frames += chunk.num_rows
    for level, parts in (("hourly", hourly), ("daily", daily)):
        directory = Path(run_dir) / runs.AGGREGATES / level / f"vehicle_id={profile.vehicle_id}"
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(_aggregate_table(profile.vehicle_id, parts), directory / "part-0.parquet",
                       compression="zstd")
    return VehicleResult(
        index=index, vehicle_id=profile.vehicle_id, frames=frames,
        hourly_rows=sum(p["frames"].shape[0] for p in hourly), daily_rows=sum(p["frames"].shape[0] for p in daily),
        events=vehicle_events(profile, sim_cfg, config.seed),
        sensor_faults=vehicle_sensor_faults(profile, sim_cfg, config.seed),
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        cpu_seconds=time.process_time() - began,
    )


def _write_vehicle_from_dict(document: dict[str, Any], run_dir: str, index: int) -> VehicleResult:
    return write_vehicle(config_from_dict(document), run_dir, index)


def events_table(events: list[FailureEvent]) -> pa.Table:
    rows = [asdict(e) for e in events]
    return pa.Table.from_pylist(rows, schema=runs.EVENTS_SCHEMA) if rows else runs.EVENTS_SCHEMA.empty_table()


def sensor_faults_table(faults: list[SensorFault]) -> pa.Table:
    rows = [asdict(f) for f in faults]
    return pa.Table.from_pylist(rows, schema=runs.SENSOR_FAULTS_SCHEMA) if rows else runs.SENSOR_FAULTS_SCHEMA.empty_table()


def prepare_run_dir(run_dir: str | Path, overwrite: bool) -> Path:
    """Refuse an existing run unless ``overwrite``; never delete a directory that is not a run."""
    path = Path(run_dir)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"run directory {path} already exists (use --overwrite to replace it)")
        looks_like_run = (path / runs.MANIFEST_FILE).exists() or (path / runs.RAW_FRAMES).exists()
        if path.is_dir() and (looks_like_run or not any(path.iterdir())):
            shutil.rmtree(path)
        else:
            raise FileExistsError(f"{path} exists and is not a run directory; refusing to overwrite it")
    path.mkdir(parents=True)
    return path


class _GroundTruthSink:
    """Streams events and sensor faults to Parquet in vehicle order and keeps only counters.

    Workers finish in any order; results wait in a small reorder buffer (bounded by the work in
    flight) so the files are identical whatever the number of workers, and memory stays flat.
    """

    FLUSH_ROWS = 50_000

    def __init__(self, path: Path) -> None:
        self._events = pq.ParquetWriter(path / runs.EVENTS_FILE, runs.EVENTS_SCHEMA)
        self._faults = pq.ParquetWriter(path / runs.SENSOR_FAULTS_FILE, runs.SENSOR_FAULTS_SCHEMA)
        self._event_rows: list[FailureEvent] = []
        self._fault_rows: list[SensorFault] = []
        self._waiting: dict[int, VehicleResult] = {}
        self._next = 0
        self.vehicles = self.frames = self.hourly_rows = self.daily_rows = self.healthy = 0
        self.events_by_mode: Counter[str] = Counter()
        self.observed_by_mode: Counter[str] = Counter()
        self.severities: Counter[int] = Counter()
        self.faults_by_kind: Counter[str] = Counter()
        self.peak_rss_mib = self.cpu_seconds = 0.0

    def add(self, result: VehicleResult) -> None:
        self._waiting[result.index] = result
        while self._next in self._waiting:
            self._take(self._waiting.pop(self._next))
            self._next += 1

    def _take(self, r: VehicleResult) -> None:
        self.vehicles += 1
        self.frames += r.frames
        self.hourly_rows += r.hourly_rows
        self.daily_rows += r.daily_rows
        self.healthy += not r.events
        self.events_by_mode.update(e.mode for e in r.events)
        self.observed_by_mode.update(e.mode for e in r.events if e.observed)
        self.severities.update(e.severity for e in r.events)
        self.faults_by_kind.update(f.kind for f in r.sensor_faults)
        self.peak_rss_mib = max(self.peak_rss_mib, r.peak_rss_mib)
        self.cpu_seconds += r.cpu_seconds
        self._event_rows += r.events
        self._fault_rows += r.sensor_faults
        if len(self._event_rows) + len(self._fault_rows) >= self.FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._event_rows:
            self._events.write_table(events_table(self._event_rows))
        if self._fault_rows:
            self._faults.write_table(sensor_faults_table(self._fault_rows))
        self._event_rows, self._fault_rows = [], []

    def close(self) -> None:
        if self._waiting:
            raise RuntimeError(f"vehicles missing before {min(self._waiting)}: run incomplete")
        self._flush()
        self._events.close()
        self._faults.close()


def write_run(config: Config, run_dir: str | Path, *, overwrite: bool = False, workers: int = 1,
              on_vehicle_done: Callable[[VehicleResult], None] | None = None) -> RunSummary:
    """Generate the whole fleet into ``run_dir`` (layout in docs/CONTRACTS.md) and write the manifest."""
    path = prepare_run_dir(run_dir, overwrite)
    began = time.perf_counter()
    count = config.simulation.num_vehicles
    sink = _GroundTruthSink(path)

    def done(result: VehicleResult) -> None:
        sink.add(result)
        if on_vehicle_done is not None:
            on_vehicle_done(result)

    if workers <= 1 or count == 1:
        for index in range(count):
            done(write_vehicle(config, path, index))
    else:
        document = config.model_dump(mode="json")
        # forkserver, not fork: the parent may run threads (progress display, pyarrow pools). The server
        # imports the generator once, so each worker starts in milliseconds instead of re-importing.
        context = get_context("forkserver")
        context.set_forkserver_preload(["simulation.writer"])
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            pending: set[Future[VehicleResult]] = set()
            next_index = 0
            while next_index < count or pending:
                while next_index < count and len(pending) < 4 * workers:  # bounded: flat memory
                    pending.add(pool.submit(_write_vehicle_from_dict, document, str(path), next_index))
                    next_index += 1
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    done(future.result())
    sink.close()
    summary = _summarise(path, config, sink, time.perf_counter() - began)
    (path / runs.CONFIG_FILE).write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    (path / runs.MANIFEST_FILE).write_text(json.dumps(summary.manifest, indent=2))
    return summary


def _summarise(path: Path, config: Config, sink: _GroundTruthSink, seconds: float) -> RunSummary:
    start_ms, end_ms = observation_window(config.simulation)
    manifest = {
        "config_hash": config.content_hash(),
        "schema_version": SCHEMA.version,
        "seed": config.seed,
        "num_vehicles": sink.vehicles,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "frame_interval_s": config.simulation.frame_interval_s,
        "rows": {"raw_frames": sink.frames, "hourly": sink.hourly_rows, "daily": sink.daily_rows,
                 "events": sum(sink.events_by_mode.values()), "sensor_faults": sum(sink.faults_by_kind.values())},
        # Unseen modes (off by default) are listed only where a variant produced some.
        "events_by_mode": {m: sink.events_by_mode.get(m, 0) for m in FAILURE_MODES}
        | {m: n for m in UNSEEN_FAILURE_MODES if (n := sink.events_by_mode.get(m, 0))},
        "observed_events_by_mode": {m: sink.observed_by_mode.get(m, 0) for m in FAILURE_MODES}
        | {m: n for m in UNSEEN_FAILURE_MODES if (n := sink.observed_by_mode.get(m, 0))},
        "config": config.model_dump(mode="json"),
    }
    return RunSummary(
        run_dir=str(path), num_vehicles=sink.vehicles, frames=sink.frames, seconds=seconds,
        events_by_mode=dict(manifest["events_by_mode"]), observed_by_mode=dict(manifest["observed_events_by_mode"]),
        severity_counts=dict(sorted(sink.severities.items())),
        sensor_faults_by_kind=dict(sorted(sink.faults_by_kind.items())),
        healthy_vehicles=sink.healthy, peak_worker_rss_mib=sink.peak_rss_mib, cpu_seconds=sink.cpu_seconds,
        manifest=manifest,
    )
