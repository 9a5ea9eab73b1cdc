"""Twins: frames per second, memory per twin, time to restore a killed twin.

    .venv/bin/python bench/bench_twins.py                          # all figures (a few minutes on 2 cores)
    .venv/bin/python bench/bench_twins.py --vehicles 400 --hours 12 --memory-twins 20000
    .venv/bin/python bench/bench_twins.py --models runs/tiny_tr    # with a trained LSTM-AE + Serve models

Figures, same run, same machine (frames are ``twins.synthetic`` frames at 10 s, default config windows):
1. in-process ``TwinHost`` (no Ray), one core: frames/s, baseline only and with the LSTM-AE;
2. ``TwinFleet`` on a local Ray with 2 shard actors (2 CPUs), Arrow batches of all vehicles x
   ``--batch-hours`` per call: frames/s without model calls and with (LSTM-AE in the twins, risk and
   severity from the Serve deployments by handle);
3. memory: resident twins in one process (sharded hosting) and one idle host actor per twin;
   how many fit in 24 GB each way;
4. restore: ``ray.kill`` a host actor, time until its vehicle's next ingest is answered.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from configs.frames import FrameBatch  # noqa: E402
from configs.schema import SCHEMA  # noqa: E402
from configs.settings import load_config  # noqa: E402
from twins.host import HostSettings, TwinHost  # noqa: E402
from twins.synthetic import synthetic_frames  # noqa: E402
from twins.twin import VehicleTwin  # noqa: E402

FRAMES_PER_HOUR = 360
GIB = 1024**3


def rss_bytes(pid: int | None = None) -> int:
    with open(f"/proc/{pid or 'self'}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def fleet_tables(vehicles: int, hours: int, batch_hours: int) -> list[pa.Table]:
    """Arrow batches as the gRPC server hands them over: all vehicles, ``batch_hours`` of frames each."""
    per_vehicle = [synthetic_frames(f"EV{v:06d}", hours * FRAMES_PER_HOUR, seed=1) for v in range(vehicles)]
    step = batch_hours * FRAMES_PER_HOUR
    tables = []
    for lo in range(0, hours * FRAMES_PER_HOUR, step):
        parts = []
        for v, cols in enumerate(per_vehicle):
            n = min(step, cols["seq"].size - lo)
            arrays = {"vehicle_id": pa.array([f"EV{v:06d}"] * n), "ts": pa.array(cols["ts"][lo:lo + n]),
                      "seq": pa.array(cols["seq"][lo:lo + n])}
            arrays.update({s: pa.array(cols[s][lo:lo + n]) for s in SCHEMA.sensor_names})
            parts.append(pa.table(arrays))
        tables.append(pa.concat_tables(parts).combine_chunks())
    return tables


def config_for(args: argparse.Namespace, checkpoint: str, twins_per_actor: int = 1):
    return load_config(overrides=[f"twins.checkpoint_uri={checkpoint}", f"twins.twins_per_actor={twins_per_actor}"])


def anomaly_model(run_dir: str | None):
    if not run_dir:
        return None
    from training.artifacts import load_anomaly_model
    return load_anomaly_model(run_dir)


def bench_in_process(args, tables, model, label: str) -> float:
    import torch
    torch.set_num_threads(1)
    ckpt = tempfile.mkdtemp(prefix="bench-twins-")
    config = config_for(args, ckpt)
    settings = HostSettings(config.twins, config.dataset.window_ms, config.dataset.stride_ms, ckpt)
    host = TwinHost(settings, anomaly_model=model)
    frames = 0
    t0 = time.perf_counter()
    for table in tables:
        block, _ = FrameBatch.from_columns(table)
        frames += host.ingest(block).applied
    elapsed = time.perf_counter() - t0
    shutil.rmtree(ckpt, ignore_errors=True)
    rate = frames / elapsed
    print(f"in-process TwinHost, 1 core, {label}: {frames:,} frames in {elapsed:.1f} s = {rate:,.0f} frames/s")
    return rate


def bench_ray(args, tables, run_dir: str | None, with_models: bool) -> float:
    import ray

    from serving.predictor import ServePredictor
    from twins.hosting import TwinFleet

    ckpt = tempfile.mkdtemp(prefix="bench-twins-ray-")
    per_actor = math.ceil(args.vehicles / 2)
    config = config_for(args, ckpt, twins_per_actor=per_actor)
    fleet = TwinFleet.create(config, run_dir=run_dir if with_models else None, expected_vehicles=args.vehicles,
                             predictor_factory=ServePredictor if with_models else None)
    fleet.ingest(tables[0].slice(0, 1))  # start the actors outside the timing
    for shard in range(fleet.shards):
        ray.get(fleet.actor(f"evtwin-shard-{shard}").pid.remote())
    frames = 0
    t0 = time.perf_counter()
    for table in tables:
        frames += fleet.ingest(table).applied
    elapsed = time.perf_counter() - t0
    stats = fleet.stats()
    fleet.close(checkpoint=False)
    shutil.rmtree(ckpt, ignore_errors=True)
    rate = (frames + 1) / elapsed
    label = "with model calls (LSTM-AE in twins + Serve risk/severity)" if with_models else "without model calls"
    print(f"TwinFleet on Ray, 2 shard actors, {label}: {frames:,} frames in {elapsed:.1f} s = {rate:,.0f} frames/s"
          f"  (predictions answered: {stats.get('predictions_answered', 0)}, failed: {stats.get('predictions_failed', 0)})")
    return rate


def bench_memory_sharded(count: int) -> float:
    """Resident twins in one process, each holding half a window of frames (the average)."""
    config = load_config()
    window_ms = config.dataset.window_ms
    frames = synthetic_frames("m", FRAMES_PER_HOUR // 2 + FRAMES_PER_HOUR, seed=2)
    gc.collect()
    before = rss_bytes()
    twins = []
    for i in range(count):
        twin = VehicleTwin(f"EV{i:06d}", config.twins, window_ms, window_ms)
        twin.ingest(frames)  # one closed window (features, baseline) and half an open one
        twins.append(twin)
    gc.collect()
    per_twin = (rss_bytes() - before) / count
    print(f"sharded hosting: {count:,} resident twins in one process, {per_twin / 1024:,.1f} KiB per twin "
          f"-> {24 * GIB / per_twin:,.0f} twins in 24 GiB")
    return per_twin


def bench_memory_actor_per_twin(actors: int) -> float:
    import ray

    from twins.hosting import TwinFleet

    ckpt = tempfile.mkdtemp(prefix="bench-twins-actors-")
    fleet = TwinFleet.create(config_for(None, ckpt, twins_per_actor=1))
    frames = synthetic_frames("x", 10, seed=3)
    for i in range(actors):
        cols = dict(frames)
        cols["vehicle_id"] = np.full(10, f"EV{i:06d}", dtype=object)
        fleet.ingest(cols)
    pids = ray.get([a.pid.remote() for a in fleet.actors.values()])
    per_actor = float(np.mean([rss_bytes(p) for p in pids]))
    fleet.close(checkpoint=False)
    shutil.rmtree(ckpt, ignore_errors=True)
    print(f"one twin per actor: {actors} actors, {per_actor / 2**20:,.0f} MiB RSS per actor "
          f"-> {24 * GIB / per_actor:,.0f} twins in 24 GiB")
    return per_actor


def bench_restore(tables) -> float:
    import ray

    from twins.hosting import TwinFleet

    ckpt = tempfile.mkdtemp(prefix="bench-twins-restore-")
    fleet = TwinFleet.create(config_for(None, ckpt, twins_per_actor=1))
    first = tables[0]
    one = first.filter(pa.compute.equal(first.column("vehicle_id"), "EV000000"))
    fleet.ingest(one.slice(0, one.num_rows - 10))
    actor = fleet.actor(fleet.host_name("EV000000"))
    times = []
    for _ in range(3):
        ray.kill(actor, no_restart=False)
        t0 = time.perf_counter()
        fleet.ingest(one.slice(one.num_rows - 10, 10))  # re-sent tail: restored twin, duplicates acked
        times.append(time.perf_counter() - t0)
    fleet.close(checkpoint=False)
    shutil.rmtree(ckpt, ignore_errors=True)
    print(f"restore after ray.kill (actor restart + checkpoint read + answer): "
          f"median {np.median(times) * 1000:,.0f} ms over {len(times)} kills")
    return float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vehicles", type=int, default=200)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--batch-hours", type=int, default=6)
    parser.add_argument("--models", default=None, help="a trained run dir (LSTM-AE + LightGBM for Serve)")
    parser.add_argument("--memory-twins", type=int, default=20_000)
    parser.add_argument("--memory-actors", type=int, default=8)
    args = parser.parse_args()

    tables = fleet_tables(args.vehicles, args.hours, args.batch_hours)
    frames = sum(t.num_rows for t in tables)
    print(f"{args.vehicles} vehicles x {args.hours} h = {frames:,} frames, {args.batch_hours} h per vehicle per call")
    model = anomaly_model(args.models)
    bench_in_process(args, tables, None, "baseline only")
    if model is not None:
        bench_in_process(args, tables, model, "with the LSTM-AE")

    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, namespace="evtwin-bench", log_to_driver=False)
    try:
        bench_ray(args, tables, None, with_models=False)
        if args.models:
            from serving.deployments import deploy_models
            deploy_models(load_config(), args.models)
            bench_ray(args, tables, args.models, with_models=True)
            serve.shutdown()
        bench_restore(tables)
        bench_memory_actor_per_twin(args.memory_actors)
    finally:
        ray.shutdown()
    bench_memory_sharded(args.memory_twins)
    return 0


if __name__ == "__main__":
    sys.exit(main())
