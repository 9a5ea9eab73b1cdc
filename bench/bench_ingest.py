"""Ingest at fleet scale: many small vehicle streams, and gateway batches, through the twins and through the
front door alone (MemoryFleet), same load, same run.

    .venv/bin/python bench/bench_ingest.py                                   # 1,000 streams + gateways
    .venv/bin/python bench/bench_ingest.py --streams 10000 --parts streams --seconds 20
    .venv/bin/python bench/bench_ingest.py --durability wal,checkpoint      # both durability modes, one run

Servers (each in its own process, started like ``evtwin serve``: default config, checkpoints under runs/):
- ``memory``: the front door over MemoryFleet (dedup, acks; no twins): the ceiling for the load;
- ``ray``: the front door over twins on Ray with the default hosting (``twins.twins_per_actor``,
  ``twins.max_host_actors``), durable acks: one server per ``--durability`` mode (``wal``: every
  acknowledged frame is in the host's write-ahead log; ``checkpoint``: in a checkpoint), each started with
  ``--set twins.durability=MODE``; result keys ``PART-ray-MODE``.
Loads (the client is this process):
- ``streams``: ``--streams`` vehicle streams, each with its own vehicle token, ``--frames`` frames per batch,
  at most ``--unacked`` batches unacknowledged per stream, ``--per-channel`` streams per HTTP/2 connection;
- ``gateway``: 8 streams of gateway batches of 10 vehicles x 100 frames (1,000 frames), 4 unacknowledged;
- ``sigterm``: the vehicle streams against a fresh twins server, SIGTERM 3 s after they start (host actors
  still starting, every stream's first batch in flight): seconds until the server exited.
Figures: acknowledged frames/s, ack p50/p99 (batch sent -> its Ack), server RSS (server process and all its
descendants: raylet, host actors) at the end, streams that had every batch acknowledged.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = b"bench-secret-bench-secret-000000"
START_MS = 1_767_571_200_000  # 2026-01-05
CKPT = "runs/bench-ingest/ckpt"


def columns_for(vehicles: list[str], frames_each: int, start_seq: int) -> dict[str, np.ndarray]:
    from configs.schema import SCHEMA

    n = len(vehicles) * frames_each
    rng = np.random.default_rng(start_seq)
    seq = np.tile(np.arange(start_seq, start_seq + frames_each), len(vehicles))
    columns: dict[str, np.ndarray] = {"vehicle_id": np.repeat(np.array(vehicles), frames_each), "seq": seq,
                                      "ts": START_MS + seq * 10_000}
    for spec in SCHEMA.fields:
        mid, span = (spec.min + spec.max) / 2, (spec.max - spec.min) / 20
        columns[spec.name] = np.full(n, 1.0) if spec.dtype == "int8" else mid + span * rng.standard_normal(n)
    return columns


# ------------------------------------------------------------------------------------------ server
def serve(kind: str, extra_overrides: list[str]) -> None:
    from configs.settings import load_config
    from serving.app import open_runtime
    from serving.server import serve_until_signal, start_front_door

    shutil.rmtree(CKPT, ignore_errors=True)
    config = load_config(overrides=[f"twins.checkpoint_uri={CKPT}", "serving.max_concurrent_streams=20000",
                                    *extra_overrides])
    if kind == "ray":
        import ray
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=300 * 2**20,
                 namespace="evtwin", log_to_driver=False)
    runtime = open_runtime(config, kind)

    async def main() -> int:
        door = await start_front_door(runtime.backend, config.serving, secret=SECRET, host="127.0.0.1", port=0)
        print(f"READY {door.port}", flush=True)
        return await serve_until_signal(door)

    try:
        asyncio.run(main())
    finally:
        runtime.shutdown()


def start_server(kind: str, durability: str | None = None) -> tuple[subprocess.Popen, int]:
    """Start a server process; ``durability`` (twins only) is passed as ``--set twins.durability=...``."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    label = f"{kind}-{durability}" if durability else kind
    log = open(ROOT / "runs" / f"bench_ingest_{label}.log", "w")
    command = [sys.executable, __file__, "--serve", kind]
    if durability:
        command += ["--set", f"twins.durability={durability}"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        line = process.stdout.readline()
        if line.startswith("READY"):
            return process, int(line.split()[1])
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"{label} server did not start (see runs/bench_ingest_{label}.log)")


def stop_server(process: subprocess.Popen) -> float:
    """SIGTERM, then seconds until it exited (the bounded drain)."""
    started = time.perf_counter()
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return time.perf_counter() - started


def tree_rss_mb(pid: int) -> float:
    total, todo, seen = 0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1024


# ------------------------------------------------------------------------------------------ client
def percentile_ms(samples: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.array(samples) * 1000, q))) if samples else None


