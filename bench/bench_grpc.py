"""Benchmark the gRPC front door, beside a plain grpcio ceiling and an HTTP/JSON ingest, in one run.

    .venv/bin/python bench/bench_grpc.py                     # all parts, ~12 minutes on 2 cores
    .venv/bin/python bench/bench_grpc.py --parts plain,memory,http --seconds 5

Parts (each server runs in its own process; the client is this process):
- plain:  a bare grpc.aio server that parses each FrameBatch and acks it (the ceiling on this machine)
- memory: the evtwin front door (auth, validation, decode to Arrow) over the ingest-only MemoryFleet
- twins:  the evtwin front door over twins on Ray (TwinFleet, sharded hosts): client -> gRPC -> twins -> acks
- http:   HTTP/JSON ingest (FastAPI + uvicorn), rows as JSON objects and as JSON columns, over MemoryFleet:
          the same batches, the same number in flight and the same validation as the memory part
- http-twins: the same HTTP/JSON ingest over twins on Ray, to face the twins part
- idle:   N vehicle streams held open from several client processes (each with its own vehicle token, its
          first batch acked by its twin), and a few active streams measured without and with them open

Figures: frames/s (acked), p50/p99 frame-to-ack (send of a batch -> its Ack) and frame-to-alert (send of a
batch carrying an impossible reading -> the sensor_fault alert on the stream).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
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
# Stream limits stay at their defaults: the idle part shows that the shipped config admits 10,000 streams.
BENCH_OVERRIDES = ["twins.twins_per_actor=1000", "dataset.window_minutes=60", "twins.checkpoint_uri=runs/bench-grpc/ckpt",
                   "serving.max_batch_frames=20000"]


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


def _bench_runtime(backend_kind: str) -> Any:
    """The backend every bench server stands on (memory, local twins, or twins on Ray), same config for all."""
    from configs.settings import load_config
    from serving.app import open_runtime

    config = load_config(overrides=BENCH_OVERRIDES)
    if backend_kind in ("ray", "local"):
        import shutil

        shutil.rmtree("runs/bench-grpc/ckpt", ignore_errors=True)
    if backend_kind == "ray":
        import ray
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, namespace="evtwin",
                 log_to_driver=False)
    return open_runtime(config, backend_kind, None, None, expected_vehicles=2000)


def serve_evtwin(port: int, backend_kind: str) -> None:
    from configs.settings import load_config
    from serving.server import serve_until_signal, start_front_door

    config = load_config(overrides=BENCH_OVERRIDES)
    runtime = _bench_runtime(backend_kind)

    async def main() -> int:
        door = await start_front_door(runtime.backend, config.serving, secret=SECRET, host="127.0.0.1", port=port)
        print(f"READY {door.port}", flush=True)
        return await serve_until_signal(door)

    try:
        asyncio.run(main())
    finally:
        runtime.shutdown()


def serve_http(port: int, backend_kind: str) -> None:
    """HTTP/JSON ingest as the original brief planned it: FastAPI + uvicorn (uvloop, httptools), stdlib JSON.

    ``POST /v1/frames`` takes ``{"batch_id", "frames": [{"vehicle_id", "ts", "seq", <sensor>: value, ...}]}``
    (rows as objects, the usual REST shape) or ``{"batch_id", "columns": {"vehicle_id": [...], ...}}`` (the
    JSON twin of our packed columns); both are validated by ``serving.codec.decode_columns``, the same checks
    the gRPC door runs, and go to the same backend as the gRPC door it is compared with.
    """
    import uvicorn
    from fastapi import FastAPI, HTTPException

    from configs.schema import SCHEMA
    from serving.codec import BatchLimits, WireError, decode_columns

    app = FastAPI()
    runtime = _bench_runtime(backend_kind)
    limits = BatchLimits(max_batch_frames=20_000, max_future_skew_ms=10**12)

    @app.post("/v1/frames")
    async def ingest(request: Request) -> dict[str, Any]:
        body = await request.json()
        try:
            if "columns" in body:
                columns = body["columns"]
            else:
                frames = body["frames"]
                columns = {"vehicle_id": [f["vehicle_id"] for f in frames], "ts": [f["ts"] for f in frames],
                           "seq": [f["seq"] for f in frames]}
                for name in SCHEMA.sensor_names:
                    columns[name] = [f.get(name, math.nan) for f in frames]
            batch = decode_columns(columns, body.get("batch_id", 0), limits, int(time.time() * 1000))
        except (WireError, KeyError, TypeError) as error:
            raise HTTPException(400, str(error)) from None
        result = await runtime.backend.ingest(batch)
        return {"batch_id": batch.batch_id, "acks": result.acks, "frames": batch.num_rows}

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    print(f"READY {port}", flush=True)
    try:
        server.run()
    finally:
        runtime.shutdown()


# ------------------------------------------------------------------------------------------ clients
def start_server(kind: str, port: int = 0) -> tuple[subprocess.Popen, int]:
    if kind.startswith("http") and port == 0:
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
            if kind.startswith("http"):
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


async def http_load(port: int, streams: int, vehicles_per_stream: int, frames_per_vehicle: int, seconds: float,
                    shape: str, prefix: str = "H", window: int = 4, frame_budget: int = 1_000_000) -> dict[str, Any]:
    """The HTTP twin of ``grpc_load``: the same batches (``vehicles_per_stream`` x ``frames_per_vehicle`` frames)
    and the same number in flight (``streams`` x ``window``; HTTP/1.1 has one request per connection at a
    time, so each in-flight slot is its own connection and its own vehicles). ``shape``: "rows" or "columns"."""
    import aiohttp

    from configs.schema import SCHEMA

    acked = 0
    latency: list[float] = []
    workers = streams * window
    frames_per_request = vehicles_per_stream * frames_per_vehicle
    rounds = max(3, min(60, frame_budget // (workers * frames_per_request)))

    def body(w: int, r: int) -> bytes:
        vehicles = [f"{prefix}{w:03d}-{v:03d}" for v in range(vehicles_per_stream)]
        columns = batch_columns(vehicles, frames_per_vehicle, 1 + r * frames_per_vehicle)
        if shape == "columns":
            return json.dumps({"batch_id": r + 1,
                               "columns": {name: values.tolist() for name, values in columns.items()}}).encode()
        as_lists = {name: values.tolist() for name, values in columns.items()}
        names = ["vehicle_id", "ts", "seq", *SCHEMA.sensor_names]
        frames = [{name: as_lists[name][i] for name in names} for i in range(frames_per_request)]
        return json.dumps({"batch_id": r + 1, "frames": frames}).encode()

    bodies = [[body(w, r) for r in range(rounds)] for w in range(workers)]
    deadline = time.perf_counter() + seconds

    async def one(w: int, session: Any) -> None:
        nonlocal acked
        for payload in bodies[w]:
            if time.perf_counter() >= deadline:
                return
            t0 = time.perf_counter()
            async with session.post(f"http://127.0.0.1:{port}/v1/frames", data=payload,
                                    headers={"content-type": "application/json"}) as response:
                reply = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {reply}")
            latency.append(time.perf_counter() - t0)
            acked += reply["frames"]

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=workers)) as session:
        await asyncio.gather(*(one(w, session) for w in range(workers)))
    elapsed = time.perf_counter() - started
    return {"frames": acked, "seconds": elapsed, "frames_per_s": acked / elapsed, "batch_frames": frames_per_request,
            "shape": shape, "ack_p50_ms": percentile_ms(latency, 50), "ack_p99_ms": percentile_ms(latency, 99)}


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to the hard limit (each channel is a socket); returns it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def idle_client(port: int, first: int, count: int, per_channel: int) -> int:
    """One client process of the idle part (run as ``--idle-client FIRST``).

    Opens ``count`` vehicle streams (vehicles ``I{first}``...), ``per_channel`` per channel (HTTP/2 connection),
    each with its own vehicle token; each sends one 2-frame batch and waits for its ack. At most
    ``BENCH_IDLE_OPENING`` (default 100) are opening at once, as a fleet reconnecting with jitter would.
    Prints ``READY {json}`` (opened, seconds, errors by status), holds the streams open until a line (or
    EOF) on stdin, closes them cleanly and prints ``CLOSED {json}``.
    """
    import grpc

    from protos.evtwin.v1 import telemetry_pb2_grpc
    from serving.auth import Claims, issue_token
    from serving.codec import encode_columns

    raise_fd_limit()
    # Each channel its own HTTP/2 connection (channels with equal options otherwise share one).
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(max(1, -(-count // per_channel)))]
    opening = asyncio.Semaphore(int(os.environ.get("BENCH_IDLE_OPENING", "100")))
    errors: dict[str, int] = {}

    async def open_one(i: int) -> Any:
        vehicle = f"I{first + i:05d}"
        token = issue_token(SECRET, Claims(role="vehicle", sub=vehicle))
        stub = telemetry_pb2_grpc.TelemetryServiceStub(channels[i % len(channels)])
        async with opening:
            call = stub.Stream(metadata=(("authorization", f"Bearer {token}"),))
            try:
                await call.write(encode_columns(batch_columns([vehicle], 2, 1), batch_id=1))
                reply = await call.read()
            except grpc.aio.AioRpcError as error:
                key = f"{error.code().name}: {error.details()}"
                errors[key] = errors.get(key, 0) + 1
                return None
            acks = {} if reply is grpc.aio.EOF else {a.vehicle_id: a.seq for a in reply.ack.acks}
            if acks != {vehicle: 2}:
                errors[f"unexpected reply {reply!r}"[:200]] = errors.get(f"unexpected reply {reply!r}"[:200], 0) + 1
                return None
            return call

    async def close_one(call: Any) -> bool:
        await call.done_writing()
        while await call.read() is not grpc.aio.EOF:
            pass
        return await call.code() == grpc.StatusCode.OK

    started = time.perf_counter()
    calls = [c for c in await asyncio.gather(*(open_one(i) for i in range(count))) if c is not None]
    print("READY", json.dumps({"opened": len(calls), "seconds": time.perf_counter() - started, "errors": errors}),
          flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    closed = await asyncio.gather(*(close_one(c) for c in calls), return_exceptions=True)
    for channel in channels:
        await channel.close()
    print("CLOSED", json.dumps({"clean": sum(c is True for c in closed), "streams": len(calls)}), flush=True)
    return 0


def idle_part(args: argparse.Namespace, gateway_token: str) -> dict[str, Any]:
    """``--idle-streams`` vehicle streams held open from ``--idle-processes`` client processes, and a few active
    gateway streams measured before they open and while they are open."""
    raise_fd_limit()
    process, port = start_server(args.idle_backend)
    per_process = args.idle_streams // args.idle_processes
    active = dict(streams=args.idle_active_streams, vehicles_per_stream=10, frames_per_vehicle=100,
                  seconds=args.seconds, fault_every=0, token=gateway_token)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    clients: list[subprocess.Popen] = []
    try:
        asyncio.run(grpc_load(port, **{**active, "seconds": 2.0}, prefix="W"))  # warm-up
        without = asyncio.run(grpc_load(port, **active, prefix="A"))
        rss_before = rss_mb(process.pid)
        started = time.perf_counter()
        clients = [subprocess.Popen([sys.executable, __file__, "--idle-client", str(k * per_process), "--port", str(port),
                                     "--idle-streams", str(args.idle_streams), "--idle-processes", str(args.idle_processes),
                                     "--idle-streams-per-channel", str(args.idle_streams_per_channel)],
                                    cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                   for k in range(args.idle_processes)]
        ready = []
        for client in clients:
            line = client.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"idle client {client.pid} failed: {line!r}")
            ready.append(json.loads(line.split(" ", 1)[1]))
        open_s = time.perf_counter() - started
        time.sleep(2)
        rss_open = rss_mb(process.pid)
        during = asyncio.run(grpc_load(port, **active, prefix="C"))
        rss_during = rss_mb(process.pid)
        for client in clients:
            client.stdin.write("CLOSE\n")
            client.stdin.flush()
        closed = [json.loads(client.stdout.readline().split(" ", 1)[1]) for client in clients]
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
        stop_server(process)
    opened = sum(r["opened"] for r in ready)
    errors: dict[str, int] = {}
    for r in ready:
        for key, n in r["errors"].items():
            errors[key] = errors.get(key, 0) + n
    keep = ("frames_per_s", "ack_p50_ms", "ack_p99_ms", "batch_frames")
    return {"backend": args.idle_backend, "streams": args.idle_streams, "opened": opened, "errors": errors,
            "processes": args.idle_processes, "streams_per_channel": args.idle_streams_per_channel,
            "open_s": open_s, "server_rss_mb_before": rss_before, "server_rss_mb_open": rss_open,
            "server_rss_mb_during_load": rss_during,
            "rss_kb_per_stream": (rss_open - rss_before) * 1024 / max(opened, 1),
            "closed_clean": sum(c["clean"] for c in closed),
            "active_without": {k: without[k] for k in keep}, "active_with_idle_open": {k: during[k] for k in keep},
            "active_streams": args.idle_active_streams}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=("plain", "memory", "ray", "local", "http", "http-ray"), help=argparse.SUPPRESS)
    parser.add_argument("--idle-client", type=int, default=None, help=argparse.SUPPRESS)  # first vehicle number
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--parts", default="plain,memory,twins,http,http-twins,idle")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--vehicles-per-stream", type=int, default=10)
    parser.add_argument("--frames-per-vehicle", type=int, default=100, help="frames per vehicle per batch")
    parser.add_argument("--idle-streams", type=int, default=10_000, help="vehicle streams held open (idle part)")
    parser.add_argument("--idle-processes", type=int, default=10, help="client processes sharing the idle streams")
    parser.add_argument("--idle-streams-per-channel", type=int, default=100,
                        help="idle streams multiplexed on one channel (HTTP/2 connection)")
    parser.add_argument("--idle-backend", choices=("local", "ray", "memory"), default="local",
                        help="twins behind the idle part: local = real twins in the server process (default)")
    parser.add_argument("--idle-active-streams", type=int, default=4,
                        help="streams that keep streaming while the idle ones are open")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if args.serve == "plain":
        serve_plain(args.port)
        return 0
    if args.idle_client is not None:
        return asyncio.run(idle_client(args.port, args.idle_client, args.idle_streams // args.idle_processes,
                                       args.idle_streams_per_channel))
    if args.serve in ("memory", "ray", "local"):
        serve_evtwin(args.port, args.serve)
        return 0
    if args.serve in ("http", "http-ray"):
        serve_http(args.port, "memory" if args.serve == "http" else "ray")
        return 0

    from serving.auth import Claims, issue_token

    operator = issue_token(SECRET, Claims(role="gateway", sub="bench", vehicles="*"), ttl_s=86_400, allow_wildcard=True)
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
        finally:
            stop_server(process)
        print(part, json.dumps(results[part]), flush=True)
    # HTTP/JSON: the same batches, the same number in flight, the same backend as the gRPC row it faces.
    for part, kind in (("http", "http"), ("http-twins", "http-ray")):
        if part not in parts:
            continue
        process, port = start_server(kind)
        try:
            for shape in ("rows", "columns"):
                asyncio.run(http_load(port, **{**load, "seconds": 2.0}, shape=shape, prefix="W" + shape[0],
                                      frame_budget=100_000))  # warm-up
                results[f"{part}-{shape}"] = asyncio.run(http_load(port, **load, shape=shape, prefix="H" + shape[0]))
                print(f"{part}-{shape}", json.dumps(results[f"{part}-{shape}"]), flush=True)
        finally:
            stop_server(process)
    if "idle" in parts:
        results["idle"] = idle_part(args, operator)
        print("idle", json.dumps(results["idle"]), flush=True)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def print_table(results: dict[str, Any]) -> None:
    print()
    print("| ingest path | frames/s | frame-to-ack p50 / p99 (ms) | frame-to-alert p50 / p99 (ms) |")
    print("|---|---:|---:|---:|")
    names = {"plain": "plain grpcio, ack only (ceiling)", "memory": "evtwin front door, MemoryFleet",
             "http-rows": "HTTP/JSON rows, MemoryFleet", "http-columns": "HTTP/JSON columns, MemoryFleet",
             "twins": "evtwin front door -> twins on Ray (end to end)",
             "http-twins-rows": "HTTP/JSON rows -> twins on Ray", "http-twins-columns": "HTTP/JSON columns -> twins on Ray"}
    for key, name in names.items():
        if key in results:
            r = results[key]
            alert = (f"{r['alert_p50_ms']:.1f} / {r['alert_p99_ms']:.1f}"
                     if "alert_p50_ms" in r and r["alert_p50_ms"] == r["alert_p50_ms"]
                     else "-")
            print(f"| {name} | {r['frames_per_s']:,.0f} | {r['ack_p50_ms']:.1f} / {r['ack_p99_ms']:.1f} | {alert} |")
    for grpc_key, http_key in (("memory", "http"), ("twins", "http-twins")):
        for shape in ("rows", "columns"):
            if grpc_key in results and f"{http_key}-{shape}" in results:
                ratio = results[grpc_key]["frames_per_s"] / results[f"{http_key}-{shape}"]["frames_per_s"]
                print(f"gRPC / HTTP-JSON {shape} ({grpc_key}, {results[grpc_key]['batch_frames']}-frame batches both): "
                      f"{ratio:.1f}x")
    if "idle" in results:
        r = results["idle"]
        twin = {"local": "twins in the server process", "ray": "twins on Ray", "memory": "ingest-only MemoryFleet"}
        print(f"\n{r['opened']:,} of {r['streams']:,} vehicle streams open at once ({twin[r['backend']]}; each with its own "
              f"token, its first batch acked) from {r['processes']} client processes, "
              f"{r['streams_per_channel']} streams per connection, in {r['open_s']:.1f} s; refused: {r['errors'] or 'none'}; "
              f"server RSS {r['server_rss_mb_before']:.0f} -> {r['server_rss_mb_open']:.0f} MB "
              f"({r['rss_kb_per_stream']:.1f} KB per stream); closed cleanly: {r['closed_clean']:,}")
        for label, key in (("without them", "active_without"), ("while they are open", "active_with_idle_open")):
            a = r[key]
            print(f"{r['active_streams']} active streams ({a['batch_frames']}-frame batches) {label}: "
                  f"{a['frames_per_s']:,.0f} frames/s, ack p50 / p99 {a['ack_p50_ms']:.1f} / {a['ack_p99_ms']:.1f} ms")

if __name__ == "__main__":
    sys.exit(main())
