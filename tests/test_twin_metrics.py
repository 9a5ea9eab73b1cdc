"""Metrics from the twins (twins.metrics): counted around a real TwinHost, exported on a Prometheus registry."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from configs.frames import FrameBatch
from serving.backend import LocalTwinsBackend
from serving.metrics import FrontDoorMetrics
from tests.test_durability import faulty_frames
from tests.test_hosting import fleet_frames, settings
from twins.host import TwinHost
from twins.metrics import TWIN_METRICS, PrometheusSink, TwinMetrics


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"host": "h", **labels}) or 0.0


def test_frames_windows_alerts_latency_and_residents_are_counted(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = TwinMetrics(PrometheusSink(registry), host="h")
    host = TwinHost(settings(tmp_path))
    frames = fleet_frames(["a", "b"], 400)
    metrics.ingest(host, FrameBatch.from_columns(frames)[0])
    windows = sum(t.windows_closed for t in host.twins.values())
    assert windows > 0
    assert value(registry, "evtwin_twin_frames_total") == 800
    assert value(registry, "evtwin_twin_windows_total") == windows
    assert value(registry, "evtwin_twin_resident") == 2
    assert value(registry, "evtwin_twin_persist_seconds_count") == 1
    assert value(registry, "evtwin_twin_persist_seconds_sum") > 0  # two checkpoints were written, and timed
    metrics.ingest(host, FrameBatch.from_columns(frames)[0])  # the same frames again
    assert value(registry, "evtwin_twin_duplicates_total") == 800 and value(registry, "evtwin_twin_frames_total") == 800
    bad = faulty_frames("c", 50, slice(30, 35))
    metrics.ingest(host, FrameBatch.from_columns(bad)[0])
    assert value(registry, "evtwin_twin_alerts_total", rule="sensor_fault") == 1
    assert value(registry, "evtwin_twin_scoring_seconds_count") == 3
    assert (tmp_path / "ckpt" / "wal").is_dir() and host.known() == ["a", "b", "c"]  # the proxies still write
    assert host.checkpoint_all() == 3 and len(host.store.list()) == 3


def test_the_local_backend_exports_twin_metrics_on_the_front_door_registry(tmp_path: Path) -> None:
    backend = LocalTwinsBackend(TwinHost(settings(tmp_path)))
    door = FrontDoorMetrics()
    backend.attach_metrics(door.registry)

    class Batch:  # what the servicer hands over: a decoded batch with its frames
        def frames(self) -> FrameBatch:
            return FrameBatch.from_columns(fleet_frames(["x"], 30))[0]

    asyncio.run(backend.ingest(Batch()))
    text = door.exposition().decode()
    assert 'evtwin_twin_frames_total{host="local"} 30.0' in text
    assert all(name.removesuffix("_total") in text for name in TWIN_METRICS)


def test_persist_seconds_include_the_group_commit(tmp_path: Path) -> None:
    # the checkpoints of one call are made durable when their group commits (fsync), not in each put:
    # a slow commit is persistence time, not scoring time
    registry = CollectorRegistry()
    metrics = TwinMetrics(PrometheusSink(registry), host="h")
    host = TwinHost(settings(tmp_path, durability="checkpoint"))  # checkpoints in the call, not the log
    commit = host.store._commit

    def slow_commit(pending: list) -> None:
        time.sleep(0.2)
        commit(pending)

    host.store._commit = slow_commit
    metrics.ingest(host, FrameBatch.from_columns(fleet_frames(["a", "b"], 50))[0])
    assert value(registry, "evtwin_twin_persist_seconds_sum") >= 0.2
    assert value(registry, "evtwin_twin_scoring_seconds_sum") < 0.2
    assert len(host.store.list()) == 2  # still committed
