"""Prometheus metrics for the front door and the twins, on their own registry.

A private registry (not the process-global one) keeps tests independent and lets two servers run in
one process. ``start_metrics_server(port)`` exposes ``/metrics`` for Prometheus to scrape.

>>> metrics = FrontDoorMetrics()
>>> metrics.frames_received.labels(outcome="applied").inc(3)
>>> b"evtwin_frames_total" in metrics.exposition()
True
>>> metrics.observe_ingest(frames=10, duplicates=2, rejected=1, faulty_frames=3, alert_rules=["anomaly"], seconds=0.01)
>>> [metrics.frames_received.labels(outcome=o)._value.get() for o in ("applied", "duplicate", "rejected", "sensor_fault")]
[10.0, 2.0, 1.0, 3.0]
>>> metrics.alerts_raised.labels(rule="anomaly")._value.get(), metrics.batches_received._value.get()
(1.0, 1.0)
"""
from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from twins.metrics import TWIN_METRICS

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class FrontDoorMetrics:
    """Counters and histograms a fleet operator watches: throughput, rejections, alerts, latency."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.frames_received = Counter(
            "evtwin_frames_total", "Frames received, by outcome (applied, duplicate, rejected, sensor_fault)",
            ["outcome"], registry=self.registry)
        self.batches_received = Counter("evtwin_batches_total", "Frame batches received", registry=self.registry)
        self.alerts_raised = Counter("evtwin_alerts_total", "Alerts raised, by rule", ["rule"], registry=self.registry)
        self.rpc_errors = Counter("evtwin_rpc_errors_total", "RPCs that ended with an error, by method and status code",
                                  ["method", "code"], registry=self.registry)
        self.open_streams = Gauge("evtwin_open_streams", "Telemetry streams currently open", registry=self.registry)
        self.frames_in_flight = Gauge("evtwin_frames_in_flight", "Frames received but not yet acknowledged",
                                      registry=self.registry)
        self.ingest_latency = Histogram("evtwin_ingest_seconds", "Time from batch received to acknowledgement",
                                        buckets=_LATENCY_BUCKETS, registry=self.registry)

        # Label children bound once: ``labels()`` is a dict lookup under a lock, paid per batch otherwise.
        self._frames_by_outcome = {outcome: self.frames_received.labels(outcome=outcome)
                                   for outcome in ("applied", "duplicate", "rejected", "sensor_fault")}

    def observe_ingest(self, frames: int, duplicates: int, rejected: int, faulty_frames: int,
                       alert_rules: Iterable[str], seconds: float) -> None:
        """One acknowledged batch: its frames by outcome (a faulty frame is applied too), alerts, latency."""
        self.batches_received.inc()
        self.ingest_latency.observe(seconds)
        self._frames_by_outcome["applied"].inc(max(0, frames - duplicates - rejected))
        self._frames_by_outcome["duplicate"].inc(duplicates)
        self._frames_by_outcome["rejected"].inc(rejected)
        self._frames_by_outcome["sensor_fault"].inc(faulty_frames)
        for rule in alert_rules:
            self.alerts_raised.labels(rule=rule).inc()

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


def start_metrics_server(metrics: FrontDoorMetrics, port: int, host: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` over HTTP on ``host:port`` (loopback by default)."""
    start_http_server(port, addr=host, registry=metrics.registry)


def _series(name: str, kind: str) -> set[str]:
    """The series names Prometheus stores for one metric of ``kind``."""
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    if kind == "counter" and not name.endswith("_total"):
        return {f"{name}_total"}
    return {name}


def exported_metric_names() -> set[str]:
    """Every series name the code exports: the front door's, and the twins' both as the server process
    exports them (local backend) and as Ray's metrics agent does (``ray_`` prefix, host actors)."""
    names: set[str] = set()
    for family in FrontDoorMetrics().registry.collect():
        names |= _series(family.name, family.type)
    for name, (kind, _help, _tags) in TWIN_METRICS.items():
        names |= _series(name, kind) | _series(f"ray_{name}", kind)
    return names
