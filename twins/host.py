"""Plain (Ray-free) hosting logic: batch splitting, routing, and ``TwinHost``, the contents of a host actor.

``TwinHost`` holds the twins of one host (one vehicle by default, a shard with ``twins_per_actor > 1``),
restores them from the checkpoint store on first contact, checkpoints every twin an ingest call
changed *before* answering, and acknowledges only what is in a checkpoint (``checkpoint_uri=None``:
an ephemeral host, for simulations: no checkpoints, acknowledges what it applied, evicts nothing).
Model calls and fine-tunes go through small injected interfaces (``Predictor``, ``Runner``) so a slow
or failing service can never block ingestion and tests need no cluster.

>>> route("vehicle-0001", 8) == route("vehicle-0001", 8)
True
>>> 0 <= route("vehicle-0001", 8) < 8
True
"""
from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import pyarrow as pa

from configs.settings import TwinsConfig
from twins.personalise import fit_personal_head
from twins.store import CheckpointStore
from twins.twin import SENSORS, AnomalyModel, VehicleTwin, frames_matrix, ingest_many
from twins.types import Alert, AlertFilter, IngestResult, Rejection

_ALERT_LOG = 10_000


def route(vehicle_id: str, shards: int) -> int:
    """Stable shard of a vehicle (blake2b, not Python's salted ``hash``): same answer on every process."""
    digest = hashlib.blake2b(vehicle_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


@dataclass
class FrameBlock:
    """Frames of several vehicles, grouped: rows ``offsets[i]:offsets[i+1]`` belong to ``vehicle_ids[i]``."""

    vehicle_ids: list[str]
    offsets: np.ndarray
    seq: np.ndarray
    ts: np.ndarray
    values: np.ndarray  # rows x SENSORS float32

    def parts(self) -> Iterable[tuple[str, dict[str, np.ndarray]]]:
        for i, vehicle_id in enumerate(self.vehicle_ids):
            lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
            yield vehicle_id, {"seq": self.seq[lo:hi], "ts": self.ts[lo:hi], "values": self.values[lo:hi]}

    @property
    def rows(self) -> int:
        return int(self.seq.size)

    def select(self, indices: list[int]) -> "FrameBlock":
        """The vehicles at ``indices`` (positions in ``vehicle_ids``), as one contiguous block."""
        spans = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in indices]
        rows = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
        sizes = np.array([s.size for s in spans], dtype=np.int64)
        return FrameBlock([self.vehicle_ids[i] for i in indices], np.concatenate([[0], np.cumsum(sizes)]),
                          self.seq[rows], self.ts[rows], self.values[rows])


def _column(batch: Any, name: str) -> Any:
    if isinstance(batch, (pa.Table, pa.RecordBatch)):
        return batch.column(name) if name in batch.schema.names else None
    return batch.get(name)


def to_block(batch: pa.Table | pa.RecordBatch | dict[str, Any]) -> tuple[FrameBlock, list[Rejection]]:
    """Group a batch (Arrow or dict of columns, any vehicles, any order) by vehicle.

    Rows without a vehicle id, seq or ts are refused (``bad_key``); missing sensors become NaN.
    """
    n = batch.num_rows if isinstance(batch, (pa.Table, pa.RecordBatch)) else len(batch["seq"])
    keys = {k: _column(batch, k) for k in ("vehicle_id", "seq", "ts")}
    missing = [k for k, v in keys.items() if v is None]
    if missing:
        raise ValueError(f"batch lacks key column(s) {missing}")
    vid = keys["vehicle_id"]
    if isinstance(vid, (pa.Array, pa.ChunkedArray)):
        encoded = pa.chunked_array([vid]).combine_chunks() if isinstance(vid, pa.Array) else vid.combine_chunks()
        encoded = encoded.dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        names = encoded.dictionary.to_pylist()
        null_vid = np.asarray(encoded.indices.is_null().to_numpy(zero_copy_only=False))
        codes = np.where(null_vid, -1, np.nan_to_num(codes, nan=-1)).astype(np.int64)
    else:
        names, codes = np.unique(np.asarray(vid, dtype=object).astype(str), return_inverse=True)
        names, codes = [str(n) for n in names], codes.astype(np.int64)
    seq, seq_ok = _int_column(keys["seq"])
    ts, ts_ok = _int_column(keys["ts"])
    if isinstance(batch, (pa.Table, pa.RecordBatch)):
        columns = {name: _float_column(batch.column(name)) for name in SENSORS if name in batch.schema.names}
    else:
        columns = {name: batch[name] for name in SENSORS if name in batch}
        if "values" in batch:
            columns = {"values": batch["values"]}
    values = frames_matrix(columns, n)
    ok = (codes >= 0) & seq_ok & ts_ok
    rejected = [Rejection(names[c] if c >= 0 else "", int(s) if sk else -1, "bad_key",
                          "frame lacks " + ("vehicle_id" if c < 0 else "seq" if not sk else "ts"))
                for c, s, sk in zip(codes[~ok], seq[~ok], seq_ok[~ok])]
    codes, seq, ts, values = codes[ok], seq[ok], ts[ok], values[ok]
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    present, starts = np.unique(codes, return_index=True)
    offsets = np.concatenate([starts, [codes.size]]).astype(np.int64)
    block = FrameBlock([names[c] for c in present], offsets, seq[order], ts[order], values[order])
    return block, rejected


