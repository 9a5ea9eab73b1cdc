"""Metrics from the twins themselves: frames, windows, alerts by rule, scoring and persistence latency,
resident twins, prediction calls, per host.

Measured around ``TwinHost.ingest`` from the outside (``TwinMetrics.ingest(host, block)``), so the host's
code is unchanged: windows and prediction calls are counter differences, persistence time is measured by
timing proxies put in front of the host's checkpoint and alert stores (``TwinMetrics.attach``; a group commit
is timed whole, its fsync included), scoring time is the rest of the call. Two sinks, the same names:

* ``PrometheusSink(registry)``: ``prometheus_client`` on a registry the process serves (twins in the
  server process: ``evtwin serve --backend local``);
* ``RaySink()``: ``ray.util.metrics`` inside host actors; each Ray node's metrics agent exports them for
  Prometheus with Ray's ``ray_`` prefix (``ray_evtwin_twin_frames_total``), see docs/MONITORING.md.

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> metrics = TwinMetrics(PrometheusSink(registry), host="h0")
>>> metrics.sink.inc("evtwin_twin_frames_total", 3, {"host": "h0"})
>>> registry.get_sample_value("evtwin_twin_frames_total", {"host": "h0"})
3.0
"""
from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge, Histogram

from configs.frames import FrameBatch
from twins.types import IngestResult

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# name -> (kind, help, tag keys). The names every sink exports (Ray adds its ``ray_`` prefix on export).
TWIN_METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "evtwin_twin_frames_total": ("counter", "Frames applied by the twins", ("host",)),
    "evtwin_twin_duplicates_total": ("counter", "Frames the twins had already applied (re-sent)", ("host",)),
    "evtwin_twin_windows_total": ("counter", "Feature windows closed by the twins", ("host",)),
    "evtwin_twin_alerts_total": ("counter", "Alerts raised by the twins, by rule", ("host", "rule")),
    "evtwin_twin_prediction_calls_total": ("counter", "Failure-model answers the twins used, by outcome",
                                           ("host", "outcome")),
    "evtwin_twin_not_durable_total": ("counter", "Twins whose state could not be made durable (rolled back)",
                                      ("host",)),
    "evtwin_twin_scoring_seconds": ("histogram", "Time per ingest call spent in the twins (windows, features, "
                                    "scores, alerts)", ("host",)),
    "evtwin_twin_persist_seconds": ("histogram", "Time per ingest call spent writing checkpoints and alerts",
                                    ("host",)),
    "evtwin_twin_resident": ("gauge", "Twins resident in memory", ("host",)),
}


class PrometheusSink:
    """``prometheus_client`` metrics on ``registry``."""

    def __init__(self, registry: Any) -> None:
        self.metrics: dict[str, Any] = {}
        for name, (kind, text, tags) in TWIN_METRICS.items():
            if kind == "counter":
                self.metrics[name] = PromCounter(name, text, list(tags), registry=registry)
            elif kind == "gauge":
                self.metrics[name] = Gauge(name, text, list(tags), registry=registry)
            else:
                self.metrics[name] = Histogram(name, text, list(tags), buckets=_LATENCY_BUCKETS, registry=registry)

    def inc(self, name: str, value: float, tags: dict[str, str]) -> None:
        self.metrics[name].labels(**tags).inc(value)

    def set(self, name: str, value: float, tags: dict[str, str]) -> None:
        self.metrics[name].labels(**tags).set(value)

    def observe(self, name: str, value: float, tags: dict[str, str]) -> None:
        self.metrics[name].labels(**tags).observe(value)


class RaySink:
    """``ray.util.metrics`` (inside a Ray worker: a host actor)."""

    def __init__(self) -> None:
        from ray.util import metrics as ray_metrics

        self.metrics: dict[str, Any] = {}
        for name, (kind, text, tags) in TWIN_METRICS.items():
            if kind == "counter":
                # Ray's Counter appends nothing; its Prometheus name is ray_<name>.
                self.metrics[name] = ray_metrics.Counter(name, text, tag_keys=tags)
            elif kind == "gauge":
                self.metrics[name] = ray_metrics.Gauge(name, text, tag_keys=tags)
            else:
                self.metrics[name] = ray_metrics.Histogram(name, text, boundaries=list(_LATENCY_BUCKETS), tag_keys=tags)

    def inc(self, name: str, value: float, tags: dict[str, str]) -> None:
        if value > 0:  # Ray refuses a zero increment
            self.metrics[name].inc(value, tags=tags)

    def set(self, name: str, value: float, tags: dict[str, str]) -> None:
        self.metrics[name].set(value, tags=tags)

    def observe(self, name: str, value: float, tags: dict[str, str]) -> None:
        self.metrics[name].observe(value, tags=tags)


