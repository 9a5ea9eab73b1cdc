"""What-if simulation throughput: simulated vehicle-days per second, twins and trained models in the loop.

    .venv/bin/python bench/bench_whatif.py --vehicles 1000 --days 90 --skip-scaling   # the issue's target
    .venv/bin/python bench/bench_whatif.py --vehicles 100 --days 30 --skip-scaling    # quicker, projected
    .venv/bin/python bench/bench_whatif.py --skip-core --skip-twins --replications 8 --scaling-vehicles 300

Figures, same run, same machine:
1. the SimPy core alone (baseline scenario, predictive policy with the oracle detector) for
   ``--core-vehicles`` x ``--core-days`` (default: the same size as the twins run), the baseline of the ratio;
2. one replication of the baseline scenario with the predictive policy and real twins with the trained
   models of ``--models`` (default ``runs/demo``: LSTM-AE in the twins, LightGBM failure model):
   generator frames at ``whatif.twin_frame_interval_s`` through the twin host (``twins.host.TwinHost``,
   one batched step for all vehicles per poll), for ``--vehicles`` x ``--days``: wall time, process CPU
   time, vehicle-days/s, the slowdown against (1), the projection to 1,000 vehicles x 90 days and the
   KPIs; ``--twin-shards 1,2`` repeats it with the twins on the Ray ``twins.hosting.TwinFleet``'s shard
   actors (``whatif.twin_shards``; the generator stays in this process);
3. replications spread over Ray workers: the same ``--replications`` with 1 and with 2 CPUs.
The models' dataset windows must equal the scenario's (the twins close the windows the models read).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from simulation.whatif.kpis import compute_kpis  # noqa: E402
from simulation.whatif.parallel import run_tasks  # noqa: E402
from simulation.whatif.runner import ReplicationTask, build_fleet, make_policy, models_dir_or_none, simulate_plans  # noqa: E402
from simulation.whatif.scenarios import load_scenario  # noqa: E402
from simulation.whatif.twin_detector import TwinDetector  # noqa: E402


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
    print(f"core   {vehicles} vehicles x {days:g} days (oracle detector, no twins): fleet {t1 - t0:.2f} s + SimPy "
          f"{t2 - t1:.2f} s = {t2 - t0:.1f} s, {vd / (t2 - t0):,.0f} vehicle-days/s ({len(records.events)} failures, "
          f"{len(records.visits)} visits; load average {load()})")
    return vd / (t2 - t0)


def check_models(config, models_dir: str) -> None:
    """The twins close the scenario's windows; the trained models must have been trained on the same ones."""
    trained = json.loads((Path(models_dir) / "config.json").read_text())["dataset"]
    for key in ("window_minutes", "stride_minutes"):
        if float(trained[key]) != float(getattr(config.dataset, key)):
            raise SystemExit(f"{models_dir}: dataset.{key}={trained[key]} but the scenario uses "
                             f"{getattr(config.dataset, key)}; pick models trained on the scenario's windows")


def bench_twins(vehicles: int, days: float, models: str | None, shards: int = 1,
                core_rate: float | None = None) -> float:
    config = scenario_config(vehicles, days)
    models_dir = models_dir_or_none(models)
    if models_dir is None:
        raise SystemExit(f"--models {models!r} is not a trained run directory (with models/)")
    check_models(config, models_dir)
    t0, c0 = time.perf_counter(), time.process_time()
    profiles, plans = build_fleet(config, config.seed)
    if shards > 1:
        detector = TwinDetector.on_ray(profiles, config, config.seed, plans=plans, models_dir=models_dir, shards=shards)
    else:
        detector = TwinDetector.from_run(profiles, config, config.seed, models_dir, plans)
    policy = make_policy("predictive", config, detector)
    t1 = time.perf_counter()
    try:
        records = simulate_plans(plans, config, policy, config.seed)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        stats = detector.stats()
    finally:
        detector.close()
    vd = vehicles * days
    rate = vd / elapsed
    ratio = f", {core_rate / rate:.0f}x slower than the SimPy core alone" if core_rate else ""
    print(f"twins  {vehicles} vehicles x {days:g} days, {shards} shard(s), frames every "
          f"{config.whatif.twin_frame_interval_s:g} s, {config.dataset.window_minutes:g} min windows, models "
          f"{models_dir} (in the loop: {', '.join(stats['models']) or 'none'}): wall {elapsed:.1f} s "
          f"(setup {t1 - t0:.1f} s), CPU of this process {cpu:.1f} s, "
          f"{stats['frames']:,} frames, {stats['restarts']} stream resumes after repairs, alerts "
          f"{stats['alerts_by_rule']}, {len(records.visits)} visits -> {rate:,.1f} vehicle-days/s{ratio}; "
          f"1,000 x 90 days {'took' if vd >= 90_000 else 'projected'} {90_000 / rate / 60:.1f} min "
          f"(target 5 min; load average {load()})")
    kpis = compute_kpis(records, config.whatif.costs)
    print("twins  KPIs: " + ", ".join(f"{k}={v:.6g}" for k, v in sorted(kpis.items())))
    return rate


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


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
            load_before = load()
            t0 = time.perf_counter()
            run_tasks(tasks)
            timings[cpus] = time.perf_counter() - t0
        finally:
            ray.shutdown()
        vd = replications * vehicles * days
        print(f"ray    {replications} replications of {vehicles} x {days:g} days on {cpus} CPU(s): "
              f"{timings[cpus]:.1f} s = {vd / timings[cpus]:,.0f} vehicle-days/s (load average before: {load_before})")
    print(f"ray    speed-up 2 vs 1 CPUs: {timings[1] / timings[2]:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vehicles", type=int, default=1000, help="fleet size for the twins benchmark")
    parser.add_argument("--days", type=float, default=90.0)
    parser.add_argument("--core-vehicles", type=int, default=None, help="default: --vehicles")
    parser.add_argument("--core-days", type=float, default=None, help="default: --days")
    parser.add_argument("--models", default="runs/demo", help="trained run directory (with models/)")
    parser.add_argument("--replications", type=int, default=4)
    parser.add_argument("--scaling-vehicles", type=int, default=500)
    parser.add_argument("--scaling-days", type=float, default=90.0)
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-core", action="store_true")
    parser.add_argument("--skip-twins", action="store_true")
    parser.add_argument("--twin-shards", default="1", help="comma-separated shard counts to measure, e.g. 1,2")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {load()} (shared with other work)")
    print("command: .venv/bin/python " + " ".join(sys.argv))
    core_rate = None
    if not args.skip_core:
        core_rate = bench_core(args.core_vehicles or args.vehicles, args.core_days or args.days)
    if not args.skip_twins:
        for shards in (int(x) for x in args.twin_shards.split(",")):
            bench_twins(args.vehicles, args.days, args.models, shards, core_rate)
    if not args.skip_scaling:
        bench_scaling(args.replications, args.scaling_vehicles, args.scaling_days)
    print(f"load average at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
