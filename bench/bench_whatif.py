"""What-if simulation throughput: simulated vehicle-days per second.

    .venv/bin/python bench/bench_whatif.py                       # default sizes (a few minutes on 2 cores)
    .venv/bin/python bench/bench_whatif.py --vehicles 1000 --days 90 --skip-scaling   # the issue's target
    .venv/bin/python bench/bench_whatif.py --models runs/default  # twins with the trained models

Three figures, same run, same machine:
1. the SimPy core alone (baseline scenario, predictive policy with the oracle detector) for
   ``--core-vehicles`` x ``--days``;
2. one replication of the baseline scenario with the predictive policy and real twins
   (generator frames at ``whatif.twin_frame_interval_s`` through ``VehicleTwin``s, plus the trained
   failure model when ``--models`` points at a trained run) for ``--vehicles`` x ``--days``, with the
   time split into generator, twins and SimPy, and the projection to 1,000 vehicles x 90 days;
   ``--twin-shards 1,2`` repeats it with the twins split over 2 Ray actors (``whatif.twin_shards``);
3. replications spread over Ray workers: the same ``--replications`` with 1 and with 2 CPUs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from simulation.whatif.parallel import run_tasks  # noqa: E402
from simulation.whatif.runner import (ReplicationTask, build_fleet, make_policy, models_dir_or_none,  # noqa: E402
                                      simulate_plans)
from simulation.whatif.scenarios import load_scenario  # noqa: E402


def scenario_config(vehicles: int, days: float):
    return load_scenario("baseline", overrides=[f"simulation.num_vehicles={vehicles}",
                                                f"simulation.duration_days_per_vehicle={days}"]).config


def bench_core(vehicles: int, days: float) -> float:
    config = scenario_config(vehicles, days)
    t0 = time.perf_counter()
    profiles, plans = build_fleet(config, config.seed)
    t1 = time.perf_counter()
    from simulation.whatif.detectors import OracleDetector

    policy = make_policy("predictive", config, OracleDetector(plans, detectable_progress=config.whatif.detectable_progress))
    records = simulate_plans(plans, config, policy, config.seed)
    t2 = time.perf_counter()
    vd = vehicles * days
    print(f"core   {vehicles} vehicles x {days:g} days: fleet {t1 - t0:.2f} s + SimPy {t2 - t1:.2f} s "
          f"= {vd / (t2 - t0):,.0f} vehicle-days/s ({len(records.events)} failures, {len(records.visits)} visits)")
    return vd / (t2 - t0)


def bench_twins(vehicles: int, days: float, models: str | None, shards: int = 1) -> float:
    from simulation.whatif.twin_detector import ShardedTwinDetector, TwinDetector

    config = scenario_config(vehicles, days)
    models_dir = models_dir_or_none(models)
    t0 = time.perf_counter()
    profiles, plans = build_fleet(config, config.seed)
    if shards > 1:
        detector = ShardedTwinDetector(profiles, config, config.seed, plans=plans, models_dir=models_dir,
                                       shards=shards)
    elif models_dir:
        detector = TwinDetector.from_run(profiles, config, config.seed, models_dir, plans)
    else:
        detector = TwinDetector(profiles, config, config.seed, plans=plans)
    policy = make_policy("predictive", config, detector)
    t1 = time.perf_counter()
    try:
        records = simulate_plans(plans, config, policy, config.seed)
        elapsed = time.perf_counter() - t0
        stats = detector.stats()
    finally:
        if shards > 1:
            detector.close()
    vd = vehicles * days
    rate = vd / elapsed
    projected = 90_000 / rate
    print(f"twins  {vehicles} vehicles x {days:g} days, {shards} shard(s), frames every "
          f"{config.whatif.twin_frame_interval_s:g} s, models: {models_dir or 'none (twin baselines only)'}: "
          f"{elapsed:.1f} s (setup {t1 - t0:.1f} s), {stats['frames']:,} frames ({stats['frames'] / elapsed:,.0f}/s), "
          f"{stats['restarts']} stream restarts after repairs, alerts {stats['alerts_by_rule']}, "
          f"{len(records.visits)} visits -> {rate:,.1f} vehicle-days/s; 1,000 x 90 days projected {projected / 60:.1f} min "
          f"(load average {os.getloadavg()[0]:.1f})")
    return rate


def bench_scaling(replications: int, vehicles: int, days: float) -> None:
    import ray

    config = scenario_config(vehicles, days)
    tasks = [ReplicationTask("baseline", "predictive", r, config, "oracle") for r in range(replications)]
    timings = {}
    for cpus in (1, 2):
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 object_store_memory=200 * 1024**2)
        try:
            warm_config = scenario_config(5, 2)  # start every worker (imports) before timing
            run_tasks([ReplicationTask("warm", "reactive", r, warm_config) for r in range(cpus * 2)])
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            run_tasks(tasks)
            timings[cpus] = time.perf_counter() - t0
        finally:
            ray.shutdown()
        vd = replications * vehicles * days
        print(f"ray    {replications} replications of {vehicles} x {days:g} days on {cpus} CPU(s): "
              f"{timings[cpus]:.1f} s = {vd / timings[cpus]:,.0f} vehicle-days/s (load average before: {load:.1f})")
    print(f"ray    speed-up 2 vs 1 CPUs: {timings[1] / timings[2]:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vehicles", type=int, default=100, help="fleet size for the twins benchmark")
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--core-vehicles", type=int, default=1000)
    parser.add_argument("--core-days", type=float, default=90.0)
    parser.add_argument("--models", default=None, help="trained run directory (with models/)")
    parser.add_argument("--replications", type=int, default=4)
    parser.add_argument("--scaling-vehicles", type=int, default=500)
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-core", action="store_true")
    parser.add_argument("--skip-twins", action="store_true")
    parser.add_argument("--twin-shards", default="1", help="comma-separated shard counts to measure, e.g. 1,2")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared with other work)")
    if not args.skip_core:
        bench_core(args.core_vehicles, args.core_days)
    if not args.skip_twins:
        for shards in (int(x) for x in args.twin_shards.split(",")):
            bench_twins(args.vehicles, args.days, args.models, shards)
    if not args.skip_scaling:
        bench_scaling(args.replications, args.scaling_vehicles, args.core_days)
    return 0


if __name__ == "__main__":
    sys.exit(main())
