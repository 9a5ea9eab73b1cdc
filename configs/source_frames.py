"""Source files (CSV or Parquet, any column names) -> contract frames per vehicle, through a catalog.

Shared by ``evtwin import`` (which writes a run folder) and ``evtwin stream --catalog`` (which sends the
frames to the server), so both number and convert frames identically. Pure: pyarrow and numpy only.

A contract field whose signal a vehicle never sends is absent (``columns`` has no entry), never made up;
``fitted`` lists the fields with at least one valid value.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from configs.catalog import BAD_TIME, MISSING_VEHICLE, CatalogError, DecodedRows, SourceProfile
from configs.counters import CounterReport, SeqRebaser
from configs.schema import SCHEMA

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class VehicleFrames:
    """One vehicle's frames in contract terms, in seq order (seq = 1, 2, 3 ...)."""

    vehicle_id: str
    ts_ms: np.ndarray  # int64
    seq: np.ndarray  # int64
    columns: dict[str, np.ndarray]  # contract field -> float64, only fields the source has for this vehicle
    fitted: tuple[str, ...]  # fields with at least one valid value, in contract order

    @property
    def num_rows(self) -> int:
        return int(self.ts_ms.shape[0])


@dataclass
class SourceReport:
    """Everything the conversion noticed: bad values per signal, counters, unmapped columns."""

    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    issues: Counter[tuple[str, str]] = field(default_factory=Counter)  # (signal, kind) -> rows
    counters: dict[str, CounterReport] = field(default_factory=dict)
    missing_signals: set[str] = field(default_factory=set)  # catalog signals no input file had
    ignored_columns: set[str] = field(default_factory=set)  # input columns the catalog does not map

    def add(self, decoded: DecodedRows) -> None:
        self.issues.update(decoded.issues)
        self.ignored_columns.update(decoded.ignored_columns)

    def issues_by_signal(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for (signal, kind), count in sorted(self.issues.items()):
            out[signal][kind] = count
        return dict(out)


def group_rows(vehicle_ids: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """(vehicle id, its row indices in input order) for each vehicle, sorted by id; one sort, not a scan per vehicle.

    >>> [(v, rows.tolist()) for v, rows in group_rows(np.array(["B", "A", "B"], dtype=object))]
    [('A', [1]), ('B', [0, 2])]
    """
    ids = np.asarray(vehicle_ids).astype(str)
    order = np.argsort(ids, kind="stable")
    unique, starts = np.unique(ids[order], return_index=True)
    for vehicle, lo, hi in zip(unique, starts, np.r_[starts[1:], len(ids)], strict=True):
        yield str(vehicle), order[lo:hi]


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in CSV_SUFFIXES + PARQUET_SUFFIXES if name.endswith(s)), path.suffix.lower())


def vehicle_from_path(path: str | Path) -> str:
    """The vehicle id of a one-vehicle file: its name without the data suffix.

    >>> vehicle_from_path("logs/VIN123.csv.gz")
    'VIN123'
    """
    path = Path(path)
    suffix = _suffix(path)
    return path.name[: len(path.name) - len(suffix)] if path.name.lower().endswith(suffix) else path.stem


def read_source_table(path: str | Path) -> pa.Table:
    """A CSV (types inferred; "", NA, N/A, null ... are missing) or Parquet file as an Arrow table."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix in PARQUET_SUFFIXES:
        return pq.read_table(path)
    if suffix in CSV_SUFFIXES:
        parse = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
        return pacsv.read_csv(path, parse_options=parse)
    raise CatalogError(f"{path}: unknown input format {suffix!r} (CSV: {', '.join(CSV_SUFFIXES)}; "
                       f"Parquet: {', '.join(PARQUET_SUFFIXES)})")


def decode_file(profile: SourceProfile, path: str | Path) -> DecodedRows:
    vehicle = None if profile.vehicle_column else vehicle_from_path(path)
    return profile.decode(read_source_table(path), vehicle_id=vehicle)


def collect_vehicles(profile: SourceProfile, paths: Iterable[str | Path],
                     on_file: Callable[[str, int], None] | None = None) -> tuple[list[VehicleFrames], SourceReport]:
    """Decode every file, group rows by vehicle (a vehicle may span files), order and number them.

    Memory holds the decoded columns of the whole input (float64 per present field).
    """
    report = SourceReport()
    parts: dict[str, list[tuple[DecodedRows, np.ndarray]]] = defaultdict(list)
    seen_signals: set[str] = set()
    for path in paths:
        decoded = decode_file(profile, path)
        report.files.append(str(path))
        report.rows_read += len(decoded.ts_ms) + sum(n for (_, kind), n in decoded.issues.items()
                                                     if kind in (BAD_TIME, MISSING_VEHICLE))
        report.add(decoded)
        seen_signals.update(s.source for s in profile.signals if s.source not in decoded.missing_signals)
        for vehicle, rows in group_rows(decoded.vehicle_id):
            parts[vehicle].append((decoded, rows))
        if on_file is not None:
            on_file(str(path), len(decoded.ts_ms))
    report.missing_signals = {s.source for s in profile.signals} - seen_signals
    rebaser = SeqRebaser()
    vehicles = [_assemble(vehicle, parts[vehicle], rebaser, profile) for vehicle in sorted(parts)]
    report.counters = rebaser.reports
    return vehicles, report


def _assemble(vehicle_id: str, parts: list[tuple[DecodedRows, np.ndarray]], rebaser: SeqRebaser,
              profile: SourceProfile) -> VehicleFrames:
    ts = np.concatenate([d.ts_ms[rows] for d, rows in parts])
    counter = np.concatenate([d.counter[rows] for d, rows in parts]) if profile.counter_column else None
    present = [f for f in SCHEMA.sensor_names if any(f in d.columns for d, _ in parts)]
    columns = {
        name: np.concatenate([d.columns[name][rows] if name in d.columns else np.full(len(rows), np.nan)
                              for d, rows in parts])
        for name in present
    }
    order, seq = rebaser.assign(vehicle_id, ts, counter)
    columns = {name: values[order] for name, values in columns.items()}
    fitted = tuple(name for name, values in columns.items() if np.isfinite(values).any())
    return VehicleFrames(vehicle_id=vehicle_id, ts_ms=ts[order], seq=seq, columns=columns, fitted=fitted)
