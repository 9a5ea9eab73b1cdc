"""What the gRPC servicers talk to: a fleet of twins behind one async interface.

``TwinFleetBackend`` adapts the twins' ``TwinFleet`` (Ray actors, durable acks). ``MemoryFleet`` is an
ingest-only fleet in the server process: dedup by (``ts``, ``seq``), acks, last frame, sensor-fault alerts, no
models and no durability. It measures the front door alone (benchmarks) and lets the wire be tested
without a cluster.

>>> import asyncio, numpy as np
>>> from serving.codec import BatchLimits, decode_batch, encode_columns
>>> msg = encode_columns({"vehicle_id": np.array(["V1"] * 3), "ts": np.array([1_767_600_000_000 + i for i in range(3)]),
...                       "seq": np.array([1, 2, 3])})
>>> fleet = MemoryFleet()
>>> result = asyncio.run(fleet.ingest(decode_batch(msg, BatchLimits(), now_ms=1_767_600_000_000)))
>>> result.acks, result.duplicates
({'V1': 3}, 0)
>>> asyncio.run(fleet.ingest(decode_batch(msg, BatchLimits(), now_ms=1_767_600_000_000))).duplicates
3
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from configs.schema import SCHEMA
from serving.codec import DecodedBatch, frames_of
from twins.metrics import PrometheusSink, TwinMetrics
from twins.types import Alert, AlertFilter, IngestResult, Rule, alert_id

log = logging.getLogger(__name__)


class FleetBackend(Protocol):
    """The servicers' only view of the twins. Every method is a coroutine; none blocks the event loop."""

    async def ingest(self, batch: DecodedBatch) -> IngestResult: ...

    async def summary(self, vehicle_id: str) -> dict[str, Any] | None: ...

    async def list_twins(self) -> list[str]: ...

    async def alerts(self, alert_filter: AlertFilter) -> list[Alert]: ...

    async def checkpoint(self) -> None: ...

    async def drain(self) -> list[Alert]: ...  # wait (bounded) for model calls in flight; their alerts

    async def close(self) -> None: ...

    # None if the batch may create its new twins; else why not (answered RESOURCE_EXHAUSTED). ``quota_key``
    # names the credential whose new vehicles are counted (gateways), None for no per-credential quota.
    async def admit(self, vehicle_ids: list[str], quota_key: str | None) -> str | None: ...


class TwinAdmission:
    """Bounds twin creation: at most ``max_twins`` vehicles in the fleet, and at most ``max_new_per_credential``
    new vehicles brought by one credential (counted since the server started). Known vehicles (``seed``:
    those with a twin or a checkpoint) always pass. A vehicle counts as created once admitted.

    >>> admission = TwinAdmission(max_twins=2, max_new_per_credential=None)
    >>> admission.seed(["a"]); admission.admit(["a", "b"], None) is None, admission.admit(["c"], None)[:16]
    (True, 'twins.max_twins=')
    """

    def __init__(self, max_twins: int | None, max_new_per_credential: int | None) -> None:
        self.max_twins = max_twins
        self.max_new_per_credential = max_new_per_credential
        self.known: set[str] = set()
        self.seeded = False
        self.created_by: dict[str, int] = {}

    def seed(self, vehicle_ids: Any) -> None:
        self.known.update(vehicle_ids)
        self.seeded = True

    def admit(self, vehicle_ids: list[str], quota_key: str | None) -> str | None:
        new = [v for v in dict.fromkeys(vehicle_ids) if v not in self.known]
        if not new:
            return None
        if self.max_twins is not None and len(self.known) + len(new) > self.max_twins:
            return (f"twins.max_twins={self.max_twins}: the fleet has {len(self.known)} twins and this batch would "
                    f"create {len(new)} more (first: vehicle_id={new[0]!r})")
        used = self.created_by.get(quota_key, 0) if quota_key else 0
        if quota_key and self.max_new_per_credential is not None and used + len(new) > self.max_new_per_credential:
            return (f"twins.max_new_twins_per_credential={self.max_new_per_credential}: credential {quota_key!r} "
                    f"has created {used} twins and this batch would create {len(new)} more (first: vehicle_id={new[0]!r})")
        self.known.update(new)
        if quota_key:
            self.created_by[quota_key] = used + len(new)
        return None


async def _admit(admission: TwinAdmission, backend: Any, vehicle_ids: list[str], quota_key: str | None) -> str | None:
    if not admission.seeded:
        admission.seed(await backend.list_twins())
    return admission.admit(vehicle_ids, quota_key)


