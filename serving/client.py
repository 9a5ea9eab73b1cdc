"""Client library: stream telemetry with resume, follow alerts, query twins.

    async with Client("127.0.0.1:50151", token=token) as client:
        stats = await client.stream(batches)          # iterable of Arrow batches / column dicts
        summary = await client.get_twin("V0001")
        async for alert in client.watch_alerts():
            ...

Delivery: every batch gets an Ack with, per vehicle, the (ts, seq) of the newest *durable* frame. The client
keeps every frame after that in memory (bounded by ``max_unacked_frames``) and after a disconnect reconnects
and re-sends exactly those frames; the twins drop any duplicate, so nothing is lost or applied twice.
Durability is judged by time first (``durable_rows``): a counter that restarts (an ECU reboot) sends seqs
below the old watermark, but later. A server that sends no ts (0) is judged by seq alone.

Refusals: frames the server refuses (``Ack.rejected``: ``late`` after a skipped gap, ``bad_key``, ...) are
never reported as delivered. They are counted per reason in ``StreamStats.rejected_by_reason``, listed in
``StreamStats.rejected``, passed to ``on_reject`` as they arrive, and once the source is fully delivered
``stream`` raises ``FramesRejected`` (its ``stats`` holds everything) unless ``raise_on_reject=False``.
Re-sent frames the server already holds are duplicates (``StreamStats.duplicates``), not refusals.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from configs.frames import Columns
from protos.evtwin.v1 import alerts_pb2, alerts_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc, twin_pb2, twin_pb2_grpc
from serving.codec import alert_from_proto, encode_columns, to_columns

log = logging.getLogger(__name__)

# Status codes after which reconnecting and re-sending is the right move.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED})


def select_rows(columns: Columns, rows: np.ndarray) -> Columns:
    return {name: values[rows] for name, values in columns.items()}


@dataclass
class StreamStats:
    frames_sent: int = 0
    batches_sent: int = 0
    frames_acked: int = 0  # frames covered by a durable ack (counted once), refused frames not included
    duplicates: int = 0
    sensor_faults: int = 0
    reconnects: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    acked_seq: dict[str, int] = field(default_factory=dict)  # seq of the newest durable frame (falls on a restart)
    acked_ts: dict[str, int] = field(default_factory=dict)  # its ts (ms); absent: the server sent none
    ack_latency_s: list[float] = field(default_factory=list)
    # Frames the server refused: one dict per frame (vehicle_id, seq, code, message), and counts per code.
    rejected: list[dict[str, Any]] = field(default_factory=list)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


class FramesRejected(Exception):
    """The stream delivered everything it could, but the server refused some frames (``stats.rejected``)."""

    def __init__(self, stats: StreamStats) -> None:
        reasons = ", ".join(f"{count} {code}" for code, count in sorted(stats.rejected_by_reason.items()))
        first = stats.rejected[0]
        super().__init__(f"{len(stats.rejected)} frames refused by the server ({reasons}); first: vehicle_id="
                         f"{first['vehicle_id']!r} seq={first['seq']}: {first['message']}")
        self.stats = stats


@dataclass
class _Pending:
    batch_id: int
    columns: Columns
    sent_at: float
    frames: int


def open_channel(target: str, *, ca_path: str | None = None, cert_path: str | None = None,
                 key_path: str | None = None, server_name: str | None = None,
                 max_message_bytes: int = 16 * 1024 * 1024) -> grpc.aio.Channel:
    """Plaintext channel, or TLS with ``ca_path`` (plus a client certificate for mutual TLS)."""
    options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", max_message_bytes),
                                      ("grpc.max_send_message_length", max_message_bytes)]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    if ca_path is None:
        return grpc.aio.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(ca_path).read_bytes(),
        private_key=Path(key_path).read_bytes() if key_path else None,
        certificate_chain=Path(cert_path).read_bytes() if cert_path else None,
    )
    return grpc.aio.secure_channel(target, credentials, options=options)


def alert_with_lifecycle(msg: alerts_pb2.Alert) -> dict[str, Any]:
    """An alert message as a dict, with its lifecycle (``state``, ``assignee``, ``outcome``, ...) under "lifecycle"."""
    alert = alert_from_proto(msg)
    life = msg.lifecycle
    alert["lifecycle"] = {"state": life.state or "open", "assignee": life.assignee, "outcome": life.outcome,
                          "mode": life.mode, "note": life.note, "updated_ms": life.updated_ms,
                          "updated_by": life.updated_by}
    return alert


class Client:
    def __init__(self, target: str, token: str | None = None, *, channel_factory: Callable[[], grpc.aio.Channel] | None = None,
                 **channel_kwargs: Any) -> None:
        self.target = target
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel_factory = channel_factory or (lambda: open_channel(target, **channel_kwargs))
        self.channel = self._channel_factory()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _reconnect(self) -> None:
        await self.channel.close()
        self.channel = self._channel_factory()

    # ----- queries ---------------------------------------------------------------------------------
    async def get_twin(self, vehicle_id: str) -> twin_pb2.TwinSummary:
        stub = twin_pb2_grpc.TwinServiceStub(self.channel)
        return await stub.GetTwin(twin_pb2.GetTwinRequest(vehicle_id=vehicle_id), metadata=self.metadata)

    async def list_twins(self, prefix: str = "", limit: int = 0) -> list[str]:
        stub = twin_pb2_grpc.TwinServiceStub(self.channel)
        reply = await stub.ListTwins(twin_pb2.ListTwinsRequest(prefix=prefix, limit=limit), metadata=self.metadata)
        return list(reply.vehicle_ids)

    async def list_alerts(self, **filters: Any) -> list[dict[str, Any]]:
        stub = alerts_pb2_grpc.AlertServiceStub(self.channel)
        reply = await stub.ListAlerts(alerts_pb2.AlertFilter(**filters), metadata=self.metadata)
        return [alert_with_lifecycle(a) for a in reply.alerts]

    async def watch_alerts(self, **filters: Any) -> AsyncIterator[dict[str, Any]]:
        stub = alerts_pb2_grpc.AlertServiceStub(self.channel)
        async for alert in stub.WatchAlerts(alerts_pb2.AlertFilter(**filters), metadata=self.metadata):
            yield alert_with_lifecycle(alert)

    async def change_alert(self, action: str, alert_id: str, **fields: str) -> dict[str, Any]:
        """``action``: acknowledge | assign | resolve; ``fields``: vehicle_id, assignee, outcome, mode, note."""
        methods = {"acknowledge": "Acknowledge", "assign": "Assign", "resolve": "Resolve"}
        if action not in methods:
            raise ValueError(f"action={action!r}: expected one of {tuple(methods)}")
        stub = alerts_pb2_grpc.AlertServiceStub(self.channel)
        reply = await getattr(stub, methods[action])(alerts_pb2.AlertAction(alert_id=alert_id, **fields),
                                                     metadata=self.metadata)
        return alert_with_lifecycle(reply)

    # ----- telemetry -------------------------------------------------------------------------------
    async def stream(self, batches: Iterable[Any] | AsyncIterable[Any], *, max_unacked_frames: int = 50_000,
                     max_reconnects: int = 20, on_alert: Callable[[dict[str, Any]], None] | None = None,
                     on_ack: Callable[[telemetry_pb2.Ack], None] | None = None,
                     on_reconnect: Callable[[grpc.aio.AioRpcError], None] | None = None,
                     on_reject: Callable[[dict[str, Any]], None] | None = None,
                     raise_on_reject: bool = True, convert: Callable[[Any], Any] | None = None) -> StreamStats:
        """Send every batch; reconnect and resume (from the durable acks) on retryable failures.

        Returns the stats once every batch is written and the server has answered them all. Raises
        ``FramesRejected`` then if the server refused frames (``raise_on_reject=False``: only counted).
        ``convert`` turns each source batch into contract columns first, e.g. a
        ``serving.catalog_source.CatalogConverter`` for rows in a real vehicle's own names and units.
        """
        session = _StreamSession(self, max_unacked_frames, on_alert, on_ack, on_reject)
        # The source is pumped by one task for the whole call, so a broken connection never cancels
        # (and so closes) the caller's generator mid-item.
        feed: asyncio.Queue = asyncio.Queue(maxsize=2)
        pump = asyncio.create_task(_pump(batches, feed, convert))
        try:
            while True:
                try:
                    await session.run(feed)
                    if session.stats.rejected and raise_on_reject:
                        raise FramesRejected(session.stats)
                    return session.stats
                except grpc.aio.AioRpcError as error:
                    if error.code() not in RETRYABLE or session.stats.reconnects >= max_reconnects:
                        raise
                    session.stats.reconnects += 1
                    if on_reconnect:
                        on_reconnect(error)
                    log.info("stream broke (%s: %s); resuming from the last ack", error.code().name, error.details())
                    await asyncio.sleep(min(0.05 * 2 ** min(session.stats.reconnects, 6), 2.0))
                    await self._reconnect()
        finally:
            pump.cancel()


_SOURCE_END = object()


class SourceError(Exception):
    """The caller's batch source raised; carried to the writer so the stream stops instead of waiting."""