class _TimedStore:
    """A store proxy that adds the seconds spent in its writes to ``spent[0]``.

    ``spent[1]`` counts the open ``group()`` blocks (shared by the checkpoint and the alert store): a group
    is timed whole, since its checkpoints become durable only when it commits (the fsync is at its end, not
    in each ``put``), and the writes inside it are not counted twice."""

    def __init__(self, store: Any, spent: list[float]) -> None:
        self._store = store
        self._spent = spent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _timed(self, method: Callable[..., Any], *args: Any) -> Any:
        if self._spent[1]:  # inside a timed group
            return method(*args)
        started = time.perf_counter()
        try:
            return method(*args)
        finally:
            self._spent[0] += time.perf_counter() - started

    def put(self, *args: Any) -> Any:
        return self._timed(self._store.put, *args)

    def append(self, *args: Any) -> Any:
        return self._timed(self._store.append, *args)

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        started = time.perf_counter()
        self._spent[1] += 1
        try:
            with self._store.group():
                yield
        finally:
            self._spent[1] -= 1
            if not self._spent[1]:
                self._spent[0] += time.perf_counter() - started


class TwinMetrics:
    """Observes one host's ingest calls into a sink (``PrometheusSink`` or ``RaySink``)."""

    def __init__(self, sink: Any, host: str) -> None:
        self.sink = sink
        self.tags = {"host": host}
        self._persist_spent = [0.0, 0]  # seconds spent persisting this call, open group() blocks
        self._attached: Any = None

    def attach(self, host: Any) -> None:
        """Time the host's store writes (checkpoints and alerts) from now on."""
        if self._attached is host:
            return
        if host.store is not None:
            host.store = _TimedStore(host.store, self._persist_spent)
        if host.alert_store is not None:
            host.alert_store = _TimedStore(host.alert_store, self._persist_spent)
        if getattr(host, "wal", None) is not None:  # wal mode: the log append is the call's durable write
            host.wal = _TimedStore(host.wal, self._persist_spent)
        self._attached = host

    def ingest(self, host: Any, block: FrameBatch) -> IngestResult:
        """``host.ingest(block)``, measured."""
        self.attach(host)
        vehicle_ids = block.vehicle_ids
        windows_before = sum(t.windows_closed for v in vehicle_ids if (t := host.twins.get(v)) is not None)
        answered, failed = host.predictions_answered, host.predictions_failed
        self._persist_spent[0] = 0.0
        started = time.perf_counter()
        result = host.ingest(block)
        total = time.perf_counter() - started
        persisted = self._persist_spent[0]
        windows_after = sum(t.windows_closed for v in vehicle_ids if (t := host.twins.get(v)) is not None)
        tags, sink = self.tags, self.sink
        sink.inc("evtwin_twin_frames_total", result.applied, tags)
        sink.inc("evtwin_twin_duplicates_total", result.duplicates, tags)
        sink.inc("evtwin_twin_windows_total", max(0, windows_after - windows_before), tags)
        for rule, count in Counter(str(a.rule) for a in result.alerts).items():
            sink.inc("evtwin_twin_alerts_total", count, {**tags, "rule": rule})
        sink.inc("evtwin_twin_prediction_calls_total", host.predictions_answered - answered, {**tags, "outcome": "answered"})
        sink.inc("evtwin_twin_prediction_calls_total", host.predictions_failed - failed, {**tags, "outcome": "failed"})
        sink.inc("evtwin_twin_not_durable_total", len(result.not_durable), tags)
        sink.observe("evtwin_twin_scoring_seconds", max(0.0, total - persisted), tags)
        sink.observe("evtwin_twin_persist_seconds", persisted, tags)
        sink.set("evtwin_twin_resident", len(host.twins), tags)
        return result