async def _resolve(value: Any) -> Any:
    """Await coroutines and Ray ObjectRefs / DeploymentResponses alike."""
    while inspect.isawaitable(value):
        value = await value
    return value


class TwinFleetBackend:
    """Adapter over ``twins.hosting.TwinFleet`` (sync methods run in a worker thread, one at a time).

    ``TwinFleet`` is a driver-side router that is not thread-safe, so calls never overlap. Batches that
    arrive from many streams while a call is running are coalesced into the next call (one ``ingest`` per
    host actor for all of them), then the acks, alerts and refusals are split back to their streams: under
    load the calls grow instead of queueing.
    """

    def __init__(self, fleet: Any, max_group_frames: int = 100_000) -> None:
        self.fleet = fleet
        self.max_group_frames = max_group_frames
        cfg = getattr(fleet, "cfg", None)  # a TwinsConfig; stand-ins in tests have none: no limits
        self.admission = TwinAdmission(getattr(cfg, "max_twins", None), getattr(cfg, "max_new_twins_per_credential", None))
        self._lock = asyncio.Lock()
        self._waiting: deque[tuple[DecodedBatch, asyncio.Future]] = deque()
        self._pump: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None  # releases idle hosts of a fleet that gets no traffic at all
        self.stopped = False
        self.shutdown_timeout_s = 10.0

    async def _call(self, name: str, *args: Any) -> Any:
        async with self._lock:
            return await _resolve(await asyncio.to_thread(getattr(self.fleet, name), *args))

    def stop_ingest(self, timeout_s: float = 10.0) -> None:
        """Shutting down: refuse new batches and make the call in flight give up (no retries, no waiting on
        host actors still starting); its frames stay unacknowledged, so their clients re-send them. The
        final checkpoint then waits at most ``timeout_s`` for the hosts."""
        self.stopped = True
        self.shutdown_timeout_s = timeout_s
        stop = getattr(self.fleet, "stop_ingest", None)
        if stop is not None:
            stop()  # thread-safe: the call in flight runs in a worker thread

    async def ingest(self, batch: DecodedBatch) -> IngestResult:
        if self.stopped:
            raise RuntimeError("the server is shutting down: batch not applied")
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((batch, future))
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._ingest_waiting())
        if self._sweeper is None and hasattr(self.fleet, "release_idle"):
            self._sweeper = asyncio.create_task(self._sweep(self.fleet.cfg.idle_release_s))
        return await future

    async def _sweep(self, idle_release_s: float) -> None:
        while True:
            await asyncio.sleep(max(1.0, idle_release_s / 2))
            try:
                await self._call("release_idle")
            except Exception as error:  # a host that cannot be released now is tried again next round
                log.warning("releasing idle twin hosts failed: %r", error)

    async def _ingest_waiting(self) -> None:
        while self._waiting:
            group, frames = [], 0
            while self._waiting and (not group or frames + self._waiting[0][0].num_rows <= self.max_group_frames):
                batch, future = self._waiting.popleft()
                group.append((batch, future))
                frames += batch.num_rows
            try:
                result = await self._call("ingest", frames_of([b.record_batch for b, _ in group]))
            except Exception as error:
                for _, future in group:
                    if not future.done():
                        future.set_exception(error)
                continue
            shares = _shares_of(result, [batch for batch, _ in group])
            for (_, future), share in zip(group, shares, strict=True):
                if not future.done():
                    future.set_result(share)

    async def summary(self, vehicle_id: str) -> dict[str, Any] | None:
        return await self._call("summary", vehicle_id)

    async def list_twins(self) -> list[str]:
        return list(await self._call("list_twins"))

    async def alerts(self, alert_filter: AlertFilter) -> list[Alert]:
        return list(await self._call("alerts", alert_filter))

    async def checkpoint(self) -> None:
        if self.stopped:  # a worker thread blocked on a host that never answers would keep the process alive
            await self._call("checkpoint_all", self.shutdown_timeout_s)
        else:
            await self._call("checkpoint_all")

    async def drain(self, timeout_s: float = 10.0) -> list[Alert]:
        return list(await self._call("drain", timeout_s))

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self._call("close", not self.stopped)  # stopped: FrontDoor.stop has checkpointed already

    async def admit(self, vehicle_ids: list[str], quota_key: str | None) -> str | None:
        return await _admit(self.admission, self, vehicle_ids, quota_key)


