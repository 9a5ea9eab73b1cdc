"""gRPC servicers (grpc.aio): thin shells from the wire to a ``FleetBackend``.

Methods are named exactly as the RPCs. Decoding and validation live in ``serving.codec``, credentials
in ``serving.auth`` (checked by the interceptor in ``serving.server``, which hands the claims over in
``CURRENT_CLAIMS``), twin logic behind the backend. The clock is passed in, never read here.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

import grpc

from configs.alert_states import STATES, AlertState, AlertStateLog, check_change
from protos.evtwin.v1 import alerts_pb2, alerts_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc, twin_pb2, twin_pb2_grpc
from serving.auth import Claims
from serving.backend import FleetBackend
from serving.codec import (
    VEHICLE_ID_PATTERN,
    BatchLimits,
    DecodedBatch,
    Unparseable,
    WireError,
    alert_to_proto,
    decode_batch,
    summary_to_proto,
)
from serving.metrics import FrontDoorMetrics
from twins.types import Alert, AlertFilter

log = logging.getLogger(__name__)

# Set by the auth interceptor for the duration of one RPC; None means "not authenticated".
CURRENT_CLAIMS: contextvars.ContextVar[Claims | None] = contextvars.ContextVar("evtwin_claims", default=None)

DEFAULT_ALERT_LIMIT = 1000


def status_code(name: str) -> grpc.StatusCode:
    return grpc.StatusCode[name]


async def _require(context: grpc.aio.ServicerContext, read: bool, request: object = None) -> Claims:
    if isinstance(request, Unparseable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe())
    claims = CURRENT_CLAIMS.get()
    if claims is None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no credentials")
    if read and not claims.may_read():
        await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                            f"{claims.role} credential {claims.sub!r} may not read twins or alerts (operator only)")
    return claims


class FrameBudget:
    """Frames decoded but not yet acknowledged on one stream; the reader waits when it is spent.

    While the reader waits it stops pulling messages, so HTTP/2 flow control slows the client: memory per
    stream stays bounded however slow the twins are.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_flight = 0
        self._released = asyncio.Condition()

    async def acquire(self, frames: int) -> None:
        frames = min(frames, self.capacity)  # a single batch larger than the budget still passes, alone
        async with self._released:
            await self._released.wait_for(lambda: self.in_flight + frames <= self.capacity)
            self.in_flight += frames

    async def release(self, frames: int) -> None:
        async with self._released:
            self.in_flight -= min(frames, self.capacity)
            self._released.notify_all()


@dataclass(frozen=True)
class StateChange:
    """An alert whose lifecycle changed (acknowledged, assigned, resolved), fanned out like a new alert."""

    alert: Alert
    state: AlertState