def _int_column(column: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        return np.asarray(column.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64), valid
    array = np.asarray(column)
    if array.dtype.kind == "M":
        array = array.astype("datetime64[ms]").astype(np.int64)
    if array.dtype.kind == "f":
        valid = np.isfinite(array)
        return np.where(valid, array, 0).astype(np.int64), valid
    return array.astype(np.int64), np.ones(array.shape, dtype=bool)


def _float_column(column: Any) -> np.ndarray:
    return np.asarray(column.cast(pa.float32()).fill_null(np.nan).to_numpy(zero_copy_only=False), dtype=np.float32)


def _waves(vehicle_ids: list[str]) -> list[list[int]]:
    """Consecutive runs of positions with no vehicle twice (a block built by ``to_block`` is one run)."""
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
        self.store = CheckpointStore(settings.checkpoint_uri) if settings.checkpoint_uri is not None else None
        self.predictor = predictor
        self.runner = runner or InlineRunner()
        self.clock = clock
        self.twins: dict[str, VehicleTwin] = {}
        self.last_used: dict[str, float] = {}
        self.acked: dict[str, int] = {}
        self.alert_log: deque[Alert] = deque(maxlen=_ALERT_LOG)
        self.pending_alerts: list[Alert] = []  # from predictions, delivered with the next answer
        self.outstanding: _Outstanding | None = None
        self.predictions_failed = 0
        self.predictions_answered = 0
        self.retry_after = float("-inf")
        self.tunes: dict[str, Any] = {}
        self.restored = 0

    # ------------------------------------------------------------------ twins
    def twin(self, vehicle_id: str) -> VehicleTwin:
        """The resident twin, else restored from its last checkpoint, else a new one (first contact)."""
        twin = self.twins.get(vehicle_id)
        if twin is None:
            data = self.store.get(vehicle_id) if self.store is not None else None
            if data is not None:
                twin = VehicleTwin.from_bytes(data, self.model, self.cfg)
                self.restored += 1
                self.acked[vehicle_id] = twin.applied_seq
            else:
                twin = VehicleTwin(vehicle_id, self.cfg, self.settings.window_ms, self.settings.stride_ms, self.model)
            self.twins[vehicle_id] = twin
        self.last_used[vehicle_id] = self.clock()
        return twin

    def ingest(self, block: FrameBlock) -> IngestResult:
        result = IngestResult()
        dirty: list[str] = []
        parts = list(block.parts())
        twins = [self.twin(vehicle_id) for vehicle_id, _ in parts]
        befores = [(twin.applied_seq, twin.buf_seq.size) for twin in twins]
        # All the block's twins in one batched step: windows closed together, one fleet-model call.
        steps = []
        for wave in _waves([vehicle_id for vehicle_id, _ in parts]):
            steps += ingest_many([twins[i] for i in wave], [parts[i][1] for i in wave])
        for (vehicle_id, _), twin, before, step in zip(parts, twins, befores, steps):
            result.alerts.extend(step.alerts)
            result.rejected.extend(step.rejected)
            result.applied += step.applied
            result.duplicates += step.duplicates
            if (twin.applied_seq, twin.buf_seq.size) != before:
                dirty.append(vehicle_id)
            elif vehicle_id in self.acked:
                result.acks[vehicle_id] = self.acked[vehicle_id]
        self._poll_services(result, dirty)
        for vehicle_id in dict.fromkeys(dirty):
            self._checkpoint(vehicle_id)
            result.acks[vehicle_id] = self.acked[vehicle_id]
        self._request_predictions()
        self._request_fine_tunes()
        result.alerts.extend(self.pending_alerts)
        self.pending_alerts = []
        self.alert_log.extend(result.alerts)
        self.evict_idle()
        return result

    def _checkpoint(self, vehicle_id: str) -> None:
        twin = self.twins[vehicle_id]
        if self.store is not None:
            self.store.put(vehicle_id, twin.to_bytes())
        # Only now is the effect durable: acknowledge up to the applied watermark.
        self.acked[vehicle_id] = twin.applied_seq

    def checkpoint_all(self) -> int:
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
            self._checkpoint(vehicle_id)
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
        self.outstanding = _Outstanding(ticket, list(zip(ids, ends)), self.clock())

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
            for vehicle_id in dict.fromkeys(dirty):
                self._checkpoint(vehicle_id)
            if self.outstanding is not None or self.tunes:
                sleep(0.01)
        self.alert_log.extend(result.alerts)
        return result.alerts

    # ------------------------------------------------------------------ queries
    def summary(self, vehicle_id: str) -> dict[str, Any] | None:
        if vehicle_id not in self.twins and (self.store is None or self.store.get(vehicle_id) is None):
            return None
        summary = self.twin(vehicle_id).summary()
        summary["acked_seq"] = self.acked.get(vehicle_id)
        return summary

    def resident(self) -> list[str]:
        return sorted(self.twins)

    def alerts(self, flt: AlertFilter) -> list[Alert]:
        matched = [a for a in self.alert_log if flt.matches(a)]
        return matched[-flt.limit:]

    def stats(self) -> dict[str, Any]:
        return {"resident": len(self.twins), "restored": self.restored, "predictions_failed": self.predictions_failed,
                "predictions_answered": self.predictions_answered,
                "outstanding_prediction": self.outstanding is not None, "fine_tunes_in_flight": len(self.tunes)}