def _shares_of(result: IngestResult, batches: list[DecodedBatch]) -> list[IngestResult]:
    """Each batch's part of a coalesced call's result, in one pass over the result (not one per batch: a tick
    of 1,000 small vehicle batches would otherwise cost 1,000 passes over 1,000 acks)."""
    if len(batches) == 1:
        return [result]
    owners: dict[str, list[int]] = {}
    for i, batch in enumerate(batches):
        for vehicle_id in dict.fromkeys(batch.vehicle_ids):
            owners.setdefault(vehicle_id, []).append(i)
    # Duplicates are counted per call, not per vehicle, so a shared call cannot attribute them: 0.
    shares = [IngestResult() for _ in batches]
    for vehicle_id, seq in result.acks.items():
        for i in owners.get(vehicle_id, ()):
            shares[i].acks[vehicle_id] = seq
            if vehicle_id in result.ack_ts:
                shares[i].ack_ts[vehicle_id] = result.ack_ts[vehicle_id]
    for alert in result.alerts:
        for i in owners.get(alert.vehicle_id, ()):
            shares[i].alerts.append(alert)
    for rejection in result.rejected:
        for i in owners.get(rejection.vehicle_id, ()):
            shares[i].rejected.append(rejection)
    for vehicle_id, error in result.not_durable.items():
        for i in owners.get(vehicle_id, ()):
            shares[i].not_durable[vehicle_id] = error
    return shares


@dataclass
class _VehicleState:
    applied_seq: int = 0
    frames_applied: int = 0
    last_ts_ms: int = 0
    sensor_faults: int = 0
    last_fault_alert_ms: int | None = None
    last_frame: dict[str, Any] = field(default_factory=dict)


class MemoryFleet:
    """Ingest-only fleet in the server process (see the module docstring); not durable."""

    def __init__(self, fault_cooldown_ms: int = 6 * 3_600_000, max_alerts: int = 100_000,
                 max_twins: int | None = None, max_new_twins_per_credential: int | None = None) -> None:
        self.fault_cooldown_ms = fault_cooldown_ms
        self.max_alerts = max_alerts
        self.admission = TwinAdmission(max_twins, max_new_twins_per_credential)
        self._vehicles: dict[str, _VehicleState] = {}
        self._alerts: list[Alert] = []

    async def ingest(self, batch: DecodedBatch) -> IngestResult:
        return self.ingest_now(batch)

    def ingest_now(self, batch: DecodedBatch) -> IngestResult:
        result = IngestResult()
        if batch.num_rows == 0:
            return result
        invalid_rows = batch.faulty_rows  # judged once, by the codec, on the wire values
        ts = batch.record_batch.column("ts").cast(pa.int64()).to_numpy()
        order = np.argsort(batch.vehicle_index, kind="stable")
        bounds = np.flatnonzero(np.diff(batch.vehicle_index[order])) + 1
        for rows in np.split(order, bounds):
            vehicle_id = batch.vehicle_ids[int(batch.vehicle_index[rows[0]])]
            state = self._vehicles.setdefault(vehicle_id, _VehicleState())
            # New: after the watermark in time, or at its ts with a higher seq. A counter restart (seq falls
            # back, ts moves on) is new; a re-sent frame of the epoch before it is older in time: a duplicate.
            row_ts, row_seq = ts[rows], batch.seq[rows]
            fresh = rows[(row_ts > state.last_ts_ms) | ((row_ts == state.last_ts_ms) & (row_seq > state.applied_seq))]
            result.duplicates += len(rows) - len(fresh)
            if len(fresh):
                self._apply(vehicle_id, state, batch, fresh, ts, invalid_rows, result)
            result.acks[vehicle_id] = state.applied_seq
            result.ack_ts[vehicle_id] = state.last_ts_ms
        return result

    def _apply(self, vehicle_id: str, state: _VehicleState, batch: DecodedBatch, rows: np.ndarray,
               ts: np.ndarray, invalid_rows: np.ndarray, result: IngestResult) -> None:
        newest = int(rows[np.lexsort((batch.seq[rows], ts[rows]))[-1]])  # the watermark: latest ts, then seq
        state.applied_seq = int(batch.seq[newest])
        state.frames_applied += len(rows)
        state.last_ts_ms = int(ts[newest])
        state.last_frame = {"row": newest, "batch": batch.record_batch}
        result.applied += len(rows)
        faulty = rows[invalid_rows[rows]]
        state.sensor_faults += len(faulty)
        if len(faulty):
            row = int(faulty[0])
            cooled = state.last_fault_alert_ms is None or ts[row] - state.last_fault_alert_ms >= self.fault_cooldown_ms
            if cooled:
                state.last_fault_alert_ms = int(ts[row])
                result.alerts.append(self._fault_alert(vehicle_id, batch, row, int(ts[row])))

    def _fault_alert(self, vehicle_id: str, batch: DecodedBatch, row: int, ts_ms: int) -> Alert:
        seq = int(batch.seq[row])
        fields = [name for name, rows in batch.faulty_cells.items() if rows[row]]  # the codec's verdict, per sensor
        alert = Alert(
            alert_id=alert_id(vehicle_id, Rule.SENSOR_FAULT, seq), vehicle_id=vehicle_id, rule=Rule.SENSOR_FAULT,
            ts_ms=ts_ms, seq=seq, score=float(len(fields)),
            signals=tuple((name, 1.0 / len(fields)) for name in fields),
            message=f"sensor fault: {', '.join(fields)} outside the physical range",
        )
        self._alerts.append(alert)
        del self._alerts[:-self.max_alerts]
        return alert

    async def summary(self, vehicle_id: str) -> dict[str, Any] | None:
        state = self._vehicles.get(vehicle_id)
        if state is None:
            return None
        last_frame = {}
        if state.last_frame:
            row, record_batch = state.last_frame["row"], state.last_frame["batch"]
            last_frame = {name: record_batch.column(name)[row].as_py() for name in SCHEMA.column_names}
            last_frame["ts"] = state.last_ts_ms
        return {
            "vehicle_id": vehicle_id, "applied_seq": state.applied_seq, "acked_seq": state.applied_seq,
            "last_ts_ms": state.last_ts_ms, "frames_applied": state.frames_applied,
            "sensor_faults": state.sensor_faults, "last_frame": last_frame,
            "open_alerts": [a for a in self._alerts if a.vehicle_id == vehicle_id][-10:],
        }

    async def list_twins(self) -> list[str]:
        return sorted(self._vehicles)

    async def alerts(self, alert_filter: AlertFilter) -> list[Alert]:
        return [a for a in self._alerts if alert_filter.matches(a)][-alert_filter.limit:]

    async def checkpoint(self) -> None:
        return None

    async def drain(self) -> list[Alert]:
        return []

    async def close(self) -> None:
        return None

    async def admit(self, vehicle_ids: list[str], quota_key: str | None) -> str | None:
        return await _admit(self.admission, self, vehicle_ids, quota_key)