async def load(port: int, streams: list[tuple[list[str], str]], frames_each: int, unacked: int, seconds: float,
               per_channel: int, rounds: int) -> dict[str, Any]:
    """One bidi stream per (vehicles, token); pre-encoded batches, at most ``unacked`` in flight each."""
    import grpc

    from protos.evtwin.v1 import telemetry_pb2
    from serving.codec import encode_columns

    payloads = [[encode_columns(columns_for(vehicles, frames_each, 1 + r * frames_each), batch_id=r + 1)
                 .SerializeToString() for r in range(rounds)] for vehicles, _ in streams]
    acked = 0
    latency: list[float] = []
    complete = 0
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    # A local subchannel pool per channel: otherwise channels with equal options share one HTTP/2 connection.
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(-(-len(streams) // per_channel))]

    async def one(index: int) -> None:
        nonlocal acked, complete
        token = streams[index][1]
        call = channels[index // per_channel].stream_stream(
            "/evtwin.v1.TelemetryService/Stream", request_serializer=lambda b: b,
            response_deserializer=telemetry_pb2.StreamReply.FromString)(
            metadata=(("authorization", f"Bearer {token}"),))
        window = asyncio.Semaphore(unacked)
        sent_at: dict[int, float] = {}
        sent = 0

        async def reader() -> None:
            nonlocal acked
            async for reply in call:
                if reply.HasField("ack"):
                    acked += reply.ack.frames
                    latency.append(time.perf_counter() - sent_at.pop(reply.ack.batch_id))
                    window.release()

        task = asyncio.create_task(reader())
        try:
            while time.perf_counter() < deadline and sent < rounds and not task.done():
                await window.acquire()
                sent_at[sent + 1] = time.perf_counter()
                await call.write(payloads[index][sent])
                sent += 1
            await call.done_writing()
            await task
            complete += not sent_at
        except grpc.aio.AioRpcError as error:
            errors[error.code().name] = errors.get(error.code().name, 0) + 1
            task.cancel()

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(len(streams))))
    elapsed = time.perf_counter() - started
    for channel in channels:
        await channel.close()
    return {"frames": acked, "seconds": round(elapsed, 1), "frames_per_s": round(acked / elapsed),
            "ack_p50_ms": percentile_ms(latency, 50), "ack_p99_ms": percentile_ms(latency, 99),
            "streams_complete": complete, "streams": len(streams), "errors": errors}


async def sigterm_under_load(process: subprocess.Popen, port: int, streams: list[tuple[list[str], str]],
                             after_s: float, args: argparse.Namespace) -> dict[str, Any]:
    """Start the streams, SIGTERM the server ``after_s`` later (host actors still starting), time its exit."""
    traffic = asyncio.create_task(load(port, streams, args.frames, args.unacked, 60.0, args.per_channel, rounds=240))
    await asyncio.sleep(after_s)
    started = time.perf_counter()
    process.terminate()
    code = await asyncio.to_thread(process.wait, 120)
    exit_s = time.perf_counter() - started
    figures = await asyncio.wait_for(traffic, timeout=120)
    return {"exit_s": round(exit_s, 1), "exit_code": code, "acked_frames": figures["frames"],
            "errors": figures["errors"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=("memory", "ray"), help=argparse.SUPPRESS)
    parser.add_argument("--parts", default="streams,gateway")
    parser.add_argument("--backends", default="memory,ray")
    parser.add_argument("--streams", type=int, default=1_000)
    parser.add_argument("--frames", type=int, default=10, help="frames per batch of a vehicle stream")
    parser.add_argument("--unacked", type=int, default=2)
    parser.add_argument("--per-channel", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--durability", default="wal",
                        help="twins durability modes to run, comma-separated (wal,checkpoint): one twins "
                             "server per mode, each started with --set twins.durability=MODE")
    # The server process's config overrides (as ``evtwin serve --set``), passed by start_server.
    parser.add_argument("--set", dest="overrides", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.overrides)
        return 0
    modes = args.durability.split(",")
    unknown = set(modes) - {"wal", "checkpoint"}
    if unknown:
        parser.error(f"--durability: unknown mode(s) {sorted(unknown)} (wal, checkpoint)")

    from serving.auth import Claims, issue_token

    (ROOT / "runs").mkdir(exist_ok=True)
    results: dict[str, Any] = {"cpus": os.cpu_count(), "args": vars(args)}
    vehicle_streams = []
    for s in range(args.streams):
        vehicle = f"S{s:05d}"
        vehicle_streams.append(([vehicle], issue_token(SECRET, Claims(role="vehicle", sub=vehicle), ttl_s=86_400)))
    gateway = issue_token(SECRET, Claims(role="gateway", sub="bench", vehicles="G*"), ttl_s=86_400)
    gateway_streams = [([f"G{s:02d}-{v:02d}" for v in range(10)], gateway) for s in range(8)]
    if "sigterm" in args.parts.split(","):
        process, port = start_server("ray")
        try:
            figures = asyncio.run(sigterm_under_load(process, port, vehicle_streams, 3.0, args))
        finally:
            if process.poll() is None:
                process.kill()
        results["sigterm-under-load-ray"] = figures
        print("sigterm-under-load-ray", json.dumps(figures), flush=True)
    servers = [(kind, mode) for kind in args.backends.split(",")
               for mode in (modes if kind == "ray" else [None])]
    for kind, mode in servers:
        if not set(args.parts.split(",")) - {"sigterm"}:
            break
        label = f"{kind}-{mode}" if mode else kind
        process, port = start_server(kind, mode)
        try:
            for part in args.parts.split(","):
                if part == "sigterm":
                    continue
                load_avg = os.getloadavg()[0]
                if part == "streams":
                    figures = asyncio.run(load(port, vehicle_streams, args.frames, args.unacked, args.seconds,
                                               args.per_channel, rounds=max(4, int(args.seconds * 4))))
                else:
                    figures = asyncio.run(load(port, gateway_streams, 100, 4, args.seconds, 8, rounds=400))
                figures["server_rss_mb"] = round(tree_rss_mb(process.pid))
                figures["load_average"] = round(load_avg, 1)
                results[f"{part}-{label}"] = figures
                print(f"{part}-{label}", json.dumps(figures), flush=True)
        finally:
            results[f"sigterm-exit-s-{label}"] = round(stop_server(process), 1)
            print(f"{label} exited {results[f'sigterm-exit-s-{label}']} s after SIGTERM", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
