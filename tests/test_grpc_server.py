"""A real gRPC server on 127.0.0.1 (ingest-only MemoryFleet backend): acks, resume, hostile input, auth, health.

The twins behind the server are exercised in tests/test_grpc_twins.py; here the front door alone.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs.schema import SCHEMA
from configs.settings import ServingConfig
from protos.evtwin.v1 import alerts_pb2, alerts_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc, twin_pb2, twin_pb2_grpc
from serving.auth import Claims, issue_token
from serving.backend import MemoryFleet
from serving.client import Client
from serving.codec import encode_columns
from serving.server import start_front_door

pytestmark = pytest.mark.integration

SECRET = b"t" * 32
NOW_MS = int(time.time() * 1000)
OPERATOR = issue_token(SECRET, Claims(role="operator", sub="ops", write=True))
CFG = ServingConfig(max_message_bytes=256 * 1024, max_batch_frames=2000, max_frames_in_flight_per_stream=4000,
                    drain_timeout_s=2.0)


def token_for(vehicle: str) -> str:
    return issue_token(SECRET, Claims(role="vehicle", sub=vehicle))


def md(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


class ServerThread:
    """The asyncio server on its own loop in a thread, so tests can use plain blocking clients."""

    def __init__(self, backend: Any, cfg: ServingConfig = CFG, port: int = 0, **kwargs: Any) -> None:
        self.backend = backend
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.door = self.call(start_front_door(backend, cfg, secret=SECRET, host="127.0.0.1", port=port, **kwargs))
        self.target = f"127.0.0.1:{self.door.port}"

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def stop(self) -> None:
        self.call(self.door.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    running = ServerThread(MemoryFleet())
    yield running
    running.stop()


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target, options=[("grpc.max_send_message_length", 8 * 1024 * 1024)]) as ch:
        yield ch


def fleet_columns(vehicles: list[str], frames_each: int, start_seq: int = 1) -> dict[str, np.ndarray]:
    n = len(vehicles) * frames_each
    vehicle = np.repeat(np.array(vehicles), frames_each)
    seq = np.tile(np.arange(start_seq, start_seq + frames_each), len(vehicles))
    columns = {"vehicle_id": vehicle, "seq": seq, "ts": NOW_MS - 86_400_000 + seq * 10_000}
    for spec in SCHEMA.fields:
        columns[spec.name] = np.full(n, (spec.min + spec.max) / 2 if spec.dtype != "int8" else 1.0)
    return columns


def batches_of(columns: dict[str, np.ndarray], size: int) -> list[dict[str, np.ndarray]]:
    order = np.lexsort((columns["vehicle_id"], columns["seq"]))
    return [{k: v[order[i:i + size]] for k, v in columns.items()} for i in range(0, len(order), size)]


def stream_sync(channel: grpc.Channel, messages: list[Any], token: str | None) -> list[telemetry_pb2.StreamReply]:
    stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
    return list(stub.Stream(iter(messages), metadata=md(token), timeout=30))


def test_every_frame_of_a_multiplexed_fleet_is_acknowledged_once(server: ServerThread, channel: grpc.Channel) -> None:
    vehicles = [f"ACK{i:03d}" for i in range(12)]
    batches = batches_of(fleet_columns(vehicles, 500), 1000)
    messages = [encode_columns(b, batch_id=i + 1) for i, b in enumerate(batches)]
    replies = stream_sync(channel, messages, OPERATOR)
    acks = [r.ack for r in replies if r.HasField("ack")]
    assert [a.batch_id for a in acks] == [m.batch_id for m in messages]  # one ack per batch, in order
    assert sum(a.frames for a in acks) == 12 * 500 and sum(a.duplicates for a in acks) == 0
    final = {}
    for ack in acks:
        for vehicle_ack in ack.acks:
            assert vehicle_ack.seq >= final.get(vehicle_ack.vehicle_id, 0)  # acks never go backwards
            final[vehicle_ack.vehicle_id] = vehicle_ack.seq
    assert final == {v: 500 for v in vehicles}
    assert all(server.call(server.backend.summary(v))["frames_applied"] == 500 for v in vehicles)


def test_concurrent_per_vehicle_streams_each_write_their_own_twin(server: ServerThread) -> None:
    async def one(vehicle: str) -> int:
        async with Client(server.target, token_for(vehicle)) as client:
            stats = await client.stream(batches_of(fleet_columns([vehicle], 3000), 500))
        return stats.frames_acked

    async def all_of_them() -> list[int]:
        return await asyncio.gather(*(one(f"PAR{i}") for i in range(8)))

    assert asyncio.run(all_of_them()) == [3000] * 8


class FlakyBackend(MemoryFleet):
    """Fails chosen ingest calls, as a dying twin host would: the stream breaks and the client resumes."""

    def __init__(self, fail_calls: set[int]) -> None:
        super().__init__()
        self.fail_calls = fail_calls
        self.calls = 0

    async def ingest(self, batch: Any) -> Any:
        self.calls += 1
        if self.calls in self.fail_calls:
            raise ConnectionError("host actor died")
        return await super().ingest(batch)


def test_a_broken_stream_resumes_from_the_last_ack_without_loss_or_doubling() -> None:
    backend = FlakyBackend(fail_calls={3, 8, 9})
    running = ServerThread(backend)
    try:
        vehicles = ["RES1", "RES2", "RES3"]
        batches = batches_of(fleet_columns(vehicles, 2000), 600)

        async def go() -> Any:
            async with Client(running.target, OPERATOR) as client:
                return await client.stream(batches, max_unacked_frames=1800)

        stats = asyncio.run(go())
        assert stats.reconnects == 3
        assert stats.acked_seq == {v: 2000 for v in vehicles}
        assert stats.frames_acked == 6000
        for vehicle in vehicles:
            summary = running.call(backend.summary(vehicle))
            assert summary["frames_applied"] == 2000  # each frame applied exactly once
    finally:
        running.stop()


def test_a_server_restart_mid_stream_is_survived() -> None:
    backend = MemoryFleet()
    first = ServerThread(backend)
    port = first.door.port
    vehicles = ["RST1", "RST2"]
    batches = batches_of(fleet_columns(vehicles, 3000), 200)
    holder: dict[str, Any] = {}

    async def source() -> Any:
        for i, batch in enumerate(batches):
            if i == 10:  # the server goes away mid-stream and comes back on the same port
                await asyncio.to_thread(first.stop)
                holder["second"] = await asyncio.to_thread(ServerThread, backend, CFG, port)
            yield batch

    async def go() -> Any:
        async with Client(f"127.0.0.1:{port}", OPERATOR) as client:
            return await client.stream(source(), max_unacked_frames=400)

    stats = asyncio.run(go())
    holder["second"].stop()
    assert stats.reconnects >= 1
    assert stats.acked_seq == {v: 3000 for v in vehicles}
    assert all(asyncio.run(backend.summary(v))["frames_applied"] == 3000 for v in vehicles)


class SlowBackend(MemoryFleet):
    async def ingest(self, batch: Any) -> Any:
        await asyncio.sleep(0.02)
        return await super().ingest(batch)


def test_a_slow_twin_slows_its_client_instead_of_growing_server_memory() -> None:
    BATCHES = 200
    running = ServerThread(SlowBackend(), CFG.model_copy(update={"max_frames_in_flight_per_stream": 1000}))
    pulled = 0
    acked = 0
    lag: list[int] = []
    batch = fleet_columns(["SLOW"], 1000)

    def requests() -> Iterator[telemetry_pb2.FrameBatch]:
        nonlocal pulled
        for i in range(BATCHES):
            pulled += 1
            lag.append(pulled - acked)
            yield encode_columns({k: v if k != "seq" else v + i * 1000 for k, v in batch.items()}, batch_id=i + 1)

    try:
        with grpc.insecure_channel(running.target) as ch:
            for reply in telemetry_pb2_grpc.TelemetryServiceStub(ch).Stream(requests(), metadata=md(OPERATOR), timeout=60):
                acked += reply.HasField("ack")
        assert acked == BATCHES
        # The twins needed >= 4 s; the client could run ahead only by what the server's frame budget and the
        # HTTP/2 windows hold, a constant: the lag stops growing instead of reaching the whole stream.
        half = BATCHES // 2
        assert max(lag) < BATCHES // 3, max(lag)
        assert max(lag[half:]) <= max(lag[:half]) + 5, (max(lag[:half]), max(lag[half:]))
    finally:
        running.stop()


# ----------------------------------------------------------------------------------- hostile input
MUTATIONS: dict[str, tuple[str, str | None]] = {
    # name: (expected status, text the error message must contain)
    "nan_sensor": ("OK", None), "inf_sensor": ("OK", None), "out_of_range": ("OK", None),
    "missing_column": ("OK", None), "resend_duplicate": ("OK", None),
    "column_length": ("INVALID_ARGUMENT", "FIELD"), "seq_length": ("INVALID_ARGUMENT", "seq:"),
    "index_out_of_range": ("INVALID_ARGUMENT", "vehicle_index["), "empty_vehicle": ("INVALID_ARGUMENT", "vehicle_ids[0]=''"),
    "bad_vehicle": ("INVALID_ARGUMENT", "vehicle_ids[0]="), "far_future": ("INVALID_ARGUMENT", "in the future"),
    "before_2000": ("INVALID_ARGUMENT", "before 2000"), "seq_negative": ("INVALID_ARGUMENT", "seq is a counter"),
    "seq_regression": ("INVALID_ARGUMENT", "not above"), "too_many_frames": ("RESOURCE_EXHAUSTED", "frames, the limit"),
    "oversize": ("RESOURCE_EXHAUSTED", None), "garbage": ("INVALID_ARGUMENT", "not a valid FrameBatch"),
    "vehicle_switch": ("PERMISSION_DENIED", "may not write"), "no_token": ("UNAUTHENTICATED", "no credentials"),
    "forged_token": ("UNAUTHENTICATED", "signature"),
}


def hostile_case(name: str, data: st.DataObject, vehicle: str) -> tuple[list[Any], str | None, str]:
    """(messages, token, field name) for one mutation of a valid two-batch stream of ``vehicle``."""
    n = data.draw(st.integers(2, 50), label="rows")
    first = encode_columns(fleet_columns([vehicle], n), batch_id=1)
    second = encode_columns(fleet_columns([vehicle], n, start_seq=n + 1), batch_id=2)
    field = data.draw(st.sampled_from(SCHEMA.sensor_names), label="field")
    row = data.draw(st.integers(0, n - 1), label="row")
    token: str | None = token_for(vehicle)
    if name == "nan_sensor":
        getattr(second, field)[row] = float("nan") if field != "charger_state" else -1
    elif name == "inf_sensor":
        getattr(second, field)[row] = (data.draw(st.sampled_from([float("inf"), float("-inf")]))
                                       if field != "charger_state" else 99)
    elif name == "out_of_range":
        spec = SCHEMA.field(field)
        getattr(second, field)[row] = spec.max + data.draw(st.floats(1, 1e6)) if spec.dtype != "int8" else 4
    elif name == "missing_column":
        second.ClearField(field)
    elif name == "resend_duplicate":
        second = telemetry_pb2.FrameBatch()
        second.CopyFrom(first)
        second.batch_id = 2
    elif name == "column_length":
        getattr(second, field).pop()
    elif name == "seq_length":
        second.seq.append(10_000)
    elif name == "index_out_of_range":
        second.vehicle_index.extend([1] * n)
    elif name == "empty_vehicle":
        second.vehicle_ids[0] = ""
    elif name == "bad_vehicle":
        second.vehicle_ids[0] = data.draw(
            st.text(min_size=1, max_size=80).filter(lambda s: not re.match(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$", s)))
    elif name == "far_future":
        second.ts[row] = NOW_MS + data.draw(st.integers(3_600_000, 10**15))
    elif name == "before_2000":
        second.ts[row] = data.draw(st.integers(-(2**62), 946_684_799_999))
    elif name == "seq_negative":
        second.seq[row] = data.draw(st.integers(-(2**62), -1))
        for i in range(row):  # keep the batch otherwise ordered
            second.seq[i] = second.seq[row] - (row - i) if second.seq[row] - (row - i) < 0 else second.seq[i]
    elif name == "seq_regression":  # seq falls back without a later ts: not a counter restart
        second.seq[-1] = second.seq[0]
        second.ts[-1] = second.ts[0]
    elif name == "too_many_frames":
        second = encode_columns(fleet_columns([vehicle], CFG.max_batch_frames + 1, start_seq=n + 1), batch_id=2)
        second.ClearField("soc")
        for spec in SCHEMA.fields:
            second.ClearField(spec.name)
    elif name == "oversize":
        second = encode_columns(fleet_columns([vehicle], 1900, start_seq=n + 1), batch_id=2)
    elif name == "garbage":
        second = data.draw(st.binary(min_size=1, max_size=64).filter(_not_a_frame_batch))
    elif name == "vehicle_switch":
        second = encode_columns(fleet_columns([vehicle + "X"], n, start_seq=n + 1), batch_id=2)
    elif name == "no_token":
        token = None
    elif name == "forged_token":
        token = issue_token(b"x" * 32, Claims(role="operator", sub="mallory"))
    return [first, second], token, field


def _not_a_frame_batch(data: bytes) -> bool:
    try:
        telemetry_pb2.FrameBatch.FromString(data)
    except Exception:
        return True
    return False


def _raw_stream(channel: grpc.Channel) -> Any:
    def serialize(message: Any) -> bytes:
        return message if isinstance(message, bytes) else message.SerializeToString()

    return channel.stream_stream("/evtwin.v1.TelemetryService/Stream", request_serializer=serialize,
                                 response_deserializer=telemetry_pb2.StreamReply.FromString)


@settings(max_examples=1100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(MUTATIONS)), st.data())
def test_hostile_messages_get_the_right_status_and_never_hurt_the_server(channel: grpc.Channel, name: str,
                                                                         data: st.DataObject) -> None:
    expected, needle, = MUTATIONS[name]
    vehicle = f"H{data.draw(st.integers(0, 10**9))}"
    messages, token, field = hostile_case(name, data, vehicle)
    try:
        replies = list(_raw_stream(channel)(iter(messages), metadata=md(token), timeout=20))
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
        replies = []
    assert code.name == expected, f"{name}: {code.name} {details}"
    assert "Traceback" not in details and "File \"" not in details
    if needle:
        assert needle.replace("FIELD", field) in details, f"{name}: {details}"
    if expected == "OK":
        acks = [r.ack for r in replies if r.HasField("ack")]
        assert [a.batch_id for a in acks] == [1, 2]
        if name == "resend_duplicate":
            assert acks[1].duplicates == acks[1].frames
        if name in ("inf_sensor", "out_of_range"):
            assert acks[1].sensor_faults == 1


def test_the_server_is_healthy_after_the_hostile_run(channel: grpc.Channel) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="evtwin.v1.TelemetryService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# ----------------------------------------------------------------------------------- auth, queries, tools
def test_operator_rpcs_refuse_vehicle_tokens_and_missing_tokens(channel: grpc.Channel) -> None:
    stub = twin_pb2_grpc.TwinServiceStub(channel)
    with pytest.raises(grpc.RpcError) as denied:
        stub.ListTwins(twin_pb2.ListTwinsRequest(), metadata=md(token_for("V1")))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as anonymous:
        alerts_pb2_grpc.AlertServiceStub(channel).ListAlerts(alerts_pb2.AlertFilter())
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_twin_queries_answer_and_unknown_twins_are_not_found(channel: grpc.Channel) -> None:
    stream_sync(channel, [encode_columns(fleet_columns(["Q1"], 5), batch_id=1)], OPERATOR)
    stub = twin_pb2_grpc.TwinServiceStub(channel)
    summary = stub.GetTwin(twin_pb2.GetTwinRequest(vehicle_id="Q1"), metadata=md(OPERATOR))
    assert summary.applied_seq == 5 and summary.last_frame.seq == 5 and summary.last_frame.HasField("soc")
    assert "Q1" in stub.ListTwins(twin_pb2.ListTwinsRequest(prefix="Q"), metadata=md(OPERATOR)).vehicle_ids
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetTwin(twin_pb2.GetTwinRequest(vehicle_id="NOPE"), metadata=md(OPERATOR))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND and "NOPE" in missing.value.details()
    with pytest.raises(grpc.RpcError) as bad:
        stub.GetTwin(twin_pb2.GetTwinRequest(vehicle_id=""), metadata=md(OPERATOR))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_watchers_receive_alerts_raised_by_any_stream(server: ServerThread, channel: grpc.Channel) -> None:
    stub = alerts_pb2_grpc.AlertServiceStub(channel)
    watch = stub.WatchAlerts(alerts_pb2.AlertFilter(vehicle_id="W1"), metadata=md(OPERATOR), timeout=20)
    time.sleep(0.3)  # let the subscription register
    columns = fleet_columns(["W1"], 10)
    columns["speed"][4] = 999.0  # impossible: a sensor-fault alert
    replies = stream_sync(channel, [encode_columns(columns, batch_id=1)], token_for("W1"))
    streamed = [r.alert for r in replies if r.HasField("alert")]
    watched = next(iter(watch))
    watch.cancel()
    assert len(streamed) == 1 and streamed[0].rule == "sensor_fault" and streamed[0].seq == 5
    assert watched.alert_id == streamed[0].alert_id
    listed = stub.ListAlerts(alerts_pb2.AlertFilter(vehicle_id="W1"), metadata=md(OPERATOR)).alerts
    assert [a.alert_id for a in listed] == [streamed[0].alert_id]


def test_health_and_reflection_answer_without_credentials(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"evtwin.v1.TelemetryService", "evtwin.v1.TwinService", "evtwin.v1.AlertService", "grpc.health.v1.Health"} <= names
    files = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="evtwin.v1.FrameBatch")])))
    assert files[0].file_descriptor_response.file_descriptor_proto


def test_tls_and_mutual_tls(tmp_path: Path) -> None:
    from serving.keys import issue_test_certificates

    paths = issue_test_certificates(tmp_path)
    check = health_pb2.HealthCheckRequest(service="")

    def health_over(creds: grpc.ChannelCredentials, target: str) -> int:
        with grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
            return health_pb2_grpc.HealthStub(ch).Check(check, timeout=5).status

    tls = CFG.model_copy(update={"tls_cert_path": str(paths.server_cert), "tls_key_path": str(paths.server_key)})
    running = ServerThread(MemoryFleet(), tls)
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=paths.ca_cert.read_bytes())
        assert health_over(creds, running.target) == health_pb2.HealthCheckResponse.SERVING
    finally:
        running.stop()
    mutual = tls.model_copy(update={"tls_client_ca_path": str(paths.ca_cert)})
    running = ServerThread(MemoryFleet(), mutual)
    try:
        no_cert = grpc.ssl_channel_credentials(root_certificates=paths.ca_cert.read_bytes())
        with pytest.raises(grpc.RpcError):
            health_over(no_cert, running.target)
        with_cert = grpc.ssl_channel_credentials(root_certificates=paths.ca_cert.read_bytes(),
                                                 private_key=paths.client_key.read_bytes(),
                                                 certificate_chain=paths.client_cert.read_bytes())
        assert health_over(with_cert, running.target) == health_pb2.HealthCheckResponse.SERVING
    finally:
        running.stop()


def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    secret_path = tmp_path / "auth.secret"
    secret_path.write_text(SECRET.hex())
    secret_path.chmod(0o600)  # `evtwin serve` refuses a secret others can read
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.cli", "serve", "--backend", "memory", "--port", "0",
         "--set", f"serving.auth_secret_path={secret_path}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=Path(__file__).parent.parent)
    try:
        port = None
        deadline = time.time() + 60
        lines = []
        while port is None and time.time() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if match := re.search(r"front door on [\d.]+:(\d+)", line):
                port = int(match.group(1))
        assert port, "".join(lines)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            replies = stream_sync(ch, [encode_columns(fleet_columns(["SIG1"], 100), batch_id=1)], OPERATOR)
            assert replies[0].ack.acks[0].seq == 100
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()



def test_prometheus_metrics_count_frames_streams_and_scrape_over_http() -> None:
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    running = ServerThread(MemoryFleet(), CFG.model_copy(update={"metrics_port": metrics_port}))
    try:
        async def go() -> int:
            async with Client(running.target, token_for("MET1")) as client:
                stats = await client.stream(batches_of(fleet_columns(["MET1"], 1200), 400))
            return stats.frames_acked

        assert asyncio.run(go()) == 1200
        metrics = running.door.metrics
        assert metrics.frames_received.labels(outcome="applied")._value.get() == 1200
        assert metrics.batches_received._value.get() == 3
        assert metrics.open_streams._value.get() == 0
        assert metrics.frames_in_flight._value.get() == 0
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
        assert b'evtwin_frames_total{outcome="applied"} 1200.0' in scraped
    finally:
        running.stop()