async def _pump(batches: Iterable[Any] | AsyncIterable[Any], feed: asyncio.Queue,
                convert: Callable[[Any], Any] | None = None) -> None:
    try:
        async for batch in _aiter(batches):
            columns = to_columns(batch if convert is None else convert(batch))
            if convert is not None and not len(columns["seq"]):
                continue  # every row of this batch was a duplicate or had no time
            await feed.put(columns)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        await feed.put(SourceError(error))
        return
    await feed.put(_SOURCE_END)


async def _aiter(batches: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if hasattr(batches, "__aiter__"):
        async for batch in batches:  # type: ignore[union-attr]
            yield batch
    else:
        for batch in batches:  # type: ignore[union-attr]
            yield batch


# Below any valid seq (counters may start at 0): a vehicle without an ack has nothing durable yet.
_NOTHING_ACKED = -1


class _StreamSession:
    """State that survives reconnects: durable acks and the frames not yet covered by them."""

    def __init__(self, client: Client, max_unacked_frames: int, on_alert: Callable | None, on_ack: Callable | None,
                 on_reject: Callable | None = None) -> None:
        self.client = client
        self.on_reject = on_reject
        self.max_unacked_frames = max_unacked_frames
        self.on_alert = on_alert
        self.on_ack = on_ack
        self.stats = StreamStats()
        self.pending: deque[_Pending] = deque()  # sent, not all frames durable yet
        self.awaiting_ack = 0  # frames sent on the current call whose Ack has not come back
        self.window = asyncio.Condition()
        self.next_batch_id = 1
        self.seen_alerts: set[str] = set()
        self.seen_refusals: set[tuple[str, int]] = set()
        self.held: _Pending | None = None  # taken from the source, not yet written on the current call
        self.finished: bool | None = None
        # The end-of-source marker is taken from the feed once; a call after a reconnect must not wait for it.
        self.source_ended = False

    async def run(self, feed: asyncio.Queue) -> None:
        call = telemetry_pb2_grpc.TelemetryServiceStub(self.client.channel).Stream(metadata=self.client.metadata)
        self.awaiting_ack = 0
        reader = asyncio.create_task(self._read(call))
        writer = asyncio.create_task(self._write(call, feed))
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if writer in done and isinstance(writer.exception(), SourceError):
                raise writer.exception().args[0]
            # Otherwise the call's status is the truth (a failed write is only its symptom).
            await reader
        finally:
            reader.cancel()
            writer.cancel()
        code = await call.code()
        if code != grpc.StatusCode.OK:
            raise grpc.aio.AioRpcError(code, await call.initial_metadata(), await call.trailing_metadata(), await call.details())
        if self.finished is False:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       "server ended the stream before the client finished")

    async def _write(self, call: Any, feed: asyncio.Queue) -> None:
        self.finished = False
        for item in list(self.pending):  # resume: only frames above the durable ack
            await self._send(call, item, resend=True)
        self.held = None  # it was in pending, so it has just been resent
        while not self.source_ended:
            if self.held is None:
                columns = await feed.get()
                if columns is _SOURCE_END:
                    self.source_ended = True
                    break
                if isinstance(columns, SourceError):
                    raise columns
                if len(columns["seq"]) == 0:
                    continue
                # Recorded before any await that a broken call could cancel: it is resent on reconnect.
                self.held = _Pending(self.next_batch_id, columns, 0.0, len(columns["seq"]))
                self.next_batch_id += 1
                self.pending.append(self.held)
            await self._send(call, self.held, resend=False)
            self.held = None
        self.finished = True
        await call.done_writing()

    async def _send(self, call: Any, item: _Pending, resend: bool) -> None:
        columns = item.columns
        if resend:
            keep = ~durable_rows(columns, self.stats.acked_seq, self.stats.acked_ts)
            if not keep.any():
                return
            columns = select_rows(columns, np.flatnonzero(keep))
        frames = len(columns["seq"])
        async with self.window:
            await self.window.wait_for(lambda: self.awaiting_ack == 0 or self.awaiting_ack + frames <= self.max_unacked_frames)
            self.awaiting_ack += frames
        item.sent_at = time.perf_counter()
        await call.write(encode_columns(columns, item.batch_id))
        self.stats.batches_sent += 1
        self.stats.frames_sent += frames

    async def _read(self, call: Any) -> None:
        while True:
            reply = await call.read()
            if reply is grpc.aio.EOF:
                return
            if reply.HasField("ack"):
                await self._on_ack(reply.ack)
            else:
                alert = alert_from_proto(reply.alert)
                if alert["alert_id"] not in self.seen_alerts:  # a resend can raise the same alert again
                    self.seen_alerts.add(alert["alert_id"])
                    self.stats.alerts.append(alert)
                    if self.on_alert:
                        self.on_alert(alert)

    async def _on_ack(self, ack: telemetry_pb2.Ack) -> None:
        now = time.perf_counter()
        for vehicle_ack in ack.acks:
            self._advance(vehicle_ack.vehicle_id, int(vehicle_ack.seq), int(vehicle_ack.ts))
        self.stats.duplicates += ack.duplicates
        self.stats.sensor_faults += ack.sensor_faults
        for refusal in ack.rejected:
            if (refusal.vehicle_id, refusal.seq) in self.seen_refusals:
                continue  # a frame re-sent after a reconnect is refused again: counted once
            self.seen_refusals.add((refusal.vehicle_id, refusal.seq))
            rejected = {"vehicle_id": refusal.vehicle_id, "seq": int(refusal.seq), "code": refusal.code,
                        "message": refusal.message}
            self.stats.rejected.append(rejected)
            self.stats.frames_acked -= 1  # its seq is under the ack watermark, but it was not applied
            self.stats.rejected_by_reason[refusal.code] = self.stats.rejected_by_reason.get(refusal.code, 0) + 1
            if self.on_reject:
                self.on_reject(rejected)
        for item in self.pending:
            if item.batch_id == ack.batch_id:
                self.stats.ack_latency_s.append(now - item.sent_at)
                break
        while self.pending and self._durable(self.pending[0]):
            self.stats.frames_acked += self.pending.popleft().frames
        async with self.window:
            self.awaiting_ack = max(0, self.awaiting_ack - ack.frames)
            self.window.notify_all()
        if self.on_ack:
            self.on_ack(ack)

    def _advance(self, vehicle_id: str, seq: int, ts: int) -> None:
        """Move a vehicle's durable watermark forward, never back (acks of one vehicle can arrive out of order)."""
        acked_seq, acked_ts = self.stats.acked_seq, self.stats.acked_ts
        if ts > 0:  # by time, then seq: after a counter restart seq falls back while ts moves on
            if (ts, seq) > (acked_ts.get(vehicle_id, 0), acked_seq.get(vehicle_id, _NOTHING_ACKED)):
                acked_seq[vehicle_id], acked_ts[vehicle_id] = seq, ts
        elif seq > acked_seq.get(vehicle_id, _NOTHING_ACKED):  # a server that sends no ts: by seq alone
            acked_seq[vehicle_id] = seq

    def _durable(self, item: _Pending) -> bool:
        return bool(durable_rows(item.columns, self.stats.acked_seq, self.stats.acked_ts).all())


def durable_rows(columns: Columns, acked_seq: Mapping[str, int], acked_ts: Mapping[str, int]) -> np.ndarray:
    """Per row, whether the server's acks cover it: the client may forget it and never re-send it.

    A vehicle's ack names its newest durable frame (``acked_ts``, ``acked_seq``), and a vehicle's frames are
    applied in time order, so a frame is durable when its ts is earlier, or equal with a seq at or below
    (a later seq at the same ts is not applied yet; a restarted counter's frames are later in time, never
    equal). A vehicle without an ack ts (an older server) is judged by seq alone: durable when seq <= it.
    """
    ids, inverse = np.unique(np.asarray(columns["vehicle_id"]).astype(str), return_inverse=True)
    seq_mark = np.array([acked_seq.get(v, _NOTHING_ACKED) for v in ids], dtype=np.int64)[inverse]
    ts_mark = np.array([acked_ts.get(v, 0) for v in ids], dtype=np.int64)[inverse]
    seq = np.asarray(columns["seq"], dtype=np.int64)
    ts = np.asarray(columns["ts"], dtype=np.int64)
    by_time = (ts < ts_mark) | ((ts == ts_mark) & (seq <= seq_mark))
    return np.where(ts_mark > 0, by_time, seq <= seq_mark)
