"""Stream limits of the gRPC front door, against a real server on 127.0.0.1 (MemoryFleet backend).

- ``serving.max_concurrent_streams``: one telemetry stream more is refused RESOURCE_EXHAUSTED, with a message
  naming the setting; a stream that closes frees its place.
- ``serving.max_pending_rpcs``: a burst of new streams larger than gRPC core's default accept backlog
  (1,000) all open; with the default backlog some were cancelled before the server saw them, which a
  client writing its first batch saw as "INTERNAL: Internal error from Core".
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import numpy as np
import pytest
from pydantic import ValidationError

from configs.schema import SCHEMA
from configs.settings import ServingConfig
from protos.evtwin.v1 import telemetry_pb2_grpc
from serving.auth import Claims, issue_token
from serving.backend import MemoryFleet
from serving.codec import encode_columns
from serving.server import channel_options, start_front_door

SECRET = b"l" * 32
NOW_MS = int(time.time() * 1000)


def first_batch(vehicle: str) -> Any:
    columns: dict[str, Any] = {"vehicle_id": np.array([vehicle] * 2), "seq": np.array([1, 2]),
                               "ts": np.array([NOW_MS - 20_000, NOW_MS - 10_000])}
    for spec in SCHEMA.fields:
        columns[spec.name] = np.full(2, (spec.min + spec.max) / 2 if spec.dtype != "int8" else 1.0)
    return encode_columns(columns, batch_id=1)


def connection(port: int) -> grpc.aio.Channel:
    """A channel with its own HTTP/2 connection: by default channels to one target with the same options
    share a connection (gRPC's global subchannel pool), which would hold every stream of this test."""
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])


def open_stream(channel: grpc.aio.Channel, vehicle: str) -> Any:
    token = issue_token(SECRET, Claims(role="vehicle", sub=vehicle))
    return telemetry_pb2_grpc.TelemetryServiceStub(channel).Stream(metadata=(("authorization", f"Bearer {token}"),))


async def acked_stream(channel: grpc.aio.Channel, vehicle: str) -> Any:
    """A stream whose first batch was acknowledged, left open."""
    call = open_stream(channel, vehicle)
    await call.write(first_batch(vehicle))
    reply = await call.read()
    assert {a.vehicle_id: a.seq for a in reply.ack.acks} == {vehicle: 2}
    return call


async def close(call: Any) -> None:
    await call.done_writing()
    while await call.read() is not grpc.aio.EOF:
        pass
    assert await call.code() == grpc.StatusCode.OK


CONNECTIONS = 10


@pytest.mark.integration
def test_streams_beyond_the_limit_are_refused_with_a_message_naming_it_and_a_closed_one_frees_its_place() -> None:
    cfg = ServingConfig(max_concurrent_streams=40)

    async def scenario() -> None:
        door = await start_front_door(MemoryFleet(), cfg, secret=SECRET, host="127.0.0.1", port=0)
        # Several connections: each may carry up to 40 streams (HTTP/2), so the server-wide limit is what binds.
        # 10 of them keep each under 40 (4 held + 20 extra): with 5 (48 each) a stream opened before the
        # client had the server's HTTP/2 settings was now and then refused by HTTP/2 itself (UNAVAILABLE).
        channels = [connection(door.port) for _ in range(CONNECTIONS)]
        try:
            held = await asyncio.gather(*(acked_stream(channels[i % CONNECTIONS], f"LIM{i:03d}") for i in range(40)))
            # 200 more at once. They read before writing: a refused stream ends before its first message, and
            # a client already writing would see its write fail (INTERNAL) instead of the server's status.
            extra = [open_stream(channels[i % CONNECTIONS], f"EXT{i:03d}") for i in range(200)]
            outcomes = await asyncio.gather(*(asyncio.wait_for(call.read(), 20) for call in extra),
                                            return_exceptions=True)
            assert all(isinstance(o, grpc.aio.AioRpcError) for o in outcomes), outcomes[:3]
            assert {o.code() for o in outcomes} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert all("serving.max_concurrent_streams=40" in o.details() and "40 telemetry streams open" in o.details()
                       for o in outcomes), outcomes[0].details()
            # The held streams were not disturbed, and closing one admits a newcomer.
            await close(held.pop())
            newcomer = await acked_stream(channels[0], "NEW000")
            await asyncio.gather(*(close(call) for call in held + [newcomer]))
            assert len(door.sessions) == 0
        finally:
            for channel in channels:
                await channel.close()
            await door.stop()

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_burst_of_streams_beyond_grpc_cores_default_backlog_all_open() -> None:
    burst = 1500  # gRPC core starts cancelling unaccepted calls above 1,000 by default

    async def scenario() -> None:
        door = await start_front_door(MemoryFleet(), ServingConfig(), secret=SECRET, host="127.0.0.1", port=0)
        channels = [connection(door.port) for _ in range(burst // 100)]
        try:
            calls = await asyncio.wait_for(asyncio.gather(
                *(acked_stream(channels[i % len(channels)], f"BUR{i:04d}") for i in range(burst))), 240)
            assert len(door.sessions) == burst
            await asyncio.gather(*(close(call) for call in calls))
        finally:
            for channel in channels:
                await channel.close()
            await door.stop()

    asyncio.run(scenario())


def test_the_accept_backlog_reaches_grpc_core_and_limits_are_validated() -> None:
    options = dict(channel_options(ServingConfig(max_pending_rpcs=12_345, max_concurrent_streams=777)))
    assert options["grpc.server.max_pending_requests"] == 12_345
    assert options["grpc.server.max_pending_requests_hard_limit"] == 12_345
    assert options["grpc.max_concurrent_streams"] == 777
    assert ServingConfig().max_concurrent_streams >= 10_000 and ServingConfig().max_pending_rpcs >= 10_000
    for field in ("max_pending_rpcs", "max_concurrent_streams"):
        with pytest.raises(ValidationError, match=field):
            ServingConfig(**{field: 0})
