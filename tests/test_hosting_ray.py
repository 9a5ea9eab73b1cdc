"""Twins on a real local Ray: routing, restart after a kill, exactly-once effect (one Ray session)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from configs.settings import load_config
from twins.store import CheckpointStore
from twins.synthetic import synthetic_frames, take
from twins.twin import VehicleTwin
from twins.types import AlertFilter

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.integration

FPW = 60
VEHICLES = ["veh-a", "veh-b", "veh-c"]


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, namespace="evtwin-test")
    yield
    ray.shutdown()


def config(tmp_path: Path, twins_per_actor: int, *extra: str):
    return load_config(overrides=[*extra,
        "dataset.window_minutes=10", "dataset.stride_minutes=10", "twins.baseline_warmup_windows=5",
        "twins.anomaly_warmup_windows=5",
        f"twins.twins_per_actor={twins_per_actor}", f"twins.checkpoint_uri={tmp_path / 'ckpt'}",
        f"simulation.num_vehicles={len(VEHICLES)}",
    ])


def fleet_stream() -> dict[str, np.ndarray]:
    parts = []
    for v in VEHICLES:
        frames = synthetic_frames(v, 20 * FPW)
        if v == "veh-b":
            frames["motor_temp"][10 * FPW:] += np.float32(25.0)  # one real anomaly
            frames["soc"][300] = np.float32(150.0)  # one sensor fault: an impossible state of charge
        frames["vehicle_id"] = np.full(frames["seq"].size, v, dtype=object)
        parts.append(frames)
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(columns["ts"], kind="stable")
    return {k: v[order] for k, v in columns.items()}


def reference_twins(cfg, columns) -> dict[str, bytes]:
    out = {}
    for v in VEHICLES:
        mask = columns["vehicle_id"] == v
        twin = VehicleTwin(v, cfg.twins, 600_000, 600_000)
        twin.ingest({k: c[mask] for k, c in columns.items() if k != "vehicle_id"})
        out[v] = twin
    return out


def _pid_once_available(handle, attempts: int = 40) -> int:
    """The actor's pid; a call racing its restart is refused as unavailable, so ask again."""
    for _ in range(attempts):
        try:
            return ray.get(handle.pid.remote(), timeout=30)
        except ray.exceptions.ActorUnavailableError:
            time.sleep(0.25)
    raise AssertionError("the restarted actor never became available")


@pytest.mark.parametrize("twins_per_actor", [1, 2], ids=["actor-per-twin", "sharded"])
def test_killed_host_restores_and_ends_identical_to_an_uninterrupted_run(ray_session, tmp_path, twins_per_actor):
    from twins.hosting import TwinFleet

    cfg = config(tmp_path, twins_per_actor)
    fleet = TwinFleet.create(cfg, expected_vehicles=len(VEHICLES))
    columns = fleet_stream()
    acked: dict[str, int] = {}
    alerts = {}
    batch = 240
    killed = False
    for lo in range(0, columns["seq"].size, batch):
        part = take(columns, slice(lo, lo + batch))
        result = fleet.ingest(part)
        for v, s in result.acks.items():
            assert s >= acked.get(v, -1), "acks never go backwards"
            acked[v] = s
        alerts.update({a.alert_id: a for a in result.alerts})
        if not killed and lo >= columns["seq"].size // 2:
            victim = fleet.actor(fleet.host_name("veh-b"))
            old_pid = ray.get(victim.pid.remote())
            ray.kill(victim, no_restart=False)
            killed = True
            # Re-send the last batch as a client would after a disconnect: no double effect.
            fleet.ingest(part)
            assert _pid_once_available(victim) != old_pid
    assert killed and acked == {v: 20 * FPW for v in VEHICLES}
    reference = reference_twins(cfg, columns)
    for v in VEHICLES:
        live = VehicleTwin.from_bytes(ray.get(fleet.actor(fleet.host_name(v)).twin_bytes.remote(v)))
        live.duplicates = reference[v].duplicates
        assert live.to_bytes() == reference[v].to_bytes(), v
    rules = sorted((a.vehicle_id, a.rule) for a in alerts.values())
    assert rules == [("veh-b", "anomaly"), ("veh-b", "sensor_fault")]
    assert [a.rule for a in fleet.alerts(AlertFilter(vehicle_id="veh-b", rule="anomaly"))] == ["anomaly"]
    summary = fleet.summary("veh-b")
    assert summary["acked_seq"] == 20 * FPW and summary["frames_applied"] == 20 * FPW
    assert fleet.list_twins() == VEHICLES
    assert fleet.summary("nobody") is None
    fleet.close()


def test_twins_are_found_again_by_name(ray_session, tmp_path):
    from twins.hosting import TwinFleet

    cfg = config(tmp_path, 1)
    first = TwinFleet.create(cfg)
    first.ingest(take(fleet_stream(), slice(0, 30)))
    second = TwinFleet.create(cfg)  # e.g. a second gRPC server process in the same namespace
    name = second.host_name("veh-a")
    t0 = time.perf_counter()
    assert second.summary("veh-a")["applied_seq"] is not None
    assert ray.get(second.actor(name).pid.remote()) == ray.get(first.actor(name).pid.remote())
    assert time.perf_counter() - t0 < 30
    first.close()


