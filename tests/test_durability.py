"""Durability of twin hosts without a cluster (issue 13 items 2, 3, 8, 12a): all-or-nothing application when
a checkpoint write fails, immediate acks once the store recovers, alert history and duplicate counters that
survive a restart, and ``min_severity`` applied before the limit."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from configs.frames import FrameBatch
from configs.schema import SCHEMA
from protos.evtwin.v1 import alerts_pb2
from serving.auth import Claims
from serving.backend import MemoryFleet
from serving.servicers import CURRENT_CLAIMS, AlertHub, AlertServicer
from tests.test_hosting import fleet_frames, settings
from twins.host import TwinHost
from twins.store import AlertStore, CheckpointStore
from twins.types import Alert, AlertFilter, alert_id


class FailingStore(CheckpointStore):
    """A store whose next ``failures`` writes fail (read-only or full), then recovers."""

    def __init__(self, uri: str, failures: int) -> None:
        super().__init__(uri)
        self.failures = failures

    def put(self, vehicle_id: str, data: bytes) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        super().put(vehicle_id, data)


def faulty_frames(vehicle: str, n: int, bad_rows: slice) -> dict[str, np.ndarray]:
    """Frames with a physically impossible pack voltage on ``bad_rows``: one sensor_fault alert."""
    columns = fleet_frames([vehicle], n)
    name = SCHEMA.sensor_names[0]
    columns[name] = columns[name].copy()
    columns[name][bad_rows] = SCHEMA.upper_bounds[0] * 10
    return columns


def test_a_failed_checkpoint_rolls_back_and_the_resent_frames_raise_their_alert_once_it_recovers(tmp_path: Path) -> None:
    host = TwinHost(settings(tmp_path, durability="checkpoint"))
    host.ingest(FrameBatch.from_columns(fleet_frames(["a"], 20))[0])  # durable up to 20
    host.store = FailingStore(str(tmp_path / "ckpt"), failures=2)
    frames = faulty_frames("a", 50, slice(30, 35))
    for _ in range(2):  # the store is full: nothing new is acknowledged, no alert is reported
        result = host.ingest(FrameBatch.from_columns(frames)[0])
        assert result.acks.get("a", 20) == 20 and "a" in result.not_durable
        assert "No space left" in result.not_durable["a"] and result.alerts == []
    assert host.twin("a").applied_seq == 20  # rolled back to the last durable state
    result = host.ingest(FrameBatch.from_columns(frames)[0])  # the store recovered: the same frames, re-sent
    assert result.acks == {"a": 50} and result.not_durable == {}  # acknowledged at once, no new frame needed
    assert [a.rule for a in result.alerts] == ["sensor_fault"] and result.alerts[0].seq == 31
    assert host.twin("a").frames_applied == 50  # each frame applied once in the end


def test_one_vehicle_failing_to_persist_does_not_hold_back_the_others(tmp_path: Path) -> None:
    class FailsFor(CheckpointStore):
        def put(self, vehicle_id: str, data: bytes) -> None:
            if vehicle_id == "b":
                raise PermissionError(13, "Read-only file system")
            super().put(vehicle_id, data)

    host = TwinHost(settings(tmp_path, durability="checkpoint"))
    host.store = FailsFor(str(tmp_path / "ckpt"))
    result = host.ingest(FrameBatch.from_columns(fleet_frames(["a", "b"], 30))[0])
    assert result.acks == {"a": 30} and list(result.not_durable) == ["b"]
    assert "b" not in host.resident()  # no state that is not in the store stays resident


def test_duplicates_survive_a_restore(tmp_path: Path) -> None:
    first = TwinHost(settings(tmp_path))
    frames = FrameBatch.from_columns(fleet_frames(["a"], 30))[0]
    first.ingest(frames)
    assert first.ingest(frames).duplicates == 30  # a call with only re-sent frames
    second = TwinHost(settings(tmp_path))
    assert second.summary("a")["duplicates"] == 30


def test_alerts_survive_a_restart_with_their_ids(tmp_path: Path) -> None:
    first = TwinHost(settings(tmp_path))
    raised = first.ingest(FrameBatch.from_columns(faulty_frames("a", 40, slice(10, 12)))[0]).alerts
    assert [a.rule for a in raised] == ["sensor_fault"]
    second = TwinHost(settings(tmp_path))
    assert [a.alert_id for a in second.alerts(AlertFilter())] == [raised[0].alert_id]
    assert AlertStore(str(tmp_path / "ckpt")).read_all() == raised


def test_an_alert_written_twice_is_read_once(tmp_path: Path) -> None:
    store = AlertStore(str(tmp_path))
    alert = Alert(alert_id("v", "anomaly", 3), "v", "anomaly", 1000, 3, 2.0, (("x", 1.0),), "m", severity=2)
    store.append("v", [alert])
    store.append("v", [alert])  # re-raised when re-sent frames were applied again after a failed checkpoint
    assert store.read_all() == [alert]


def _alert(i: int, severity: int) -> Alert:
    return Alert(alert_id("v", "failure_risk", i), "v", "failure_risk", 1000 + i, i, 0.9, (), "risk", severity=severity)


def test_min_severity_applies_before_the_limit() -> None:
    assert AlertFilter(min_severity=2).matches(_alert(1, 3)) and not AlertFilter(min_severity=2).matches(_alert(1, 1))
    fleet = MemoryFleet()
    # newest last: two severe alerts, then many mild ones; the last two severe ones are what we want
    fleet._alerts = [_alert(1, 3), _alert(2, 2)] + [_alert(10 + i, 1) for i in range(20)]

    class Context:
        async def abort(self, code: Any, details: str) -> None:
            raise AssertionError(f"aborted {code}: {details}")

    CURRENT_CLAIMS.set(Claims(role="operator", sub="ops"))
    servicer = AlertServicer(fleet, AlertHub(10))
    reply = asyncio.run(servicer.ListAlerts(alerts_pb2.AlertFilter(min_severity=2, limit=2), Context()))
    assert [a.seq for a in reply.alerts] == [1, 2]


def test_the_fleet_alert_id_index_is_bounded_like_its_log(monkeypatch: pytest.MonkeyPatch) -> None:
    import twins.hosting as hosting

    monkeypatch.setattr(hosting, "_ALERT_LOG", 5)
    fleet = hosting.TwinFleet(settings(Path("/nonexistent")), shards=0)
    fleet._record([_alert(i, 1) for i in range(12)])
    assert len(fleet.alert_log) == 5 and len(fleet._alert_ids) == 5
    fleet._record([_alert(11, 1)])  # still known: not recorded twice
    assert len(fleet.alert_log) == 5


def test_admission_bounds_the_fleet_and_each_gateway_credential() -> None:
    from serving.backend import TwinAdmission

    admission = TwinAdmission(max_twins=5, max_new_per_credential=2)
    admission.seed(["old1", "old2"])
    assert admission.admit(["old1", "n1"], quota_key="gateway:depot") is None
    assert admission.admit(["n1", "old2"], quota_key="gateway:depot") is None  # known ids cost nothing
    refused = admission.admit(["n2", "n3"], quota_key="gateway:depot")
    assert refused is not None and "twins.max_new_twins_per_credential=2" in refused and "depot" in refused
    assert admission.admit(["n2"], quota_key="gateway:depot") is None  # the second new one still fits
    refused = admission.admit(["n3", "n4"], quota_key=None)  # operators: only the fleet-wide bound
    assert refused is not None and "twins.max_twins=5" in refused and "'n3'" in refused
    assert admission.admit(["n3"], quota_key=None) is None
    assert admission.known == {"old1", "old2", "n1", "n2", "n3"}
