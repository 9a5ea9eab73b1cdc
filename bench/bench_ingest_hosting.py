"""Memory of the twin hosting for a fleet: the default (hosts opened as vehicles arrive) beside one actor per
vehicle (the old default), same frames, same run.

    .venv/bin/python bench/bench_ingest_hosting.py                       # 1,000 vehicles, 16-actor sample
    .venv/bin/python bench/bench_ingest_hosting.py --vehicles 10000 --per-vehicle-sample 0
    .venv/bin/python bench/bench_ingest_hosting.py --models runs/benchmark   # hosts load the trained LSTM-AE

Each vehicle sends ``--frames`` synthetic frames at 10 s (the default 540 = one closed hourly window and half
an open one), ``--batch-vehicles`` vehicles per call. Memory = the RSS of every host actor process plus the
growth of the driver (the router). One actor per vehicle is measured on ``--per-vehicle-sample`` vehicles and
scaled to the fleet (a 1,000-actor run does not fit this machine; that is the point).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402

from configs.settings import load_config  # noqa: E402
from twins.synthetic import synthetic_frames  # noqa: E402

MIB = 2**20


def rss_bytes(pid: int | None = None) -> int:
    with open(f"/proc/{pid or 'self'}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def batches(vehicles: int, frames: int, batch_vehicles: int) -> list[dict[str, np.ndarray]]:
    template = synthetic_frames("template", frames, seed=1)
    out = []
    for lo in range(0, vehicles, batch_vehicles):
        ids = [f"EV{v:06d}" for v in range(lo, min(vehicles, lo + batch_vehicles))]
        columns = {name: np.tile(values, len(ids)) for name, values in template.items()}
        columns["vehicle_id"] = np.repeat(np.array(ids, dtype=object), frames)
        out.append(columns)
    return out


def measure(label: str, overrides: list[str], vehicles: int, args: argparse.Namespace) -> dict[str, float]:
    import ray

    from twins.hosting import TwinFleet

    ckpt = tempfile.mkdtemp(prefix="bench-ingest-hosting-")
    config = load_config(overrides=[f"twins.checkpoint_uri={ckpt}", *overrides])
    driver_before = rss_bytes()
    fleet = TwinFleet.create(config, run_dir=args.models)
    t0 = time.perf_counter()
    applied = 0
    for columns in batches(vehicles, args.frames, args.batch_vehicles):
        applied += fleet.ingest(columns).applied
    elapsed = time.perf_counter() - t0
    pids = ray.get([handle.pid.remote() for handle in fleet.actors.values()])
    hosts_rss = sum(rss_bytes(pid) for pid in pids)
    driver_growth = max(0, rss_bytes() - driver_before)
    fleet.close(checkpoint=False)
    shutil.rmtree(ckpt, ignore_errors=True)
    total = hosts_rss + driver_growth
    print(f"{label}: {vehicles:,} vehicles on {len(pids)} host actors, {applied:,} frames in {elapsed:.1f} s; "
          f"hosts {hosts_rss / MIB:,.0f} MiB + router growth {driver_growth / MIB:,.0f} MiB = {total / MIB:,.0f} MiB "
          f"({total / vehicles / 1024:,.0f} KiB per vehicle)", flush=True)
    return {"hosts": len(pids), "total": total, "per_vehicle": total / vehicles, "seconds": elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vehicles", type=int, default=1_000)
    parser.add_argument("--frames", type=int, default=540)
    parser.add_argument("--batch-vehicles", type=int, default=100)
    parser.add_argument("--per-vehicle-sample", type=int, default=16, help="0: skip one-actor-per-vehicle")
    parser.add_argument("--models", default=None, help="a trained run dir: every host loads its LSTM-AE")
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=300 * MIB, namespace="evtwin")
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs", flush=True)
    try:
        default = measure("default hosting (twins_per_actor=256, max_host_actors=8)", [], args.vehicles, args)
        if args.per_vehicle_sample:
            sample = measure("one actor per vehicle (twins_per_actor=1), sample", ["twins.twins_per_actor=1"],
                             args.per_vehicle_sample, args)
            scaled = sample["per_vehicle"] * args.vehicles
            print(f"one actor per vehicle scaled to {args.vehicles:,} vehicles: ~{scaled / MIB:,.0f} MiB "
                  f"({scaled / default['total']:,.0f}x the default)", flush=True)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
