"""Durable acks without one journal commit per twin: the checkpoints of one ingest call are group-committed
(written, synced together, renamed, folder synced) and acknowledged only once the whole group is durable."""
from __future__ import annotations

from pathlib import Path

import pytest

from configs.frames import FrameBatch
from tests.test_hosting import fleet_frames, settings
from twins import store as store_module
from twins.host import TwinHost
from twins.store import AlertStore, CheckpointStore
from twins.twin import VehicleTwin
from twins.types import Alert, Rule


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.endswith(".tmp"))


def test_a_group_takes_effect_when_it_ends_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    store.put("a", b"old")
    with store.group():
        store.put("a", b"new-a")
        store.put("b", b"new-b")
        assert store.get("a") == b"old" and store.get("b") is None  # not yet committed
    assert (store.get("a"), store.get("b")) == (b"new-a", b"new-b")
    assert leftovers(tmp_path) == []


def test_a_failed_commit_replaces_nothing_it_did_not_sync_and_cleans_up(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    store = CheckpointStore(str(tmp_path))
    store.put("a", b"old")

    def no_sync(path: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(store_module, "_fsync_path", no_sync)
    with pytest.raises(OSError, match="Input/output"), store.group():
        store.put("a", b"new-a")
        store.put("b", b"new-b")
    assert (store.get("a"), store.get("b")) == (b"old", None)
    assert leftovers(tmp_path) == []


def test_one_call_is_one_group_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commits: list[int] = []
    real_commit = CheckpointStore._commit

    def counting(self: CheckpointStore, pending: list[tuple[str, str]]) -> None:
        commits.append(len(pending))
        real_commit(self, pending)

    monkeypatch.setattr(CheckpointStore, "_commit", counting)
    host = TwinHost(settings(tmp_path, durability="checkpoint"))
    vehicles = [f"v{i}" for i in range(20)]
    result = host.ingest(FrameBatch.from_columns(fleet_frames(vehicles, 5))[0])
    assert commits == [20]
    assert result.acks == dict.fromkeys(vehicles, 5)


def test_a_failed_group_commit_acknowledges_none_of_its_twins_and_rolls_them_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = TwinHost(settings(tmp_path, durability="checkpoint"))
    host.ingest(FrameBatch.from_columns(fleet_frames(["a", "b"], 10))[0])  # durable up to 10
    real_sync = store_module._fsync_path
    broken = {"on": True}

    def flaky(path: str) -> None:
        if broken["on"]:
            raise OSError(28, "No space left on device")
        real_sync(path)

    monkeypatch.setattr(store_module, "_fsync_path", flaky)
    frames = fleet_frames(["a", "b"], 30)
    result = host.ingest(FrameBatch.from_columns(frames)[0])
    assert result.acks == {"a": 10, "b": 10}
    assert sorted(result.not_durable) == ["a", "b"] and "No space left" in result.not_durable["a"]
    assert host.resident() == []  # nothing that is not in the store stays in memory
    assert VehicleTwin.from_bytes(CheckpointStore(str(tmp_path / "ckpt")).get("a")).applied_seq == 10
    broken["on"] = False
    result = host.ingest(FrameBatch.from_columns(frames)[0])  # re-sent once the store recovered
    assert result.acks == {"a": 30, "b": 30} and result.not_durable == {}
    assert host.twin("a").frames_applied == 30  # each frame applied once in the end
    assert leftovers(tmp_path / "ckpt") == []


def test_alert_lines_are_synced_and_owner_only_before_the_checkpoint_that_acknowledges_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = store_module.os.fsync

    def recording(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(store_module.os, "fsync", recording)
    alerts = AlertStore(str(tmp_path))
    alert = Alert(alert_id="x1", vehicle_id="a", rule=Rule.SENSOR_FAULT, ts_ms=1, seq=1, score=1.0, signals=(),
                  message="m")
    alerts.append("a", [alert])
    assert synced, "the alert line was not synced"
    path = next(tmp_path.glob("*.alerts.jsonl"))
    assert path.stat().st_mode & 0o777 == 0o600
    assert [a.alert_id for a in alerts.read("a")] == ["x1"]
