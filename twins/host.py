"""Plain (Ray-free) hosting logic: routing, and ``TwinHost``, the contents of a host actor (it ingests
``configs.frames.FrameBatch``).

``TwinHost`` holds the twins of one host (one vehicle by default, a shard with ``twins_per_actor > 1``),
restores them from the checkpoint store on first contact, makes every twin an ingest call changed durable
*before* answering and acknowledges only what is durable. With ``twins.durability: "wal"`` (default) that is
one synced append of the call's frames to the host's write-ahead log (``twins.wal``), with snapshots
(checkpoints) every ``snapshot_every_frames`` / ``snapshot_every_s`` and restores that replay the log after the
snapshot; with ``"checkpoint"`` it is every changed twin's checkpoint (group-committed). The rest of this
paragraph describes checkpoint mode; wal mode is the same with "log append" for "checkpoint" (``checkpoint_uri=None``:
an ephemeral host, for simulations: no checkpoints, no alert store, acknowledges what it applied, evicts
nothing). Applying is all-or-nothing per
twin: its alerts are appended to the alert store, then its checkpoint is written; if either write fails
the twin is dropped from memory (the next contact restores the last durable checkpoint), its ack does not
move, its alerts are not reported and ``IngestResult.not_durable`` names it, so re-sent frames are applied
again and raise their alerts again once the store recovers. Model calls and fine-tunes
go through small injected interfaces (``Predictor``, ``Runner``) so a slow or failing service can
never block ingestion and tests need no cluster.

>>> route("vehicle-0001", 8) == route("vehicle-0001", 8)
True
>>> 0 <= route("vehicle-0001", 8) < 8
True
"""
from __future__ import annotations

import contextlib
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from configs.frames import FrameBatch
from configs.settings import TwinsConfig
from twins.personalise import fit_personal_head
from twins.reorder import NO_SEQ
from twins.store import AlertStore, CheckpointStore
from twins.twin import AnomalyModel, VehicleTwin, ingest_many
from twins.types import Alert, AlertFilter, IngestResult
from twins.wal import LogRecord, WriteAheadLog, log_root, read_segment, segment_of, segments

_ALERT_LOG = 10_000


