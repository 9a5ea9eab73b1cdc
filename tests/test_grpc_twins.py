"""The gRPC front door over real twins on a local Ray: alerts equal the in-process run, a killed twin actor
loses no acknowledged frame."""
from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from configs.settings import load_config
from serving.auth import Claims, issue_token
from serving.backend import TwinFleetBackend
from serving.client import Client
from twins.synthetic import synthetic_frames, take
from twins.twin import VehicleTwin

sys.path.insert(0, str(Path(__file__).parent))
from test_grpc_server import SECRET, ServerThread  # noqa: E402

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.integration

FPW = 60  # frames per 10-minute window at 10 s
VEHICLES = ["gv-a", "gv-b", "gv-c"]
OPERATOR = issue_token(SECRET, Claims(role="operator", sub="ops", write=True))


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, namespace="evtwin-grpc-test")
    yield
    ray.shutdown()


def config(tmp_path: Path) -> Any:
    return load_config(overrides=[
        "dataset.window_minutes=10", "dataset.stride_minutes=10", "twins.baseline_warmup_windows=5",
        "twins.anomaly_warmup_windows=5",
        f"twins.checkpoint_uri={tmp_path / 'ckpt'}", f"simulation.num_vehicles={len(VEHICLES)}",
    ])


def fleet_frames() -> dict[str, np.ndarray]:
    parts = []
    for vehicle in VEHICLES:
        frames = synthetic_frames(vehicle, 20 * FPW)
        if vehicle == "gv-b":
            frames["motor_temp"][10 * FPW:] += np.float32(25.0)  # a real anomaly
            frames["speed"][300] = 999.0  # an impossible reading: sensor fault
        frames["vehicle_id"] = np.full(frames["seq"].size, vehicle, dtype=object)
        parts.append(frames)
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(columns["ts"], kind="stable")
    return {k: v[order] for k, v in columns.items()}


def in_process_alerts(cfg: Any, columns: dict[str, np.ndarray]) -> tuple[set[str], dict[str, int]]:
    alert_ids: set[str] = set()
    applied: dict[str, int] = {}
    for vehicle in VEHICLES:
        rows = columns["vehicle_id"] == vehicle
        twin = VehicleTwin(vehicle, cfg.twins, 600_000, 600_000)
        step = twin.ingest({k: c[rows] for k, c in columns.items() if k != "vehicle_id"})
        alert_ids |= {a.alert_id for a in step.alerts}
        applied[vehicle] = twin.applied_seq
    return alert_ids, applied


def test_streamed_fleet_alerts_match_the_in_process_run_and_a_killed_actor_loses_nothing(ray_session: None,
                                                                                          tmp_path: Path) -> None:
    from twins.hosting import TwinFleet

    cfg = config(tmp_path)
    columns = fleet_frames()
    expected_alerts, expected_applied = in_process_alerts(cfg, columns)
    assert expected_alerts, "the synthetic anomaly must raise alerts, or this test proves nothing"
    fleet = TwinFleet.create(cfg, expected_vehicles=len(VEHICLES))
    running = ServerThread(TwinFleetBackend(fleet))
    killed = []
    batch = 240

    async def source() -> Any:
        for lo in range(0, columns["seq"].size, batch):
            if not killed and lo >= columns["seq"].size // 2:
                deadline = time.monotonic() + 60
                while fleet.host_name("gv-b") is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)  # hosts are placed when the fleet meets a vehicle: wait for it
                victim = fleet.actor(fleet.host_name("gv-b"))
                killed.append(ray.get(victim.pid.remote()))
                ray.kill(victim, no_restart=False)  # the actor behind the stream dies; Ray restarts it
            yield take(columns, slice(lo, lo + batch))

    async def go() -> Any:
        async with Client(running.target, OPERATOR) as client:
            stats = await client.stream(source())
            listed = await client.list_alerts(limit=10_000)
            summaries = {v: await client.get_twin(v) for v in VEHICLES}
        return stats, listed, summaries

    try:
        stats, listed, summaries = asyncio.run(go())
    finally:
        running.stop()
    assert killed
    assert stats.acked_seq == expected_applied  # every frame durably acknowledged
    assert stats.frames_acked == columns["seq"].size
    assert {a["alert_id"] for a in stats.alerts} == expected_alerts  # same alerts as in-process, none doubled
    assert len(stats.alerts) == len(expected_alerts)
    assert {a["alert_id"] for a in listed} == expected_alerts
    for vehicle, summary in summaries.items():
        assert summary.applied_seq == expected_applied[vehicle]
    assert any(a["rule"] == "sensor_fault" for a in stats.alerts)