class LocalTwinsBackend:
    """Twins in the server process: one ``twins.host.TwinHost`` (no Ray), calls serialised in a worker thread.

    The small-fleet and test shape; ``TwinFleetBackend`` is the same logic spread over Ray actors.
    """

    def __init__(self, host: Any) -> None:
        self.host = host
        self._lock = asyncio.Lock()
        self.admission = TwinAdmission(host.cfg.max_twins, host.cfg.max_new_twins_per_credential)
        self.twin_metrics: TwinMetrics | None = None

    def attach_metrics(self, registry: Any) -> None:
        """Export the twins' own metrics (``twins.metrics``) on the front door's registry."""
        self.twin_metrics = TwinMetrics(PrometheusSink(registry), host="local")

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._lock:
            return await asyncio.to_thread(fn, *args)

    async def ingest(self, batch: DecodedBatch) -> IngestResult:
        if self.twin_metrics is not None:
            return await self._run(self.twin_metrics.ingest, self.host, batch.frames())
        return await self._run(self.host.ingest, batch.frames())

    async def summary(self, vehicle_id: str) -> dict[str, Any] | None:
        return await self._run(self.host.summary, vehicle_id)

    async def list_twins(self) -> list[str]:
        return sorted(await self._run(self.host.known))

    async def admit(self, vehicle_ids: list[str], quota_key: str | None) -> str | None:
        return await _admit(self.admission, self, vehicle_ids, quota_key)

    async def alerts(self, alert_filter: AlertFilter) -> list[Alert]:
        return list(await self._run(self.host.alerts, alert_filter))

    async def checkpoint(self) -> None:
        await self._run(self.host.checkpoint_all)

    async def drain(self, timeout_s: float = 10.0) -> list[Alert]:
        return list(await self._run(self.host.drain, timeout_s))

    async def close(self) -> None:
        return None