def route(vehicle_id: str, shards: int) -> int:
    """Stable shard of a vehicle (blake2b, not Python's salted ``hash``): same answer on every process."""
    digest = hashlib.blake2b(vehicle_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


class Placement:
    """Which host holds which vehicle, decided as vehicles arrive (no fleet size known in advance).

    A new vehicle goes to the least-loaded host among the first ``min(max_hosts, max(min_hosts,
    ceil(vehicles / twins_per_host)))``: one host until it holds ``twins_per_host`` twins, then a second,
    and so on up to ``max_hosts``, after which hosts grow past ``twins_per_host`` evenly. A vehicle never
    moves (its twin stays resident where it is), so routing needs no coordination with the hosts.

    >>> placement = Placement(twins_per_host=2, max_hosts=2)
    >>> [placement.place(v) for v in ["a", "b", "c", "a", "d", "e"]]
    [0, 0, 1, 0, 1, 0]
    >>> placement.loads, placement.host_of("zz")
    ([3, 2], None)
    """

    def __init__(self, twins_per_host: int, max_hosts: int, min_hosts: int = 1) -> None:
        if twins_per_host < 1:
            raise ValueError(f"twins_per_host={twins_per_host}: must be >= 1")
        if max_hosts < 1:
            raise ValueError(f"max_hosts={max_hosts}: must be >= 1")
        self.twins_per_host = twins_per_host
        self.max_hosts = max_hosts
        self.min_hosts = max(1, min(min_hosts, max_hosts))
        self.assigned: dict[str, int] = {}
        self.loads: list[int] = []

    def host_of(self, vehicle_id: str) -> int | None:
        """The vehicle's host, None if it was never placed (a lookup places nothing)."""
        return self.assigned.get(vehicle_id)

    def place(self, vehicle_id: str) -> int:
        host = self.assigned.get(vehicle_id)
        if host is None:
            needed = -(-(len(self.assigned) + 1) // self.twins_per_host)
            hosts = min(self.max_hosts, max(self.min_hosts, needed))
            self.loads.extend([0] * (hosts - len(self.loads)))
            host = min(range(hosts), key=self.loads.__getitem__)
            self.assigned[vehicle_id] = host
            self.loads[host] += 1
        return host


def checkpoint_summary(data: bytes, cfg: TwinsConfig) -> dict[str, Any]:
    """A twin's summary read from its checkpoint bytes (no host, no model): what a lookup of a released twin sees."""
    twin = VehicleTwin.from_bytes(data, None, cfg)
    summary = twin.summary()
    summary["acked_seq"] = twin.applied_seq  # a checkpoint holds only acknowledged state
    return summary


def _waves(vehicle_ids: list[str]) -> list[list[int]]:
    """Consecutive runs of positions with no vehicle twice (a batch built by ``FrameBatch.from_columns`` is one run)."""
    waves: list[list[int]] = [[]]
    seen: set[str] = set()
    for i, vehicle_id in enumerate(vehicle_ids):
        if vehicle_id in seen:
            waves.append([])
            seen = set()
        waves[-1].append(i)
        seen.add(vehicle_id)
    return [w for w in waves if w]


# ---------------------------------------------------------------------------- injected services
@dataclass
class PredictionBatch:
    """Model answers for rows (one per vehicle) in request order."""

    risk: list[dict[int, float]]
    severity: list[int | None]
    mode: list[str | None]
    contributions: list[list[tuple[str, float]]]


class Predictor(Protocol):
    def submit(self, vehicle_ids: list[str], window_end_ms: list[int], X: np.ndarray) -> Any: ...
    def poll(self, ticket: Any) -> PredictionBatch | None: ...  # None = not ready; raises on failure


class Runner(Protocol):
    """Runs a function somewhere (inline, a thread, a Ray task) and lets the caller poll it."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any: ...
    def poll(self, ticket: Any) -> tuple[bool, Any]: ...


class InlineRunner:
    """Runs at once, in the caller (unit tests, single-process use)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    def poll(self, ticket: Any) -> tuple[bool, Any]:
        return True, ticket


@dataclass
class _Outstanding:
    ticket: Any
    requests: list[tuple[str, int]]
    sent_at: float


@dataclass
class HostSettings:
    """Everything a host needs, picklable (configs travel as JSON-able dicts)."""

    twins: TwinsConfig
    window_ms: int
    stride_ms: int
    checkpoint_uri: str | None  # None: ephemeral twins (the what-if), never written, never evicted
    extra: dict[str, Any] = field(default_factory=dict)


class TwinHost:
    """Twins of one host actor. Every method is synchronous and does no Ray calls itself."""

    def __init__(self, settings: HostSettings, anomaly_model: AnomalyModel | None = None,
                 predictor: Predictor | None = None, runner: Runner | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.cfg = settings.twins
        self.model = anomaly_model
        durable = settings.checkpoint_uri is not None
        self.store = CheckpointStore(settings.checkpoint_uri) if durable else None
        self.alert_store = AlertStore(settings.checkpoint_uri) if durable else None
        self._history_loaded = not durable  # alerts raised before this host started, read on the first query
        self.predictor = predictor
        self.runner = runner or InlineRunner()
        self.clock = clock
        self.twins: dict[str, VehicleTwin] = {}
        self.last_used: dict[str, float] = {}
        self.acked: dict[str, int] = {}
        self.acked_ts: dict[str, int] = {}  # the ts of the acked frame (``IngestResult.ack_ts``)
        self.alert_log: deque[Alert] = deque(maxlen=_ALERT_LOG)
        self.pending_alerts: list[Alert] = []  # from predictions, delivered with the next answer
        self.outstanding: _Outstanding | None = None
        self.predictions_failed = 0
        self.predictions_answered = 0
        self.retry_after = float("-inf")
        self.tunes: dict[str, Any] = {}
        self.restored = 0
        # Write-ahead log mode (twins.durability "wal"): the records of each twin since its snapshot, in log
        # order (what a restore replays), how many frames and since when, and per segment how many records
        # still need it (a segment no record needs is deleted).
        self.wal: WriteAheadLog | None = None
        self.unsnapshotted: dict[str, list[LogRecord]] = {}
        self.frames_since_snapshot: dict[str, int] = {}
        self.logged_since: dict[str, float] = {}
        self.segment_refs: dict[str, int] = {}
        self.replayed = 0
        if durable and self.cfg.durability == "wal":
            self.wal = WriteAheadLog(log_root(settings.checkpoint_uri))
            self._load_log()

    # ------------------------------------------------------------------ twins
    def twin(self, vehicle_id: str) -> VehicleTwin:
        """The resident twin, else restored from its last checkpoint, else a new one (first contact)."""
        twin = self.twins.get(vehicle_id)
        if twin is None:
            twin = self._restore(vehicle_id)
            if twin is not None:
                self.restored += 1
                self.acked[vehicle_id], self.acked_ts[vehicle_id] = twin.applied_mark
            else:
                twin = VehicleTwin(vehicle_id, self.cfg, self.settings.window_ms, self.settings.stride_ms, self.model)
            self.twins[vehicle_id] = twin
        self.last_used[vehicle_id] = self.clock()
        return twin

    def _restore(self, vehicle_id: str) -> VehicleTwin | None:
        """The twin's durable state: its last checkpoint, then (wal mode) its log records after that snapshot
        replayed through the same ingest step (their alerts were stored and reported when first applied);
        None if neither exists."""
        data = self.store.get(vehicle_id) if self.store is not None else None
        twin = None if data is None else VehicleTwin.from_bytes(data, self.model, self.cfg)
        records = self.unsnapshotted.get(vehicle_id)
        if not records:
            return twin
        if twin is None:
            twin = VehicleTwin(vehicle_id, self.cfg, self.settings.window_ms, self.settings.stride_ms, self.model)
        position = twin.log_position
        stale = [r for r in records if r.position <= position]  # already in the snapshot
        self._release_records(stale)
        records[:] = [r for r in records if r.position > position]
        if not records:  # all in the snapshot already
            del self.unsnapshotted[vehicle_id]
            self.frames_since_snapshot.pop(vehicle_id, None)
            self.logged_since.pop(vehicle_id, None)
            self._drop_covered_segments()
        else:
            self.frames_since_snapshot[vehicle_id] = sum(len(r.columns["seq"]) for r in records)
        for record in records:
            ingest_many([twin], [record.columns])
            self.replayed += 1
        return twin

    def _load_log(self) -> None:
        """Read the log once (host start): every record, indexed by vehicle, for restores to replay."""
        assert self.wal is not None
        root = log_root(self.settings.checkpoint_uri)
        for segment in segments(root):
            # A segment without records is left alone: it may be another live host's, just opened.
            for record in read_segment(root, segment):
                self._remember(record)
            # This host's segments sort after every segment it found (whatever this machine's clock says).
            self.wal.follow(segment)

    def _remember(self, record: LogRecord) -> None:
        if record.vehicle_id not in self.unsnapshotted:
            self.logged_since[record.vehicle_id] = self.clock()
        self.unsnapshotted.setdefault(record.vehicle_id, []).append(record)
        self.frames_since_snapshot[record.vehicle_id] = (self.frames_since_snapshot.get(record.vehicle_id, 0)
                                                         + len(record.columns["seq"]))
        segment = segment_of(record.position)
        self.segment_refs[segment] = self.segment_refs.get(segment, 0) + 1

    def _release_records(self, records: Iterable[LogRecord]) -> None:
        for record in records:
            self.segment_refs[segment_of(record.position)] -= 1

    def ingest(self, block: FrameBatch) -> IngestResult:
        result = IngestResult()
        dirty: list[str] = []
        logged: list[tuple[str, dict[str, np.ndarray]]] = []  # the vehicle runs that changed a twin, in order
        parts = list(block.parts())
        twins = [self.twin(vehicle_id) for vehicle_id, _ in parts]
        # The applied mark is (seq, ts): a restarted counter can end a call at the seq it had before, later.
        befores = [(twin.applied_mark, twin.buf_seq.size) for twin in twins]
        # All the block's twins in one batched step: windows closed together, one fleet-model call.
        steps = []
        for wave in _waves([vehicle_id for vehicle_id, _ in parts]):
            steps += ingest_many([twins[i] for i in wave], [parts[i][1] for i in wave])
        for (vehicle_id, columns), twin, before, step in zip(parts, twins, befores, steps, strict=False):
            result.alerts.extend(step.alerts)
            result.rejected.extend(step.rejected)
            result.applied += step.applied
            result.duplicates += step.duplicates
            # A call with only re-sent frames still changes the duplicate counter: checkpointed too.
            # The log gets every run (a run that changed no watermark may still have changed a counter: the
            # replay must see it to give the same state); only changed twins need a new ack.
            logged.append((vehicle_id, columns))
            if (twin.applied_mark, twin.buf_seq.size) != before or step.duplicates:
                dirty.append(vehicle_id)
            elif vehicle_id in self.acked:
                self._answer_ack(vehicle_id, result)
        changed = len(dirty)
        self._poll_services(result, dirty)
        result.alerts.extend(self.pending_alerts)
        self.pending_alerts = []
        if self.wal is not None:
            self._persist_logged(logged, list(dict.fromkeys(dirty[changed:])), result, dirty[:changed])
        else:
            self._persist(dict.fromkeys(dirty), result)
        self._request_predictions()
        self._request_fine_tunes()
        self.alert_log.extend(result.alerts)
        self.evict_idle()
        return result

    def _persist(self, vehicle_ids: Iterable[str], result: IngestResult) -> None:
        """Make each changed twin durable (its alerts, then its checkpoint) and acknowledge it, or roll it back.

        The checkpoints of one call are group-committed (``CheckpointStore.group``): one journal commit for
        all of them, acknowledged only once it succeeded; a failed commit rolls back every twin of the group."""
        alerts_by_vehicle: dict[str, list[Alert]] = {}
        for alert in result.alerts:
            alerts_by_vehicle.setdefault(alert.vehicle_id, []).append(alert)
        written: dict[str, tuple[int, int]] = {}
        failed: dict[str, OSError] = {}
        try:
            with self.store.group() if self.store is not None else contextlib.nullcontext():
                for vehicle_id in vehicle_ids:
                    try:
                        if self.alert_store is not None:
                            self.alert_store.append(vehicle_id, alerts_by_vehicle.get(vehicle_id, []))
                        twin = self.twins[vehicle_id]
                        if self.store is not None:
                            self.store.put(vehicle_id, twin.to_bytes())
                        written[vehicle_id] = twin.applied_mark
                    except OSError as error:
                        failed[vehicle_id] = error
        except OSError as error:  # the group commit failed: none of its twins is acknowledged
            failed.update(dict.fromkeys(written, error))
            written = {}
        for vehicle_id, (seq, ts) in written.items():
            # Only now is the effect durable: acknowledge up to the applied watermark.
            self.acked[vehicle_id], self.acked_ts[vehicle_id] = seq, ts
            self._answer_ack(vehicle_id, result)
        for vehicle_id, error in failed.items():
            self._roll_back(vehicle_id)
            result.not_durable[vehicle_id] = f"checkpoint store {self.settings.checkpoint_uri!r}: {error}"
            if vehicle_id in self.acked:
                self._answer_ack(vehicle_id, result)
        if failed:
            result.alerts = [a for a in result.alerts if a.vehicle_id not in failed]

    def _answer_ack(self, vehicle_id: str, result: IngestResult) -> None:
        result.acks[vehicle_id] = self.acked[vehicle_id]
        result.ack_ts[vehicle_id] = self.acked_ts.get(vehicle_id, NO_SEQ)

    def _persist_logged(self, logged: list[tuple[str, dict[str, np.ndarray]]], serviced: list[str],
                        result: IngestResult, changed_ids: Iterable[str] = ()) -> None:
        """Write-ahead log mode: the call's alerts, then one synced log append of its frames, then the acks; a
        failed write rolls back the twins it concerns (their next contact restores snapshot + log, without this
        call). Twins changed by a prediction or fine-tune (``serviced``: not frames, not in the log) and twins
        due for a snapshot are snapshotted after the acks; a failed snapshot un-acks nothing."""
        alerts_by_vehicle: dict[str, list[Alert]] = {}
        for alert in result.alerts:
            alerts_by_vehicle.setdefault(alert.vehicle_id, []).append(alert)
        vehicles = list(dict.fromkeys(v for v, _ in logged))
        changed = set(changed_ids)
        failed: dict[str, str] = {}
        for vehicle_id in dict.fromkeys(vehicles + serviced):
            try:
                self.alert_store.append(vehicle_id, alerts_by_vehicle.get(vehicle_id, []))  # type: ignore[union-attr]
            except OSError as error:
                failed[vehicle_id] = f"alert store {self.settings.checkpoint_uri!r}: {error}"
        to_log = [(v, columns) for v, columns in logged if v not in failed]
        if to_log:
            try:
                position = self.wal.append(to_log)  # type: ignore[union-attr]
            except OSError as error:
                failed.update(dict.fromkeys((v for v, _ in to_log),
                                            f"write-ahead log {log_root(self.settings.checkpoint_uri)!r}: {error}"))
            else:
                for vehicle_id, columns in to_log:
                    self._remember(LogRecord(position, vehicle_id, columns))
        for vehicle_id in vehicles:
            if vehicle_id not in failed and (vehicle_id in changed or vehicle_id in self.acked):
                self.acked[vehicle_id], self.acked_ts[vehicle_id] = self.twins[vehicle_id].applied_mark
                self._answer_ack(vehicle_id, result)
        for vehicle_id, reason in failed.items():
            self._roll_back(vehicle_id)
            result.not_durable[vehicle_id] = reason
            if vehicle_id in self.acked:
                self._answer_ack(vehicle_id, result)
        if failed:
            result.alerts = [a for a in result.alerts if a.vehicle_id not in failed]
        now = self.clock()
        due = [v for v, n in self.frames_since_snapshot.items()
               if v in self.twins and (n >= self.cfg.snapshot_every_frames
                                       or now - self.logged_since.get(v, now) >= self.cfg.snapshot_every_s)]
        serviced = [v for v in serviced if v not in failed]
        for vehicle_id in self._snapshot(list(dict.fromkeys(serviced + due))):
            if vehicle_id in serviced:  # its prediction or head is not durable: forget it (the frames are)
                self._roll_back(vehicle_id)

    def _snapshot(self, vehicle_ids: list[str]) -> dict[str, OSError]:
        """Checkpoint twins (group commit) with the log position they include; drop the log segments no twin
        needs any more. The twins whose snapshot failed, with the error (they keep their log records)."""
        if not vehicle_ids or self.store is None:
            return {}
        written: list[str] = []
        failed: dict[str, OSError] = {}
        try:
            with self.store.group():
                for vehicle_id in vehicle_ids:
                    twin = self.twins[vehicle_id]
                    records = self.unsnapshotted.get(vehicle_id)
                    if records:
                        twin.log_position = records[-1].position
                    try:
                        self.store.put(vehicle_id, twin.to_bytes())
                        written.append(vehicle_id)
                    except OSError as error:
                        failed[vehicle_id] = error
        except OSError as error:
            failed.update(dict.fromkeys(written, error))
            written = []
        for vehicle_id in written:
            self._release_records(self.unsnapshotted.pop(vehicle_id, []))
            self.frames_since_snapshot.pop(vehicle_id, None)
            self.logged_since.pop(vehicle_id, None)
            self.acked[vehicle_id], self.acked_ts[vehicle_id] = self.twins[vehicle_id].applied_mark
        if written:
            self._drop_covered_segments()
        return failed

    def _drop_covered_segments(self) -> None:
        """Delete the log segments no twin's restore needs (every record in them is in a snapshot)."""
        if self.wal is None:
            return
        for segment, refs in list(self.segment_refs.items()):
            if refs == 0 and segment != self.wal.segment:
                self.wal.delete(segment)
                del self.segment_refs[segment]

    def _roll_back(self, vehicle_id: str) -> None:
        """Forget the in-memory twin: its next contact restores the last durable checkpoint."""
        self.twins.pop(vehicle_id, None)
        self.last_used.pop(vehicle_id, None)

    def _checkpoint(self, vehicle_id: str) -> None:
        if self.wal is not None:
            failed = self._snapshot([vehicle_id])
            if failed:
                raise failed[vehicle_id]
            return
        twin = self.twins[vehicle_id]
        if self.store is not None:
            self.store.put(vehicle_id, twin.to_bytes())
        # Only now is the effect durable: acknowledge up to the applied watermark.
        self.acked[vehicle_id], self.acked_ts[vehicle_id] = twin.applied_mark

    def checkpoint_all(self) -> int:
        """Checkpoint every resident twin (before a release or shutdown); raises OSError if one fails. In wal
        mode this also closes the log's open segment and deletes it once nothing needs it."""
        if self.wal is not None:
            failed = self._snapshot(list(self.twins))
            if failed:
                raise next(iter(failed.values()))
            self.wal.close()
            self._drop_covered_segments()
            return len(self.twins)
        for vehicle_id in self.twins:
            self._checkpoint(vehicle_id)
        return len(self.twins)

    def evict_idle(self) -> list[str]:
        """Drop twins idle for ``idle_evict_minutes`` (they are checkpointed after every change)."""
        if self.store is None:
            return []  # an evicted twin could not come back
        horizon = self.clock() - self.cfg.idle_evict_minutes * 60.0
        idle = [v for v, t in self.last_used.items() if t < horizon and v in self.twins]
        for vehicle_id in idle:
            if vehicle_id in self.tunes:
                continue  # a fine-tune is in flight for it; evict later
            try:
                self._checkpoint(vehicle_id)
            except OSError:
                continue  # the store is failing: keep it resident (its acked state is durable), evict later
            del self.twins[vehicle_id]
            del self.last_used[vehicle_id]
        return idle

    # ------------------------------------------------------------------ model services
    def _request_predictions(self) -> None:
        if self.predictor is None or self.outstanding is not None or self.clock() < self.retry_after:
            return
        requests = [(v, t.take_prediction_request()) for v, t in self.twins.items()]
        requests = [(v, r) for v, r in requests if r is not None]
        if not requests:
            return
        ids = [v for v, _ in requests]
        ends = [int(r[0]) for _, r in requests]
        X = np.stack([r[1] for _, r in requests]).astype(np.float32)
        try:
            ticket = self.predictor.submit(ids, ends, X)
        except Exception:  # a broken service never stops ingestion: retry later
            self._prediction_failed()
            return
        self.outstanding = _Outstanding(ticket, list(zip(ids, ends, strict=False)), self.clock())

    def _prediction_failed(self) -> None:
        self.predictions_failed += 1
        self.outstanding = None
        self.retry_after = self.clock() + self.cfg.prediction_retry_s

    def _poll_services(self, result: IngestResult, dirty: list[str]) -> None:
        if self.outstanding is not None:
            try:
                answer = self.predictor.poll(self.outstanding.ticket)  # type: ignore[union-attr]
            except Exception:
                answer = None
                self._prediction_failed()
            if answer is None and self.outstanding is not None:
                if self.clock() - self.outstanding.sent_at > self.cfg.prediction_timeout_s:
                    self._prediction_failed()
            elif answer is not None:
                for i, (vehicle_id, end_ms) in enumerate(self.outstanding.requests):
                    twin = self.twin(vehicle_id)
                    alerts = twin.apply_prediction(end_ms, answer.risk[i], answer.severity[i], answer.mode[i],
                                                   answer.contributions[i])
                    result.alerts.extend(alerts)
                    dirty.append(vehicle_id)
                self.predictions_answered += len(self.outstanding.requests)
                self.outstanding = None
        for vehicle_id, ticket in list(self.tunes.items()):
            try:
                done, head = self.runner.poll(ticket)
            except Exception:
                done, head = True, None
            if done:
                del self.tunes[vehicle_id]
                if head is not None:
                    self.twin(vehicle_id).install_head(head)
                    dirty.append(vehicle_id)

    def _request_fine_tunes(self) -> None:
        for vehicle_id, twin in self.twins.items():
            if vehicle_id not in self.tunes and twin.fine_tune_due():
                errors, reference = twin.fine_tune_inputs()
                self.tunes[vehicle_id] = self.runner.submit(fit_personal_head, errors, reference, twin.head.version + 1,
                                                            *twin.head_settings())

    def drain(self, timeout_s: float = 5.0, sleep: Callable[[float], None] = time.sleep) -> list[Alert]:
        """Wait (bounded) for outstanding predictions and fine-tunes; checkpoint what they changed."""
        result = IngestResult()
        deadline = self.clock() + timeout_s
        while (self.outstanding is not None or self.tunes) and self.clock() < deadline:
            dirty: list[str] = []
            self._poll_services(result, dirty)
            if self.wal is not None:
                self._persist_logged([], list(dict.fromkeys(dirty)), result)
            else:
                self._persist(dict.fromkeys(dirty), result)
            if self.outstanding is not None or self.tunes:
                sleep(0.01)
        self.alert_log.extend(result.alerts)
        return result.alerts

    # ------------------------------------------------------------------ queries
    def summary(self, vehicle_id: str) -> dict[str, Any] | None:
        """The resident twin's summary, else its checkpoint's (not made resident: a lookup creates nothing)."""
        if vehicle_id not in self.twins:
            if vehicle_id in self.unsnapshotted:  # its checkpoint misses logged frames: restore it (not resident)
                twin = self._restore(vehicle_id)
                summary = twin.summary()  # type: ignore[union-attr]
                summary["acked_seq"] = twin.applied_seq  # type: ignore[union-attr]
                return summary
            data = None if self.store is None else self.store.get(vehicle_id)
            return None if data is None else checkpoint_summary(data, self.cfg)
        summary = self.twins[vehicle_id].summary()
        summary["acked_seq"] = self.acked.get(vehicle_id)
        return summary

    def resident(self) -> list[str]:
        return sorted(self.twins)

    def known(self) -> list[str]:
        """Every twin of this host's store: resident, or released to its checkpoint."""
        stored = set(self.store.list()) if self.store is not None else set()
        return sorted(set(self.twins) | stored | set(self.unsnapshotted))

    def alerts(self, flt: AlertFilter) -> list[Alert]:
        if not self._history_loaded:  # alerts raised before a restart come back from the alert store
            known = {a.alert_id for a in self.alert_log}
            history = [a for a in self.alert_store.read_all() if a.alert_id not in known]
            self.alert_log = deque(history + list(self.alert_log), maxlen=self.alert_log.maxlen)
            self._history_loaded = True
        matched = [a for a in self.alert_log if flt.matches(a)]
        return matched[-flt.limit:]

    def stats(self) -> dict[str, Any]:
        return {"resident": len(self.twins), "restored": self.restored, "predictions_failed": self.predictions_failed,
                "predictions_answered": self.predictions_answered,
                "outstanding_prediction": self.outstanding is not None, "fine_tunes_in_flight": len(self.tunes),
                "replayed": self.replayed, "log_segments": len(self.segment_refs)}
