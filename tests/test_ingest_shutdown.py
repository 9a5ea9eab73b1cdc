"""The front door at start and stop: a taken port is refused, and a shutdown is bounded even while the twins
behind it never answer (host actors still starting, a call that hangs)."""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

from configs.schema import SCHEMA
from configs.settings import ServingConfig
from serving.backend import MemoryFleet, TwinFleetBackend
from serving.codec import BatchLimits, decode_batch, encode_columns
from serving.server import start_front_door
from twins.hosting import FleetStopping

pytestmark = pytest.mark.integration  # real gRPC servers on 127.0.0.1

NOW_MS = int(time.time() * 1000)


def one_batch(vehicle: str = "veh-1", frames: int = 5) -> Any:
    columns: dict[str, np.ndarray] = {}
    for name in SCHEMA.column_names:
        if name == "vehicle_id":
            columns[name] = np.array([vehicle] * frames, dtype=object)
        elif name == "seq":
            columns[name] = np.arange(1, frames + 1, dtype=np.int64)
        elif name == "ts":
            columns[name] = NOW_MS - 60_000 + np.arange(frames, dtype=np.int64) * 1000
    message = encode_columns(columns, batch_id=1)
    return decode_batch(message, BatchLimits(), now_ms=NOW_MS)


def test_a_second_server_on_a_taken_port_refuses_to_start() -> None:
    cfg = ServingConfig(require_auth=False)

    async def go() -> None:
        first = await start_front_door(MemoryFleet(), cfg, secret=None, host="127.0.0.1", port=0)
        try:
            with pytest.raises(OSError, match=f"could not bind the gRPC server to 127.0.0.1:{first.port}"):
                await start_front_door(MemoryFleet(), cfg, secret=None, host="127.0.0.1", port=first.port)
        finally:
            await first.stop()

    asyncio.run(go())


class StuckFleet:
    """A router whose ingest never answers (a host actor still starting) unless told to stop."""

    def __init__(self, honours_stop: bool) -> None:
        self.honours_stop = honours_stop
        self.entered = threading.Event()
        self.release = threading.Event()
        self.stop_called = False
        self.checkpointed_with: list[float | None] = []

    def ingest(self, batch: Any) -> Any:
        self.entered.set()
        self.release.wait(30)
        raise FleetStopping("stopped")

    def stop_ingest(self) -> None:
        self.stop_called = True
        if self.honours_stop:
            self.release.set()

    def checkpoint_all(self, timeout_s: float | None = None) -> int:
        self.checkpointed_with.append(timeout_s)
        return 0

    def close(self, checkpoint: bool = True) -> None:
        return None


@pytest.mark.parametrize("honours_stop", [True, False], ids=["call-gives-up", "call-never-returns"])
def test_stop_is_bounded_while_an_ingest_call_hangs(honours_stop: bool) -> None:
    fleet = StuckFleet(honours_stop)
    drain_s = 0.5
    cfg = ServingConfig(require_auth=False, drain_timeout_s=drain_s)

    async def go() -> tuple[float, BaseException | None]:
        door = await start_front_door(TwinFleetBackend(fleet), cfg, secret=None, host="127.0.0.1", port=0)
        in_flight = asyncio.create_task(door.backend.ingest(one_batch()))
        while not fleet.entered.is_set():
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await asyncio.wait_for(door.stop(), timeout=20)
        elapsed = time.monotonic() - started
        if honours_stop:
            await asyncio.wait_for(asyncio.gather(in_flight, return_exceptions=True), timeout=5)
        error = in_flight.exception() if in_flight.done() else None
        in_flight.cancel()
        return elapsed, error

    try:
        elapsed, error = asyncio.run(go())
    finally:
        fleet.release.set()
    assert fleet.stop_called
    # grace for streams + one drain budget for checkpoint and close together, plus scheduling slack
    assert elapsed < 2 * drain_s + 2.0, elapsed
    if honours_stop:
        assert isinstance(error, FleetStopping)
        assert fleet.checkpointed_with == [drain_s]  # the final checkpoint is bounded too


def test_a_stopped_backend_refuses_new_batches() -> None:
    backend = TwinFleetBackend(StuckFleet(honours_stop=True))
    backend.stop_ingest(1.0)
    with pytest.raises(RuntimeError, match="shutting down"):
        asyncio.run(backend.ingest(one_batch()))