def test_an_actor_that_stays_dead_is_replaced_by_a_new_one_restoring_its_checkpoints(ray_session, tmp_path):
    from twins.hosting import TwinFleet

    cfg = config(tmp_path, 1)
    fleet = TwinFleet.create(cfg, expected_vehicles=len(VEHICLES))
    columns = fleet_stream()
    acked: dict[str, int] = {}
    batch = 240
    for lo in range(0, columns["seq"].size, batch):
        if lo == batch * 5:
            ray.kill(fleet.actor(fleet.host_name("veh-b")), no_restart=True)  # Ray will not bring it back
        for v, s in fleet.ingest(take(columns, slice(lo, lo + batch))).acks.items():
            acked[v] = max(acked.get(v, -1), s)
    assert fleet.reacquired >= 1 and acked == {v: 20 * FPW for v in VEHICLES}
    reference = reference_twins(cfg, columns)
    for v in VEHICLES:
        live = VehicleTwin.from_bytes(ray.get(fleet.actor(fleet.host_name(v)).twin_bytes.remote(v)))
        live.duplicates = reference[v].duplicates
        assert live.to_bytes() == reference[v].to_bytes(), v
    fleet.close()


class FixedRiskPredictor:
    """An injected predictor that needs no model service: every row gets the same answer at once."""

    def submit(self, vehicle_ids, window_end_ms, X):
        return len(vehicle_ids)

    def poll(self, ticket):
        from twins.host import PredictionBatch

        return PredictionBatch(risk=[{7: 0.9, 14: 0.95, 30: 0.99}] * ticket, severity=[3] * ticket,
                               mode=["coolant_pump"] * ticket, contributions=[[("x", 1.0)]] * ticket)


def no_model_service():
    raise ConnectionError("model service not deployed")


def test_host_actors_build_their_predictor_from_the_injected_factory(ray_session, tmp_path):
    """The twins reach model services only through ``predictor_factory`` (serving passes ServePredictor);
    a factory that fails leaves the twins running without predictions."""
    import sys

    from ray import cloudpickle

    from twins.hosting import TwinFleet

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    columns = fleet_stream()
    found = {}
    for name, factory in (("fixed", FixedRiskPredictor), ("broken", no_model_service)):
        cfg = load_config(overrides=[f"{k}={v}" for k, v in (
            ("dataset.window_minutes", 10), ("dataset.stride_minutes", 10), ("twins.twins_per_actor", 2),
            ("twins.prediction_interval_minutes", 10), ("twins.checkpoint_uri", tmp_path / name / "ckpt"),
            ("simulation.num_vehicles", len(VEHICLES)))])
        fleet = TwinFleet.create(cfg, expected_vehicles=len(VEHICLES), predictor_factory=factory)
        alerts = []
        for lo in range(0, columns["seq"].size, 600):
            result = fleet.ingest(take(columns, slice(lo, lo + 600)))
            assert result.applied == min(600, columns["seq"].size - lo)  # predictions never hold ingestion up
            alerts += result.alerts
        alerts += fleet.drain(timeout_s=10)
        found[name] = ([a for a in alerts if a.rule == "failure_risk"], fleet.summary("veh-a")["risk"],
                       fleet.stats()["predictions_answered"])
        fleet.close()
    risk_alerts, risk, answered = found["fixed"]
    assert answered > 0 and risk == {"7": 0.9, "14": 0.95, "30": 0.99}
    assert {(a.vehicle_id, a.mode, a.severity) for a in risk_alerts} == {(v, "coolant_pump", 3) for v in VEHICLES}
    assert found["broken"] == ([], {}, 0)


def _named_actors() -> set[str]:
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}


@pytest.mark.parametrize("twins_per_actor", [1, 2], ids=["actor-per-twin", "sharded"])
def test_lookups_never_create_twins_or_actors(ray_session, tmp_path, twins_per_actor):
    from twins.hosting import TwinFleet

    fleet = TwinFleet.create(config(tmp_path, twins_per_actor), expected_vehicles=len(VEHICLES))
    before = _named_actors()
    for ghost in ("ghost-1", "ghost-2", "veh-a"):
        assert fleet.summary(ghost) is None
    assert fleet.alerts(AlertFilter(vehicle_id="ghost-1")) == []
    assert _named_actors() == before and fleet.actors == {} and fleet.list_twins() == []
    assert CheckpointStore(str(tmp_path / "ckpt")).list() == []
    fleet.close()


def test_idle_hosts_are_released_and_their_twins_and_alerts_come_back(ray_session, tmp_path):
    from twins.hosting import TwinFleet

    cfg = config(tmp_path, 1, "twins.idle_release_s=1.0")
    fleet = TwinFleet.create(cfg, expected_vehicles=len(VEHICLES))
    columns = fleet_stream()
    only = {v: {k: c[columns["vehicle_id"] == v] for k, c in columns.items()} for v in VEHICLES}
    raised = fleet.ingest(take(only["veh-b"], slice(0, 400))).alerts  # includes the sensor fault at frame 300
    assert [a.rule for a in raised] == ["sensor_fault"]
    fleet.ingest(take(only["veh-a"], slice(0, 100)))
    name_b = fleet.host_name("veh-b")
    assert name_b in _named_actors()
    time.sleep(1.5)
    fleet.ingest(take(only["veh-a"], slice(100, 200)))  # traffic for veh-a only: veh-b's host is released
    assert name_b not in _named_actors() and name_b not in fleet.actors
    assert fleet.summary("veh-b")["applied_seq"] == 400  # answered from the checkpoint, no actor started
    assert name_b not in _named_actors()
    resumed = fleet.ingest(take(only["veh-b"], slice(400, 500)))
    assert resumed.acks == {"veh-b": 500}  # back from its checkpoint
    fleet.close()
    restarted = TwinFleet.create(cfg, expected_vehicles=len(VEHICLES))  # a server restart: alert history kept
    history = [a.alert_id for a in restarted.alerts(AlertFilter(vehicle_id="veh-b"))]
    assert history == [a.alert_id for a in raised + resumed.alerts] and len(history) >= 1
    restarted.close()
