"""Delivery guarantees of the client library against a real gRPC server on 127.0.0.1 (in this process).

Item 1 of issue 13: the client returns after a reconnect that happens once its source is exhausted.
Item 6: frames the server refuses are surfaced (counters, callback, error), duplicates are not an error.
"""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serving.backend import MemoryFleet
from serving.client import Client, FramesRejected
from tests.test_grpc_server import OPERATOR, ServerThread, batches_of, fleet_columns
from twins.types import IngestResult, Rejection

pytestmark = pytest.mark.integration


class FailsCalls(MemoryFleet):
    """Fails chosen ingest calls (1-based), as a dying twin host would."""

    def __init__(self, fail_calls: set[int]) -> None:
        super().__init__()
        self.fail_calls = fail_calls
        self.calls = 0

    async def ingest(self, batch: Any) -> Any:
        self.calls += 1
        if self.calls in self.fail_calls:
            raise ConnectionError("host actor died")
        return await super().ingest(batch)


def test_a_reconnect_after_the_source_ended_still_returns_with_every_frame_acked() -> None:
    # Small batches, a wide window: the writer takes the end of the source long before the last ack, and the
    # last batch's ingest fails, so the reconnect happens after the end-of-source marker was consumed.
    backend = FailsCalls(fail_calls={6})
    running = ServerThread(backend)
    try:
        vehicles = ["END1", "END2"]
        batches = batches_of(fleet_columns(vehicles, 300), 100)

        async def go() -> Any:
            async with Client(running.target, OPERATOR) as client:
                return await asyncio.wait_for(client.stream(batches), timeout=30)

        stats = asyncio.run(go())
        assert stats.reconnects == 1
        assert stats.acked_seq == {v: 300 for v in vehicles}
        assert stats.frames_acked == 600
        assert all(running.call(backend.summary(v))["frames_applied"] == 300 for v in vehicles)
    finally:
        running.stop()


class RefusesSeqs(MemoryFleet):
    """Refuses every frame whose seq is in ``refused`` as ``late`` (a twin after a counter jump does that)."""

    def __init__(self, refused: set[int]) -> None:
        super().__init__()
        self.refused = refused

    async def ingest(self, batch: Any) -> IngestResult:
        result = await super().ingest(batch)
        for vehicle_index, seq in zip(batch.vehicle_index, batch.seq, strict=False):
            if int(seq) in self.refused:
                result.rejected.append(Rejection(batch.vehicle_ids[int(vehicle_index)], int(seq), "late",
                                                 f"seq {int(seq)} arrived after its gap was skipped"))
        return result


def test_rejected_frames_are_counted_called_back_and_raised() -> None:
    running = ServerThread(RefusesSeqs(refused={5, 6, 7}))
    try:
        batches = batches_of(fleet_columns(["REJ1"], 20), 10)
        seen: list[dict[str, Any]] = []

        async def go() -> Any:
            async with Client(running.target, OPERATOR) as client:
                return await client.stream(batches, on_reject=seen.append)

        with pytest.raises(FramesRejected) as raised:
            asyncio.run(go())
        stats = raised.value.stats
        assert stats.rejected_by_reason == {"late": 3}
        assert [(r["vehicle_id"], r["seq"], r["code"]) for r in stats.rejected] == [("REJ1", s, "late") for s in (5, 6, 7)]
        assert [r["seq"] for r in seen] == [5, 6, 7]
        assert "3 frames refused" in str(raised.value) and "late" in str(raised.value)
        assert stats.acked_seq == {"REJ1": 20}  # the rest was delivered before the error
        assert stats.frames_acked == 17  # refused frames are not counted as delivered

        async def quiet() -> Any:
            async with Client(running.target, OPERATOR) as client:
                return await client.stream(batches_of(fleet_columns(["REJ2"], 20), 10), raise_on_reject=False)

        stats = asyncio.run(quiet())
        assert stats.rejected_by_reason == {"late": 3} and len(stats.rejected) == 3
    finally:
        running.stop()


def test_resent_duplicates_of_acknowledged_frames_are_not_an_error() -> None:
    backend = MemoryFleet()
    running = ServerThread(backend)
    try:
        batches = batches_of(fleet_columns(["DUP1"], 40), 10)

        async def go() -> Any:
            async with Client(running.target, OPERATOR) as client:
                await client.stream(batches)
                return await client.stream(batches)  # the same frames again: all duplicates

        stats = asyncio.run(go())
        assert stats.duplicates == 40 and stats.rejected == [] and stats.rejected_by_reason == {}
        assert stats.acked_seq == {"DUP1": 40}
    finally:
        running.stop()


def test_new_vehicles_beyond_the_limits_are_refused_resource_exhausted() -> None:
    import grpc

    from serving.auth import Claims, issue_token
    from tests.test_grpc_server import SECRET

    running = ServerThread(MemoryFleet(max_twins=4, max_new_twins_per_credential=2))
    gateway = issue_token(SECRET, Claims(role="gateway", sub="depot-7", vehicles="GW*"))
    try:
        async def go(token: str, vehicles: list[str]) -> Any:
            async with Client(running.target, token) as client:
                return await client.stream(batches_of(fleet_columns(vehicles, 10), 20))

        assert asyncio.run(go(gateway, ["GW1", "GW2"])).acked_seq == {"GW1": 10, "GW2": 10}
        with pytest.raises(grpc.aio.AioRpcError) as quota:
            asyncio.run(go(gateway, ["GW3"]))
        assert quota.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "twins.max_new_twins_per_credential=2" in quota.value.details()
        assert asyncio.run(go(OPERATOR, ["OP1", "OP2"])).acked_seq == {"OP1": 10, "OP2": 10}
        with pytest.raises(grpc.aio.AioRpcError) as fleet_full:
            asyncio.run(go(OPERATOR, ["OP3"]))
        assert fleet_full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "twins.max_twins=4" in fleet_full.value.details()
        assert sorted(running.call(running.backend.list_twins())) == ["GW1", "GW2", "OP1", "OP2"]
    finally:
        running.stop()