class AlertHub:
    """Fan-out of new alerts (and ``StateChange``s) to WatchAlerts subscribers; one that falls behind is dropped."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self._subscribers: set[asyncio.Queue] = set()

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(self.queue_size)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers.discard(queue)

    def publish(self, alerts: list[Alert] | list[StateChange]) -> None:
        for queue in list(self._subscribers):
            for alert in alerts:
                try:
                    queue.put_nowait(alert)
                except asyncio.QueueFull:
                    self._subscribers.discard(queue)
                    _mark_lagged(queue)
                    break

    def close(self) -> None:
        for queue in list(self._subscribers):
            _mark_lagged(queue, closing=True)
        self._subscribers.clear()


_LAGGED = object()
_CLOSING = object()
_END = object()
_DRAIN = object()


def _mark_lagged(queue: asyncio.Queue, closing: bool = False) -> None:
    # Make room for the marker so the consumer always sees it.
    while queue.full():
        queue.get_nowait()
    queue.put_nowait(_CLOSING if closing else _LAGGED)


class SessionRegistry:
    """Open telemetry streams, so a graceful shutdown can tell each to finish what it holds."""

    def __init__(self) -> None:
        self.draining = False
        self._queues: set[asyncio.Queue] = set()

    def open(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._queues.add(queue)
        if self.draining:
            queue.put_nowait(_DRAIN)
        return queue

    def close(self, queue: asyncio.Queue) -> None:
        self._queues.discard(queue)

    def drain(self) -> None:
        self.draining = True
        for queue in self._queues:
            queue.put_nowait(_DRAIN)

    def __len__(self) -> int:
        return len(self._queues)


class TelemetryServicer(telemetry_pb2_grpc.TelemetryServiceServicer):
    def __init__(self, backend: FleetBackend, hub: AlertHub, sessions: SessionRegistry, limits: BatchLimits,
                 max_frames_in_flight: int, clock_ms: Callable[[], int],
                 metrics: FrontDoorMetrics | None = None, max_streams: int | None = None) -> None:
        self.metrics = metrics or FrontDoorMetrics()
        self.max_streams = max_streams
        self.backend = backend
        self.hub = hub
        self.sessions = sessions
        self.limits = limits
        self.max_frames_in_flight = max_frames_in_flight
        self.clock_ms = clock_ms

    async def Stream(self, request_iterator: AsyncIterator[telemetry_pb2.FrameBatch],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[telemetry_pb2.StreamReply]:
        claims = await _require(context, read=False)
        if self.max_streams is not None and len(self.sessions) >= self.max_streams:
            self.metrics.rpc_errors.labels(method="Stream", code="RESOURCE_EXHAUSTED").inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{len(self.sessions)} telemetry streams open, serving.max_concurrent_streams="
                                f"{self.max_streams}: retry with backoff")
        budget = FrameBudget(self.max_frames_in_flight)
        queue = self.sessions.open()
        reader = asyncio.create_task(self._read(request_iterator, claims, budget, queue))
        self.metrics.open_streams.inc()
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if item is _DRAIN:
                    await context.abort(grpc.StatusCode.UNAVAILABLE,
                                        "server draining: reconnect and resend from the last acknowledged seq")
                if isinstance(item, WireError):
                    self.metrics.rpc_errors.labels(method="Stream", code=item.status).inc()
                    await context.abort(status_code(item.status), item.message)
                replies, not_durable = await self._ingest(item, budget, context)
                for reply in replies:
                    yield reply
                if not_durable:
                    # What is durable was answered; the stream ends so the client reconnects (with backoff) and
                    # re-sends the rest, which the rolled-back twins apply again once the store recovers.
                    vehicle_id, problem = next(iter(not_durable.items()))
                    self.metrics.rpc_errors.labels(method="Stream", code="UNAVAILABLE").inc()
                    await context.abort(grpc.StatusCode.UNAVAILABLE,
                                        f"state of {len(not_durable)} vehicle(s) not durable (vehicle_id={vehicle_id!r}: "
                                        f"{problem}); resend from the last acknowledged seq")
        finally:
            self.metrics.open_streams.dec()
            reader.cancel()
            self.sessions.close(queue)

    async def _read(self, request_iterator: AsyncIterator[telemetry_pb2.FrameBatch], claims: Claims,
                    budget: FrameBudget, queue: asyncio.Queue) -> None:
        try:
            async for msg in request_iterator:
                if self.sessions.draining:
                    return
                if isinstance(msg, Unparseable):
                    raise WireError("INVALID_ARGUMENT", msg.describe())
                batch = decode_batch(msg, self.limits, self.clock_ms())
                _authorize(claims, batch)
                # Creation is bounded (fleet-wide, and per gateway credential); known vehicles always pass.
                quota_key = f"gateway:{claims.sub}" if claims.role == "gateway" else None
                admit = getattr(self.backend, "admit", None)  # a stand-in backend without limits has none
                if admit is not None and (refusal := await admit(batch.vehicle_ids, quota_key)):
                    raise WireError("RESOURCE_EXHAUSTED", refusal)
                await budget.acquire(batch.num_rows)
                self.metrics.frames_in_flight.inc(batch.num_rows)
                queue.put_nowait(batch)
            queue.put_nowait(_END)
        except WireError as error:
            queue.put_nowait(error)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the client went away mid-message, or similar: end the stream quietly
            log.debug("telemetry stream reader ended: %r", error)
            queue.put_nowait(_END)

    async def _ingest(self, batch: DecodedBatch, budget: FrameBudget,
                      context: grpc.aio.ServicerContext) -> tuple[list[telemetry_pb2.StreamReply], dict[str, str]]:
        started = time.perf_counter()
        try:
            result = await self.backend.ingest(batch)
        except Exception as error:  # never a stack trace on the wire; the client resends from its last ack
            log.warning("ingest of batch %d failed: %r", batch.batch_id, error)
            self.metrics.rpc_errors.labels(method="Stream", code="UNAVAILABLE").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"twins unavailable ({type(error).__name__}); resend from the last acknowledged seq")
        finally:
            self.metrics.frames_in_flight.dec(batch.num_rows)
            await budget.release(batch.num_rows)
        self.metrics.observe_ingest(batch.num_rows, int(result.duplicates), len(result.rejected),
                                    int(batch.faulty_rows.sum()), (a.rule for a in result.alerts),
                                    time.perf_counter() - started)
        ack = telemetry_pb2.Ack(
            batch_id=batch.batch_id, frames=batch.num_rows, duplicates=int(result.duplicates),
            sensor_faults=batch.sensor_faults,
            acks=[telemetry_pb2.VehicleAck(vehicle_id=v, seq=int(result.acks[v]), ts=max(0, int(result.ack_ts.get(v, 0))))
                  for v in batch.vehicle_ids if v in result.acks],
            rejected=[telemetry_pb2.Rejection(vehicle_id=r.vehicle_id, seq=int(r.seq), code=r.code, message=r.message)
                      for r in result.rejected],
        )
        replies = [telemetry_pb2.StreamReply(ack=ack)]
        if result.alerts:
            self.hub.publish(list(result.alerts))
            replies += [telemetry_pb2.StreamReply(alert=alert_to_proto(a)) for a in result.alerts]
        return replies, result.not_durable


def _authorize(claims: Claims, batch: DecodedBatch) -> None:
    for vehicle_id in batch.vehicle_ids:
        if not claims.may_write(vehicle_id):
            raise WireError("PERMISSION_DENIED",
                            f"vehicle_id={vehicle_id!r}: the {claims.role} credential {claims.sub!r} may not write it")


def alert_filter_from_proto(msg: alerts_pb2.AlertFilter) -> AlertFilter:
    # min_severity is part of the filter, so backends apply it before the limit (never too few alerts).
    return AlertFilter(vehicle_id=msg.vehicle_id or None, rule=msg.rule or None, since_ms=msg.since_ms or None,
                       limit=msg.limit if msg.limit > 0 else DEFAULT_ALERT_LIMIT, min_severity=msg.min_severity)


def _check_filter(msg: alerts_pb2.AlertFilter) -> str | None:
    if msg.vehicle_id and not VEHICLE_ID_PATTERN.match(msg.vehicle_id):
        return f"vehicle_id={msg.vehicle_id[:80]!r}: not a vehicle id"
    if msg.limit < 0:
        return f"limit={msg.limit}: must be >= 0"
    if not 0 <= msg.min_severity <= 3:
        return f"min_severity={msg.min_severity}: must be 0..3"
    if unknown := [s for s in msg.states if s not in STATES]:
        return f"states={unknown[0][:40]!r}: not a lifecycle state (one of {', '.join(STATES)})"
    return None


def lifecycle_to_proto(state: AlertState) -> alerts_pb2.AlertLifecycle:
    return alerts_pb2.AlertLifecycle(state=state.state, assignee=state.assignee, outcome=state.outcome,
                                     mode=state.mode, note=state.note, updated_ms=state.updated_ms,
                                     updated_by=state.updated_by)


def alert_with_state(alert: Alert, state: AlertState) -> alerts_pb2.Alert:
    msg = alert_to_proto(alert)
    msg.lifecycle.CopyFrom(lifecycle_to_proto(state))
    return msg


# Every alert of one vehicle (or of the fleet) when an action looks one up by id.
_LOOKUP_LIMIT = 1 << 30


class AlertServicer(alerts_pb2_grpc.AlertServiceServicer):
    """Lists and streams alerts with their lifecycle; operators with write acknowledge, assign and resolve them.

    ``states`` is the lifecycle log (``configs.alert_states.AlertStateLog``, durable beside the checkpoints);
    without one the lifecycle is kept in memory only.
    """

    def __init__(self, backend: FleetBackend, hub: AlertHub, states: AlertStateLog | None = None,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.backend = backend
        self.hub = hub
        self.states = states if states is not None else AlertStateLog(None)
        self.clock_ms = clock_ms

    async def ListAlerts(self, request: alerts_pb2.AlertFilter, context: grpc.aio.ServicerContext) -> alerts_pb2.AlertList:
        await _require(context, read=True, request=request)
        if problem := _check_filter(request):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        wanted = alert_filter_from_proto(request)
        if not request.states:
            alerts = await self.backend.alerts(wanted)
            return alerts_pb2.AlertList(alerts=[alert_with_state(a, self.states.get(a)) for a in alerts])
        # The lifecycle lives here, not in the twins: ask for every matching alert, keep the wanted states, then
        # apply the limit (newest last, as the backends do), so a state filter never returns too few.
        everything = await self.backend.alerts(replace(wanted, limit=_LOOKUP_LIMIT))
        states = set(request.states)
        kept = [(a, state) for a in everything if (state := self.states.get(a)).state in states]
        return alerts_pb2.AlertList(alerts=[alert_with_state(a, state) for a, state in kept[-wanted.limit:]])

    async def WatchAlerts(self, request: alerts_pb2.AlertFilter,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[alerts_pb2.Alert]:
        await _require(context, read=True, request=request)
        if problem := _check_filter(request):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        wanted = alert_filter_from_proto(request)
        queue = self.hub.subscribe()
        try:
            while True:
                item = await queue.get()
                if item is _CLOSING:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "server shutting down")
                if item is _LAGGED:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                        "watcher fell behind; catch up with ListAlerts(since_ms) and watch again")
                alert, state = (item.alert, item.state) if isinstance(item, StateChange) else (item, None)
                if wanted.matches(alert):
                    state = state or self.states.get(alert)
                    if not request.states or state.state in request.states:
                        yield alert_with_state(alert, state)
        finally:
            self.hub.unsubscribe(queue)

    async def Acknowledge(self, request: alerts_pb2.AlertAction, context: grpc.aio.ServicerContext) -> alerts_pb2.Alert:
        return await self._act("acknowledge", request, context)

    async def Assign(self, request: alerts_pb2.AlertAction, context: grpc.aio.ServicerContext) -> alerts_pb2.Alert:
        return await self._act("assign", request, context)

    async def Resolve(self, request: alerts_pb2.AlertAction, context: grpc.aio.ServicerContext) -> alerts_pb2.Alert:
        return await self._act("resolve", request, context)

    async def _act(self, action: str, request: alerts_pb2.AlertAction,
                   context: grpc.aio.ServicerContext) -> alerts_pb2.Alert:
        claims = await _require(context, read=True, request=request)
        method = action.capitalize()
        if not claims.write:  # changing an alert is a write: an operator credential minted with --write
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{method}: operator credential {claims.sub!r} may only read (mint it with --write)")
        if request.vehicle_id and not VEHICLE_ID_PATTERN.match(request.vehicle_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"vehicle_id={request.vehicle_id[:80]!r}: not a vehicle id")
        if not request.alert_id or len(request.alert_id) > 64:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"alert_id={request.alert_id[:80]!r}: not an alert id")
        fields = {"assignee": request.assignee, "outcome": request.outcome, "mode": request.mode, "note": request.note}
        try:  # refuse bad input before looking the alert up
            check_change(AlertState(request.alert_id, "", "", 0), action, **fields)
        except ValueError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{method}: {error}")
        wanted = AlertFilter(vehicle_id=request.vehicle_id or None, limit=_LOOKUP_LIMIT)
        alert = next((a for a in await self.backend.alerts(wanted) if a.alert_id == request.alert_id), None)
        if alert is None:
            where = f" of vehicle_id={request.vehicle_id!r}" if request.vehicle_id else ""
            await context.abort(grpc.StatusCode.NOT_FOUND, f"alert_id={request.alert_id!r}{where}: no such alert")
        try:
            state = await asyncio.to_thread(self.states.change, alert, action, by=claims.sub, now_ms=self.clock_ms(),
                                            **fields)
        except ValueError as error:  # e.g. already resolved
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{method}: {error}")
        self.hub.publish([StateChange(alert, state)])
        return alert_with_state(alert, state)


class TwinServicer(twin_pb2_grpc.TwinServiceServicer):
    def __init__(self, backend: FleetBackend) -> None:
        self.backend = backend

    async def GetTwin(self, request: twin_pb2.GetTwinRequest, context: grpc.aio.ServicerContext) -> twin_pb2.TwinSummary:
        await _require(context, read=True, request=request)
        if not VEHICLE_ID_PATTERN.match(request.vehicle_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"vehicle_id={request.vehicle_id[:80]!r}: not a vehicle id")
        summary = await self.backend.summary(request.vehicle_id)
        if summary is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"vehicle_id={request.vehicle_id!r}: no twin")
        return summary_to_proto(summary)

    async def ListTwins(self, request: twin_pb2.ListTwinsRequest,
                        context: grpc.aio.ServicerContext) -> twin_pb2.ListTwinsResponse:
        await _require(context, read=True, request=request)
        if request.limit < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"limit={request.limit}: must be >= 0")
        ids = sorted(v for v in await self.backend.list_twins() if v.startswith(request.prefix))
        return twin_pb2.ListTwinsResponse(vehicle_ids=ids[:request.limit] if request.limit else ids)
