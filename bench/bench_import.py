"""``evtwin import`` throughput: a production car's CSV export -> a run folder, through a signal catalog.

    .venv/bin/python bench/bench_import.py                        # 4 vehicles x 3 days of 10 s frames
    .venv/bin/python bench/bench_import.py --vehicles 8 --days 7 --interval 10 --rounds 3

The source is our generator's frames converted to ``configs/catalogs/voltra_e5.json``'s conventions (20
fields, degF/psi/mph/miles, negative discharge current, ISO time, a text charger status, a counter from 0
that restarts half-way), one CSV with a VIN column. Prints rows, CSV size, the seconds of each stage
(read + decode, write) and rows per second, best of ``--rounds``; the source is built once, outside the timing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402

from configs.catalog import SourceProfile, load_catalog  # noqa: E402
from configs.schema import SCHEMA  # noqa: E402
from configs.settings import load_config  # noqa: E402
from configs.source_frames import collect_vehicles  # noqa: E402
from configs.units import convert  # noqa: E402
from simulation.fleet import sample_profile  # noqa: E402
from simulation.generator import stream_vehicle_batches  # noqa: E402
from simulation.importer import import_fleet  # noqa: E402


def source_table(frames: pa.Table, profile: SourceProfile) -> pa.Table:
    """Contract frames in the car's names, units, sign and enum text (the catalog's inverse)."""
    rows = frames.num_rows
    counter = np.arange(rows)
    counter[rows // 2:] = np.arange(rows - rows // 2)  # an ECU reboot half-way
    columns = {"vin": frames.column("vehicle_id"),
               profile.time.column: frames.column("ts").cast(pa.string()),
               profile.counter_column: counter}
    for signal in profile.signals:
        values = frames.column(signal.field).cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
        if signal.values:
            text = {code: name for name, code in signal.values}
            columns[signal.source] = [None if np.isnan(v) else text[int(v)] for v in values]
        else:
            values = -values if signal.negate else values
            columns[signal.source] = (convert(values, SCHEMA.field(signal.field).unit, signal.unit)
                                      - signal.offset) / signal.scale
    return pa.table(columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=4)
    parser.add_argument("--days", type=float, default=3)
    parser.add_argument("--interval", type=float, default=10, help="frame interval in seconds")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cfg = load_config(overrides=[f"simulation.duration_days_per_vehicle={args.days}",
                                 f"simulation.frame_interval_s={args.interval}"])
    catalog = load_catalog("voltra_e5")
    profile = catalog.profile()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.csv"
        tables = []
        for index in range(args.vehicles):
            vehicle = sample_profile(cfg.simulation, cfg.seed, index)
            frames = pa.Table.from_batches(list(stream_vehicle_batches(vehicle, cfg.simulation, cfg.seed,
                                                                       batch_seconds=86400)))
            tables.append(source_table(frames, profile))
        pacsv.write_csv(pa.concat_tables(tables), path)
        rows = sum(t.num_rows for t in tables)
        megabytes = path.stat().st_size / 1e6
        decode, total = [], []
        for _ in range(args.rounds):
            began = time.perf_counter()
            collect_vehicles(profile, [path])
            decode.append(time.perf_counter() - began)
            began = time.perf_counter()
            import_fleet(catalog, None, [path], Path(tmp) / "run", overwrite=True)
            total.append(time.perf_counter() - began)
    print(f"rows {rows:,} ({args.vehicles} vehicles x {args.days:g} d at {args.interval:g} s), CSV {megabytes:.1f} MB")
    print(f"read + decode + number  {min(decode):6.2f} s  {rows / min(decode):>10,.0f} rows/s")
    print(f"whole import (+ write)  {min(total):6.2f} s  {rows / min(total):>10,.0f} rows/s")


if __name__ == "__main__":
    main()
