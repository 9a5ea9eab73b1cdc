"""Benchmark the gRPC front door, beside a plain grpcio ceiling and an HTTP/JSON ingest, in one run.

    .venv/bin/python bench/bench_grpc.py                     # all parts, ~3 minutes on 2 cores
    .venv/bin/python bench/bench_grpc.py --parts plain,memory --seconds 5

Parts (each server runs in its own process; the client is this process):
- plain:  a bare grpc.aio server that parses each FrameBatch and acks it (the ceiling on this machine)
- memory: the evtwin front door (auth, validation, decode to Arrow) over the ingest-only MemoryFleet
- twins:  the evtwin front door over twins on Ray (TwinFleet, sharded hosts): client -> gRPC -> twins -> acks
- http:   HTTP/JSON ingest (FastAPI + uvicorn), rows as JSON objects, same MemoryFleet behind it
- idle:   N concurrent vehicle streams held open on the front door (each authenticated, one batch acked)

Figures: frames/s (acked), p50/p99 frame-to-ack (send of a batch -> its Ack) and frame-to-alert (send of a
batch carrying an impossible reading -> the sensor_fault alert on the stream).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request  # module level: FastAPI resolves the (string) annotation from module globals

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = b"bench-secret-bench-secret-000000"
START_MS = 1_767_571_200_000  # 2026-01-05


# ------------------------------------------------------------------------------------------ payloads
def batch_columns(vehicles: list[str], frames_each: int, start_seq: int, fault_every: int = 0) -> dict[str, np.ndarray]:
    from configs.schema import SCHEMA

    n = len(vehicles) * frames_each
    rng = np.random.default_rng(start_seq)
    vehicle = np.repeat(np.array(vehicles), frames_each)
    seq = np.tile(np.arange(start_seq, start_seq + frames_each), len(vehicles))
    columns: dict[str, np.ndarray] = {"vehicle_id": vehicle, "seq": seq, "ts": START_MS + seq * 10_000}
    for spec in SCHEMA.fields:
        mid, span = (spec.min + spec.max) / 2, (spec.max - spec.min) / 20
        columns[spec.name] = (np.full(n, 1.0) if spec.dtype == "int8" else mid + span * rng.standard_normal(n))
    if fault_every:
        columns["speed"][::fault_every] = 999.0  # impossible: raises a sensor_fault alert
    return columns


# ------------------------------------------------------------------------------------------ servers
def serve_plain(port: int) -> None:
    import grpc

    from protos.evtwin.v1 import telemetry_pb2, telemetry_pb2_grpc

    class Plain(telemetry_pb2_grpc.TelemetryServiceServicer):
        async def Stream(self, request_iterator: Any, context: Any) -> Any:
            async for batch in request_iterator:
                yield telemetry_pb2.StreamReply(ack=telemetry_pb2.Ack(batch_id=batch.batch_id, frames=len(batch.seq)))

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
        telemetry_pb2_grpc.add_TelemetryServiceServicer_to_server(Plain(), server)
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(f"READY {bound}", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


def serve_evtwin(port: int, backend_kind: str) -> None:
    if os.environ.get("BENCH_TRACE_AFTER_S"):
        import faulthandler
        faulthandler.dump_traceback_later(float(os.environ["BENCH_TRACE_AFTER_S"]), repeat=True)
    from configs.settings import load_config
    from serving.app import open_runtime
    from serving.server import serve_until_signal, start_front_door

    overrides = ["twins.twins_per_actor=1000", "dataset.window_minutes=60", "twins.checkpoint_uri=runs/bench-grpc/ckpt",
                 "serving.max_concurrent_streams=30000", "serving.max_batch_frames=20000"]
    config = load_config(overrides=overrides)
    if backend_kind == "ray":
        import shutil

        import ray
        shutil.rmtree("runs/bench-grpc/ckpt", ignore_errors=True)
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, namespace="evtwin",
                 log_to_driver=False)
    runtime = open_runtime(config, backend_kind, None, None, expected_vehicles=2000)

    async def main() -> int:
        door = await start_front_door(runtime.backend, config.serving, secret=SECRET, host="127.0.0.1", port=port)
        print(f"READY {door.port}", flush=True)
        return await serve_until_signal(door)

    try:
        asyncio.run(main())
    finally:
        runtime.shutdown()


def serve_http(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI, HTTPException

    from configs.schema import SCHEMA
    from serving.backend import MemoryFleet
    from serving.codec import BatchLimits, decode_batch, encode_columns

    app = FastAPI()
    fleet = MemoryFleet()
    limits = BatchLimits(max_batch_frames=20_000, max_future_skew_ms=10**12)

    @app.post("/v1/frames")
    async def ingest(request: Request) -> dict[str, Any]:
        body = await request.json()
        frames = body["frames"]
        try:
            columns = {"vehicle_id": np.array([f["vehicle_id"] for f in frames]),
                       "ts": np.array([f["ts"] for f in frames], dtype=np.int64),
                       "seq": np.array([f["seq"] for f in frames], dtype=np.int64)}
            for name in SCHEMA.sensor_names:
                columns[name] = np.array([f.get(name, np.nan) for f in frames], dtype=np.float64)
            batch = decode_batch(encode_columns(columns, body.get("batch_id", 0)), limits, int(time.time() * 1000))
        except Exception as error:
            raise HTTPException(400, str(error)) from None
        result = await fleet.ingest(batch)
        return {"batch_id": body.get("batch_id", 0), "acks": result.acks, "frames": batch.num_rows}

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    print(f"READY {port}", flush=True)
    server.run()


# ------------------------------------------------------------------------------------------ clients
def start_server(kind: str, port: int = 0) -> tuple[subprocess.Popen, int]:
    if kind == "http" and port == 0:
        import socket
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_grpc_{kind}.log", "w")
    process = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        line = process.stdout.readline()
        if line.startswith("READY"):
            port = int(line.split()[1])
            if kind == "http":
                time.sleep(1.5)  # uvicorn binds after printing
            return process, port
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"{kind} server did not start")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def rss_mb(pid: int) -> float:
    total = 0
    for candidate in [pid] + _children(pid):
        try:
            for line in Path(f"/proc/{candidate}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, q)) if samples else float("nan")


async def grpc_load(port: int, streams: int, vehicles_per_stream: int, frames_per_vehicle: int, seconds: float,
                    fault_every: int, token: str | None, prefix: str = "B") -> dict[str, Any]:
    """``streams`` concurrent bidi streams, each a gateway of ``vehicles_per_stream`` vehicles, pre-encoded
    batches sent with at most 4 unacknowledged per stream, for ``seconds``."""
    import grpc

    from protos.evtwin.v1 import telemetry_pb2
    from serving.codec import encode_columns

    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    acked = 0
    ack_latency: list[float] = []
    alert_latency: list[float] = []
    # Pre-encode: the client must not be what is measured (and shares these 2 cores with the server).
    rounds = 200
    payloads: list[list[bytes]] = []
    for s in range(streams):
        vehicles = [f"{prefix}{s:03d}-{v:03d}" for v in range(vehicles_per_stream)]
        payloads.append([encode_columns(batch_columns(vehicles, frames_per_vehicle, 1 + r * frames_per_vehicle,
                                                      fault_every if r % 10 == 5 else 0), batch_id=r + 1).SerializeToString()
                         for r in range(rounds)])
    frames_per_batch = vehicles_per_stream * frames_per_vehicle
    deadline = time.perf_counter() + seconds

    async def one(s: int, channel: Any) -> None:
        nonlocal acked
        call = channel.stream_stream("/evtwin.v1.TelemetryService/Stream", request_serializer=lambda b: b,
                                     response_deserializer=telemetry_pb2.StreamReply.FromString)(metadata=metadata)
        sent_at: dict[int, float] = {}
        window = asyncio.Semaphore(4)

        failure: list[BaseException] = []

        async def reader() -> None:
            try:
                await read_replies()
            except BaseException as error:  # unblock the writer, then report
                failure.append(error)
                for _ in range(8):
                    window.release()
                raise

        async def read_replies() -> None:
            nonlocal acked
            async for reply in call:
                now = time.perf_counter()
                if reply.HasField("ack"):
                    acked += reply.ack.frames
                    ack_latency.append(now - sent_at.pop(reply.ack.batch_id))
                    window.release()
                elif reply.alert.seq and (reply.alert.seq - 1) % frames_per_vehicle == 0:
                    batch_id = (reply.alert.seq - 1) // frames_per_vehicle + 1
                    if batch_id in alert_sent:
                        alert_latency.append(now - alert_sent[batch_id])

        alert_sent: dict[int, float] = {}
        task = asyncio.create_task(reader())
        r = 0
        while time.perf_counter() < deadline and r < rounds:
            await window.acquire()
            if failure:
                raise failure[0]
            sent_at[r + 1] = alert_sent[r + 1] = time.perf_counter()
            await call.write(payloads[s][r])
            r += 1
        await call.done_writing()
        await task

    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
                for _ in range(min(streams, 4))]
    started = time.perf_counter()
    await asyncio.gather(*(one(s, channels[s % len(channels)]) for s in range(streams)))
    elapsed = time.perf_counter() - started
    for channel in channels:
        await channel.close()
    return {"frames": acked, "seconds": elapsed, "frames_per_s": acked / elapsed, "batch_frames": frames_per_batch,
            "ack_p50_ms": percentile_ms(ack_latency, 50), "ack_p99_ms": percentile_ms(ack_latency, 99),
            "alert_p50_ms": percentile_ms(alert_latency, 50), "alert_p99_ms": percentile_ms(alert_latency, 99)}


async def http_load(port: int, clients: int, frames_per_request: int, seconds: float) -> dict[str, Any]:
    import aiohttp

    from configs.schema import SCHEMA

    acked = 0
    latency: list[float] = []

    def body(c: int, r: int) -> bytes:
        columns = batch_columns([f"H{c:03d}"], frames_per_request, 1 + r * frames_per_request)
        frames = [{"vehicle_id": str(columns["vehicle_id"][i]), "ts": int(columns["ts"][i]), "seq": int(columns["seq"][i]),
                   **{name: float(columns[name][i]) for name in SCHEMA.sensor_names}} for i in range(frames_per_request)]
        return json.dumps({"batch_id": r + 1, "frames": frames}).encode()

    bodies = [[body(c, r) for r in range(60)] for c in range(clients)]
    deadline = time.perf_counter() + seconds

    async def one(c: int, session: Any) -> None:
        nonlocal acked
        r = 0
        while time.perf_counter() < deadline and r < len(bodies[c]):
            t0 = time.perf_counter()
            async with session.post(f"http://127.0.0.1:{port}/v1/frames", data=bodies[c][r],
                                    headers={"content-type": "application/json"}) as response:
                reply = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {reply}")
            latency.append(time.perf_counter() - t0)
            acked += reply["frames"]
            r += 1

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(c, session) for c in range(clients)))
    elapsed = time.perf_counter() - started
    return {"frames": acked, "seconds": elapsed, "frames_per_s": acked / elapsed, "batch_frames": frames_per_request,
            "ack_p50_ms": percentile_ms(latency, 50), "ack_p99_ms": percentile_ms(latency, 99)}


async def idle_streams(port: int, count: int, pid: int) -> dict[str, Any]:
    """``count`` vehicle streams, each with its own token, each acks one batch and then stays open."""
    import grpc

    from protos.evtwin.v1 import telemetry_pb2, telemetry_pb2_grpc
    from serving.auth import Claims, issue_token
    from serving.codec import encode_columns

    rss_before = rss_mb(pid)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(max(1, count // int(os.environ.get("BENCH_STREAMS_PER_CHANNEL", "1000"))))]
    opened = asyncio.Event()
    ready = 0
    release = asyncio.Event()

    async def one(i: int) -> None:
        nonlocal ready
        vehicle = f"I{i:05d}"
        stub = telemetry_pb2_grpc.TelemetryServiceStub(channels[i % len(channels)])
        call = stub.Stream(metadata=(("authorization", f"Bearer {issue_token(SECRET, Claims(role='vehicle', sub=vehicle))}"),))
        await call.write(encode_columns(batch_columns([vehicle], 2, 1), batch_id=1))
        reply = await call.read()
        assert reply.ack.acks[0].seq == 2
        ready += 1
        if ready == count:
            opened.set()
        await release.wait()
        await call.done_writing()
        while await call.read() is not grpc.aio.EOF:
            pass

    started = time.perf_counter()
    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    await asyncio.wait_for(opened.wait(), timeout=600)
    open_s = time.perf_counter() - started
    await asyncio.sleep(2)
    rss_open = rss_mb(pid)
    release.set()
    await asyncio.gather(*tasks)
    for channel in channels:
        await channel.close()
    return {"streams": count, "open_s": open_s, "server_rss_mb_before": rss_before, "server_rss_mb_open": rss_open,
            "rss_kb_per_stream": (rss_open - rss_before) * 1024 / count}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=("plain", "memory", "ray", "http"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--parts", default="plain,memory,twins,http,idle")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--vehicles-per-stream", type=int, default=10)
    parser.add_argument("--frames-per-vehicle", type=int, default=100, help="frames per vehicle per batch")
    parser.add_argument("--http-frames", type=int, default=100, help="frames per HTTP request")
    parser.add_argument("--idle-streams", type=int, default=10_000)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if args.serve == "plain":
        serve_plain(args.port)
        return 0
    if args.serve in ("memory", "ray"):
        serve_evtwin(args.port, args.serve)
        return 0
    if args.serve == "http":
        serve_http(args.port)
        return 0

    from serving.auth import Claims, issue_token

    operator = issue_token(SECRET, Claims(role="gateway", sub="bench", vehicles="*"))
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "args": vars(args)}
    parts = args.parts.split(",")
    load = dict(streams=args.streams, vehicles_per_stream=args.vehicles_per_stream,
                frames_per_vehicle=args.frames_per_vehicle, seconds=args.seconds)
    for part, kind in (("plain", "plain"), ("memory", "memory"), ("twins", "ray")):
        if part not in parts:
            continue
        process, port = start_server(kind)
        try:
            asyncio.run(grpc_load(port, **{**load, "seconds": 2.0}, fault_every=0, token=operator, prefix="W"))  # warm-up
            results[part] = asyncio.run(grpc_load(port, **load, fault_every=args.frames_per_vehicle,
                                                  token=None if kind == "plain" else operator))
            if kind == "memory" and "idle" in parts:
                results["idle"] = asyncio.run(idle_streams(port, args.idle_streams, process.pid))
        finally:
            stop_server(process)
        print(part, json.dumps(results[part]), flush=True)
    if "http" in parts:
        process, port = start_server("http")
        try:
            asyncio.run(http_load(port, args.streams, args.http_frames, 2.0))
            results["http"] = asyncio.run(http_load(port, args.streams, args.http_frames, args.seconds))
        finally:
            stop_server(process)
        print("http", json.dumps(results["http"]), flush=True)
    if "idle" in results:
        print("idle", json.dumps(results["idle"]), flush=True)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def print_table(results: dict[str, Any]) -> None:
    print()
    print(f"| ingest path | frames/s | frame-to-ack p50 / p99 (ms) | frame-to-alert p50 / p99 (ms) |")
    print("|---|---:|---:|---:|")
    names = {"plain": "plain grpcio, ack only (ceiling)", "memory": "evtwin front door, MemoryFleet",
             "twins": "evtwin front door -> twins on Ray (end to end)", "http": "HTTP/JSON (FastAPI + uvicorn)"}
    for key, name in names.items():
        if key in results:
            r = results[key]
            alert = (f"{r['alert_p50_ms']:.1f} / {r['alert_p99_ms']:.1f}" if "alert_p50_ms" in r and r["alert_p50_ms"] == r["alert_p50_ms"]
                     else "-")
            print(f"| {name} | {r['frames_per_s']:,.0f} | {r['ack_p50_ms']:.1f} / {r['ack_p99_ms']:.1f} | {alert} |")
    if "idle" in results:
        r = results["idle"]
        print(f"\n{r['streams']:,} vehicle streams open (each authenticated and acked) in {r['open_s']:.1f} s; "
              f"server RSS {r['server_rss_mb_before']:.0f} -> {r['server_rss_mb_open']:.0f} MB "
              f"({r['rss_kb_per_stream']:.1f} KB per stream)")


if __name__ == "__main__":
    sys.exit(main())
