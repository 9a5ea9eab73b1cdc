"""Generator benchmark: frames per second written to Parquet and peak memory.

    .venv/bin/python bench/bench_generator.py            # all cases (about a minute on 2 cores)
    .venv/bin/python bench/bench_generator.py --quick    # default config only, plus the baselines

Cases (each in a fresh process, so peak RSS is its own):
  baseline_write   pyarrow writing random data of the frame schema, same Parquet options, 1 process
  generate_only    the generator's numpy physics without writing, 1 process
  default          `evtwin generate` on configs/config.json (10 vehicles x 7 days at 10 s)
  fleet_100x30     100 vehicles x 30 days at the default 10 s frame interval
Peak memory: the largest resident set of the parent and of any worker process (ru_maxrss); the
machine's total for a run is at most parent + workers x worker peak.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_mib() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def case_baseline_write(days: int) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from configs.schema import SCHEMA
    from simulation.writer import PARQUET_OPTIONS

    rows = 8640
    rng = np.random.default_rng(0)
    arrays = [pa.repeat(pa.scalar("EV000000", pa.string()), rows),
              pa.array(np.arange(rows, dtype=np.int64) * 10_000, type=SCHEMA.arrow_schema.field("ts").type),
              pa.array(np.arange(rows, dtype=np.int64))]
    for spec in SCHEMA.fields:  # smooth random walks inside the field's range: compressible like telemetry
        walk = np.cumsum(rng.standard_normal(rows)) * (spec.max - spec.min) * 1e-3 + (spec.min + spec.max) / 2
        arrays.append(pa.array(np.clip(walk, spec.min, spec.max).astype(spec.numpy_type)))
    table = pa.Table.from_arrays(arrays, schema=SCHEMA.arrow_schema)
    with tempfile.TemporaryDirectory() as tmp:
        began, cpu = time.perf_counter(), time.process_time()
        for day in range(days):
            pq.write_table(table, Path(tmp) / f"part-{day}.parquet", **PARQUET_OPTIONS)
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    return {"frames": rows * days, "seconds": seconds, "workers": 1, "cpu_seconds": cpu}


def case_generate_only(vehicles: int, days: int) -> dict:
    from configs.settings import load_config
    from simulation.fleet import sample_profile
    from simulation.generator import simulate_vehicle

    config = load_config(overrides=[f"simulation.num_vehicles={vehicles}", f"simulation.duration_days_per_vehicle={days}"])
    began, cpu, frames = time.perf_counter(), time.process_time(), 0
    for index in range(vehicles):
        for chunk in simulate_vehicle(sample_profile(config.simulation, config.seed, index), config.simulation, config.seed):
            frames += chunk.num_rows
    return {"frames": frames, "seconds": time.perf_counter() - began, "workers": 1,
            "cpu_seconds": time.process_time() - cpu}


def case_generate(overrides: list[str], workers: int) -> dict:
    from configs.settings import load_config
    from simulation.writer import write_run

    config = load_config(overrides=overrides)
    out = Path(tempfile.mkdtemp(prefix="bench_generator_", dir=ROOT / "runs" if (ROOT / "runs").is_dir() else None))
    try:
        shutil.rmtree(out)
        summary = write_run(config, out, workers=workers)
        size = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"frames": summary.frames, "seconds": summary.seconds, "workers": workers, "parquet_mib": size / 2**20,
            "cpu_seconds": summary.cpu_seconds, "worker_rss_mib": summary.peak_worker_rss_mib}


def run_case(name: str, workers: int) -> dict:
    """Run one case in a fresh interpreter and return its figures (with its own peak memory)."""
    command = [sys.executable, __file__, "--case", name, "--workers", str(workers)]
    result = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(result.stdout.strip().splitlines()[-1])


CASES = {
    "baseline_write": lambda w: case_baseline_write(days=60),
    "generate_only": lambda w: case_generate_only(vehicles=4, days=7),
    "default": lambda w: case_generate([], w),
    "fleet_100x30": lambda w: case_generate(["simulation.num_vehicles=100", "simulation.duration_days_per_vehicle=30"], w),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the 100 x 30 case")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        figures = CASES[args.case](args.workers)
        own, _ = _peak_mib()
        figures.update(peak_rss_mib=own, peak_worker_rss_mib=figures.pop("worker_rss_mib", 0.0))
        print(json.dumps(figures))
        return 0
    names = ["baseline_write", "generate_only", "default"] + ([] if args.quick else ["fleet_100x30"])
    print(f"command: .venv/bin/python bench/bench_generator.py{' --quick' if args.quick else ''}"
          f"{'' if args.workers == (os.cpu_count() or 1) else f' --workers {args.workers}'}")
    print(f"machine: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
          f"python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    results = {name: run_case(name, args.workers) for name in names}
    baseline = results["baseline_write"]["frames"] / results["baseline_write"]["seconds"]
    cores = os.cpu_count() or 1
    print(f"{'case':<16}{'workers':>8}{'frames':>12}{'wall s':>8}{'frames/s':>12}{'x baseline':>11}"
          f"{'CPU s':>8}{'frames/CPU-s':>14}{'peak MiB':>10}{'worker MiB':>11}")
    for name, r in results.items():
        rate = r["frames"] / r["seconds"]
        print(f"{name:<16}{r['workers']:>8}{r['frames']:>12,}{r['seconds']:>8.2f}{rate:>12,.0f}{rate / baseline:>11.2f}"
              f"{r['cpu_seconds']:>8.2f}{r['frames'] / r['cpu_seconds']:>14,.0f}"
              f"{r['peak_rss_mib']:>10.0f}{r['peak_worker_rss_mib']:>11.0f}")
    print(f"frames/s = wall-clock throughput under whatever else runs on the machine now (load average "
          f"{os.getloadavg()[0]:.1f}); frames/CPU-s x {cores} cores = throughput on {cores} idle cores.")
    print("CPU s of the generate cases counts the vehicle work in the workers (not process start-up).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
