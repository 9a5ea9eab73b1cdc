"""Prometheus metrics for the front door and the twins, on their own registry.

A private registry (not the process-global one) keeps tests independent and lets two servers run in
one process. ``start_metrics_server(port)`` exposes ``/metrics`` for Prometheus to scrape.

>>> metrics = FrontDoorMetrics()
>>> metrics.frames_received.labels(outcome="applied").inc(3)
>>> b"evtwin_frames_total" in metrics.exposition()
True
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

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
        self.prediction_latency = Histogram("evtwin_prediction_seconds", "Model-service call latency",
                                            buckets=_LATENCY_BUCKETS, registry=self.registry)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


def start_metrics_server(metrics: FrontDoorMetrics, port: int, host: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` over HTTP on ``host:port`` (loopback by default)."""
    start_http_server(port, addr=host, registry=metrics.registry)
