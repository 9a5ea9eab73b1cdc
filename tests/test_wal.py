"""Durable acks from the write-ahead log (issue 14 item 1, ``twins.durability: "wal"``): one synced append per
call then the ack, snapshots every N frames with covered segments deleted, restore = snapshot + replay equal
to a twin that never restarted, and a failing append that acknowledges and keeps nothing of the call."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from configs.frames import FrameBatch
from tests.test_durability import faulty_frames
from tests.test_hosting import FPW, Clock, fleet_frames, settings
from twins.host import TwinHost
from twins.store import CheckpointStore
from twins.synthetic import take
from twins.twin import VehicleTwin
from twins.types import AlertFilter
from twins.wal import WriteAheadLog, log_root, read_log, segments


def interleaved(vehicles: list[str], n: int) -> dict[str, np.ndarray]:
    """The vehicles' frames interleaved in time, with some swapped neighbours (the reorder buffer works)."""
    frames = fleet_frames(vehicles, n)
    order = np.argsort(frames["seq"], kind="stable")
    for i in range(1, order.size - 1, 7):
        order[i], order[i + 1] = order[i + 1], order[i]
    return {k: v[order] for k, v in frames.items()}


def calls(frames: dict[str, np.ndarray], lo: int, hi: int, size: int) -> list[FrameBatch]:
    return [FrameBatch.from_columns(take(frames, slice(i, min(i + size, hi))))[0] for i in range(lo, hi, size)]


def state(twin: VehicleTwin) -> bytes:
    """The twin's bytes without the snapshot's log position (where a twin was last snapshotted is not its state)."""
    twin.log_position = ""
    return twin.to_bytes()


def test_a_call_is_one_synced_log_append_and_is_acknowledged_without_a_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    appends: list[int] = []
    real_append = WriteAheadLog.append

    def counting(self: WriteAheadLog, parts: list) -> str:
        parts = list(parts)
        appends.append(len(parts))
        return real_append(self, parts)

    monkeypatch.setattr(WriteAheadLog, "append", counting)
    synced: list[int] = []
    real_sync = WriteAheadLog._sync
    monkeypatch.setattr(WriteAheadLog, "_sync", lambda self: (synced.append(1), real_sync(self))[1])
    host = TwinHost(settings(tmp_path))
    vehicles = [f"v{i}" for i in range(20)]
    result = host.ingest(FrameBatch.from_columns(fleet_frames(vehicles, 5))[0])
    assert appends == [20] and synced == [1]  # one record for all twins of the call, synced
    assert result.acks == dict.fromkeys(vehicles, 5) and result.not_durable == {}
    assert CheckpointStore(str(tmp_path / "ckpt")).list() == []  # no snapshot yet: the log alone holds the acks
    records = list(read_log(log_root(str(tmp_path / "ckpt"))))
    assert sorted(r.vehicle_id for r in records) == sorted(vehicles)
    assert all(r.columns["seq"].tolist() == [1, 2, 3, 4, 5] for r in records)
    assert len({r.position for r in records}) == 1


def test_snapshots_every_n_frames_delete_the_segments_they_cover(tmp_path: Path) -> None:
    host = TwinHost(settings(tmp_path, snapshot_every_frames=25))
    host.wal.segment_bytes = 1  # a new segment per append, so that truncation shows
    root = log_root(str(tmp_path / "ckpt"))
    frames = fleet_frames(["a", "b"], 40)
    frames = {k: v[np.argsort(frames["seq"], kind="stable")] for k, v in frames.items()}
    for block in calls(frames, 0, 40, 10):  # 5 frames per twin and call
        host.ingest(block)
    assert len(segments(root)) == 4 and CheckpointStore(str(tmp_path / "ckpt")).list() == []
    host.ingest(calls(frames, 40, 50, 10)[0])  # the 25th frame of each twin: both snapshotted
    snapshot = VehicleTwin.from_bytes(CheckpointStore(str(tmp_path / "ckpt")).get("a"))
    assert snapshot.applied_seq == 25 and snapshot.log_position.startswith(host.wal.segment or "")
    assert segments(root) == [host.wal.segment]  # only the open segment is left; it is covered too
    assert host.stats()["log_segments"] == 1


def test_snapshots_are_also_taken_every_snapshot_every_s(tmp_path: Path) -> None:
    clock = Clock()
    host = TwinHost(settings(tmp_path, snapshot_every_s=30, idle_evict_minutes=60), clock=clock)
    host.ingest(FrameBatch.from_columns(fleet_frames(["a"], 5))[0])
    assert CheckpointStore(str(tmp_path / "ckpt")).get("a") is None
    clock.now = 31.0
    host.ingest(FrameBatch.from_columns(take(fleet_frames(["a"], 6), slice(5, 6)))[0])
    assert VehicleTwin.from_bytes(CheckpointStore(str(tmp_path / "ckpt")).get("a")).applied_seq == 6


def test_restore_is_the_snapshot_plus_the_replayed_log_byte_for_byte(tmp_path: Path) -> None:
    vehicles = ["a", "b", "c"]
    frames = interleaved(vehicles, 6 * FPW)
    rows = frames["seq"].size
    straight = TwinHost(dataclasses.replace(settings(tmp_path / "1", snapshot_every_frames=130), checkpoint_uri=None))
    first = TwinHost(settings(tmp_path / "2", snapshot_every_frames=130))
    for host in (straight, first):
        for block in calls(frames, 0, 700, 50):
            host.ingest(block)
        host.ingest(calls(frames, 600, 650, 50)[0])  # re-sent frames: their duplicate count must survive too
    stored = CheckpointStore(str(tmp_path / "2" / "ckpt"))
    assert sorted(stored.list()) == vehicles  # snapshots exist, and the log holds frames after them
    assert all(VehicleTwin.from_bytes(stored.get(v)).applied_seq < first.twin(v).applied_seq for v in vehicles)
    raised = [a.alert_id for a in first.alert_log]
    del first  # the host "dies" without a snapshot; the client re-sends from its last ack (here: the rest)
    second = TwinHost(settings(tmp_path / "2", snapshot_every_frames=130))
    for block in calls(frames, 700, rows, 50):
        second.ingest(block)
        straight.ingest(block)
    assert second.replayed > 0 and second.restored == 3
    for vehicle in vehicles:
        assert state(second.twin(vehicle)) == state(straight.twin(vehicle))
    ids = [a.alert_id for a in second.alerts(AlertFilter(limit=10_000))]
    assert len(ids) == len(set(ids)) and set(raised) <= set(ids)  # replayed alerts keep their ids, once each
    assert set(ids) == {a.alert_id for a in straight.alert_log}


def test_a_failing_append_acknowledges_nothing_and_applies_nothing(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    host = TwinHost(settings(tmp_path))
    host.ingest(FrameBatch.from_columns(fleet_frames(["a", "b"], 20))[0])  # durable (logged) up to 20
    real_sync = WriteAheadLog._sync
    broken = {"on": True}

    def flaky(self: WriteAheadLog) -> None:  # the record is written, its sync fails
        if broken["on"]:
            raise OSError(5, "Input/output error")
        real_sync(self)

    monkeypatch.setattr(WriteAheadLog, "_sync", flaky)
    frames = faulty_frames("a", 50, slice(30, 35))
    block = FrameBatch.concat([FrameBatch.from_columns(frames)[0],
                               FrameBatch.from_columns(fleet_frames(["b"], 50))[0]])
    result = host.ingest(block)
    assert result.acks == {"a": 20, "b": 20} and result.alerts == []
    assert sorted(result.not_durable) == ["a", "b"] and "Input/output" in result.not_durable["a"]
    assert "write-ahead log" in result.not_durable["a"]
    assert host.resident() == []  # nothing half-applied stays in memory
    assert host.twin("a").applied_seq == 20 and host.twin("b").applied_seq == 20  # restored from the log
    broken["on"] = False
    result = host.ingest(block)  # re-sent once the log recovered
    assert result.acks == {"a": 50, "b": 50} and result.not_durable == {}
    assert [a.rule for a in result.alerts] == ["sensor_fault"]
    # Each frame applied once; only the 20 frames acknowledged before the failure count as re-sent.
    assert host.twin("a").frames_applied == 50 and host.twin("a").duplicates == 20
    restarted = TwinHost(settings(tmp_path))  # the unsynced append is not replayed after a restart either
    assert restarted.twin("a").frames_applied == 50 and restarted.twin("a").duplicates == 20


def test_checkpoint_all_leaves_no_log_behind_and_a_new_host_starts_from_the_snapshots(tmp_path: Path) -> None:
    host = TwinHost(settings(tmp_path))
    host.ingest(FrameBatch.from_columns(fleet_frames(["a", "b"], 30))[0])
    root = log_root(str(tmp_path / "ckpt"))
    assert len(segments(root)) == 1
    assert host.checkpoint_all() == 2
    assert segments(root) == []
    again = TwinHost(settings(tmp_path))
    assert again.twin("a").applied_seq == 30 and again.replayed == 0 and again.restored == 1


def test_a_new_host_skips_records_its_snapshots_hold_and_logs_after_every_segment_it_found(
        tmp_path: Path) -> None:
    first = TwinHost(settings(tmp_path, snapshot_every_frames=30))
    first.ingest(FrameBatch.from_columns(fleet_frames(["a"], 30))[0])  # logged, then snapshotted past it
    root = log_root(str(tmp_path / "ckpt"))
    (found,) = segments(root)  # the open segment outlives the snapshot
    future = f"{int(found.split('-')[0]) + 10**15:020d}-otherhost"  # a segment from a clock far ahead
    Path(root, f"{future}.arrows").write_bytes(b"")
    second = TwinHost(settings(tmp_path, snapshot_every_frames=30))
    assert second.twin("a").applied_seq == 30 and second.replayed == 0  # nothing replayed twice
    assert "a" not in second.unsnapshotted
    second.ingest(FrameBatch.from_columns(take(fleet_frames(["a"], 31), slice(30, 31)))[0])
    assert second.wal.segment is not None and second.wal.segment > future  # log order survives the clock
    assert found not in segments(root)  # covered by the snapshot: deleted on restore
    assert future in segments(root)  # no record in it: maybe another host's, just opened: left alone
