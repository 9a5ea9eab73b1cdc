"""The what-if model on the generator's fleet: one sampling of failures, conservation, determinism,
heatwave failures, real twins in the predictive loop, and the CLI."""
from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from simulation.whatif.model import CAUGHT_EARLY, ROADSIDE
from simulation.whatif.plans import MS_PER_DAY
from simulation.whatif.runner import ReplicationTask, build_fleet, make_policy, run_replication, simulate_plans
from simulation.whatif.scenarios import load_scenario

SMALL = ["simulation.num_vehicles=60", "simulation.duration_days_per_vehicle=45"]


def small(name: str = "baseline", extra: tuple[str, ...] = ()):
    return load_scenario(name, overrides=[*SMALL, *extra]).config


def test_the_fleet_uses_the_generators_failures_unchanged() -> None:
    from simulation.fleet import sample_profiles
    from simulation.generator import vehicle_events

    config = small()
    profiles, plans = build_fleet(config, seed=3)
    assert [p.vehicle_id for p in plans] == [p.vehicle_id for p in sample_profiles(config.simulation, 3)]
    for profile, plan in zip(profiles, plans, strict=False):
        truth = vehicle_events(profile, config.simulation, 3)
        assert sorted((e.mode, e.onset_ms, e.failure_ms, e.severity) for e in truth) == \
            sorted((e.mode, e.onset_ms, e.failure_ms, e.severity) for e in plan.events)
    assert sum(len(p.events) for p in plans) > 10


@pytest.mark.parametrize("policy, detector", [("reactive", "oracle"), ("scheduled", "oracle"), ("predictive", "oracle"),
                                              ("predictive", "random")])
def test_every_generated_failure_is_caught_early_or_on_the_road(policy: str, detector: str) -> None:
    config = small()
    result = run_replication(ReplicationTask("baseline", policy, 0, config, detector))
    horizon_h = config.simulation.duration_days_per_vehicle * 24
    observed = [e for e in result.events if e["failure_h"] <= horizon_h]
    assert observed
    for e in observed:
        assert (e["outcome"] == CAUGHT_EARLY) != (e["outcome"] == ROADSIDE)
    assert result.kpis["roadside_failures"] + result.kpis["caught_early"] + result.kpis["pending_failures"] \
        == len(result.events)


def test_a_replication_is_a_pure_function_of_its_seed() -> None:
    config = small()
    first = run_replication(ReplicationTask("baseline", "scheduled", 1, config, "oracle"))
    again = run_replication(ReplicationTask("baseline", "scheduled", 1, config, "oracle"))
    other = run_replication(ReplicationTask("baseline", "scheduled", 2, config, "oracle"))
    assert repr(first.kpis) == repr(again.kpis)  # repr: NaN equals NaN
    assert first.events == again.events and first.queue == again.queue
    assert first.events != other.events


def test_the_heatwave_fleet_has_the_samplers_failures_under_the_windows() -> None:
    """One path: the plans hold exactly what the failure sampler draws under the ambient schedule,
    and the twins' streams are given the same failures."""
    from simulation.failures import sample_vehicle_failures
    from simulation.whatif.twin_detector import TwinDetector

    config = small("heatwave", extra=("simulation.num_vehicles=150",))
    windows = config.whatif.ambient_windows
    profiles, plans = build_fleet(config, 4)
    moved = 0
    for profile, plan in zip(profiles, plans, strict=False):
        direct = sample_vehicle_failures(profile, config.simulation, 4, ambient_windows=windows)
        plain = {e.mode: e.failure_ms for e in sample_vehicle_failures(profile, config.simulation, 4)}
        assert list(plan.source_events) == sorted(direct, key=lambda e: (e.failure_ms, e.mode))  # observed flag too
        moved += sum(e.failure_ms != plain.get(e.mode) for e in direct)
    assert moved > 0
    detector = TwinDetector(profiles[:3], config, 4, plans=plans[:3])
    for plan in plans[:3]:
        assert detector.events[plan.vehicle_id] == list(plan.source_events)


def test_a_heatwave_moves_failures_the_way_the_generators_hazard_moves() -> None:
    from simulation.failures import hazard_per_day

    config = small("heatwave")
    offset = config.whatif.ambient_windows[0].offset_c
    base_plans = build_fleet(small(), 5)[1]
    profiles, hot_plans = build_fleet(config, 5)
    # Heat-driven modes fail sooner in the heatwave, a cold-stressed 12 V battery of a cold-climate
    # vehicle later (the warm spell relieves it), tyres and brakes not at all (up to ms rounding).
    moved = 0
    for profile, b, h in zip(profiles, base_plans, hot_plans, strict=False):
        base_times = {e.mode: e.failure_ms for e in b.events}
        for e in h.events:
            if e.mode not in base_times:
                continue
            ratio = (hazard_per_day(e.mode, profile, config.simulation, offset)
                     / hazard_per_day(e.mode, profile, config.simulation))
            if ratio > 1.0:
                assert e.failure_ms <= base_times[e.mode] + 2
            elif ratio < 1.0:
                assert e.failure_ms >= base_times[e.mode] - 2
            else:
                assert abs(e.failure_ms - base_times[e.mode]) <= 2
            moved += abs(e.failure_ms - base_times[e.mode]) > 2
    assert moved > 0


class _FixedRiskModel:
    """A stand-in for the trained failure model: high risk for the listed vehicles' feature rows."""

    def __init__(self, risk: float) -> None:
        self.risk = risk
        self.rows = 0

    def predict(self, X: np.ndarray) -> dict[int, np.ndarray]:
        self.rows += X.shape[0]
        return {7: np.full(X.shape[0], self.risk), 14: np.full(X.shape[0], self.risk)}


def test_frames_flow_through_real_twins_and_their_alerts_drive_the_predictive_policy() -> None:
    from simulation.whatif.twin_detector import TwinDetector

    config = small(extra=("simulation.num_vehicles=6", "simulation.duration_days_per_vehicle=4",
                          "whatif.visit_budget_per_100_vehicle_days=50"))
    profiles, plans = build_fleet(config, 1)
    quiet = TwinDetector(profiles, config, 1, plans=plans, failure_model=_FixedRiskModel(0.01))
    alarmed_model = _FixedRiskModel(0.99)
    alarmed = TwinDetector(profiles, config, 1, plans=plans, failure_model=alarmed_model)
    quiet_records = simulate_plans(plans, config, make_policy("predictive", config, quiet), 1)
    alarmed_records = simulate_plans(plans, config, make_policy("predictive", config, alarmed), 1)
    frames_per_day = 86_400 / config.whatif.twin_frame_interval_s
    assert alarmed.frames == pytest.approx(6 * 4 * frames_per_day, rel=0.1)
    assert alarmed_model.rows > 0
    assert alarmed.alerts_by_rule.get("failure_risk", 0) > 0
    assert not any(a.source == "failure_risk" for a in quiet_records.alerts)
    assert any(a.source == "failure_risk" for a in alarmed_records.alerts)
    planned = [v for v in alarmed_records.visits if v.reason == "predictive"]
    assert len(planned) > len([v for v in quiet_records.visits if v.reason == "predictive"])


def test_simulate_command_writes_parquet_markdown_and_png(tmp_path) -> None:
    from serving.cli import main

    out = tmp_path / "run"
    code = main(["simulate", "--scenario", "baseline", "--policy", "reactive", "--policy", "scheduled",
                 "--replications", "2", "--workers", "0", "--out", str(out),
                 "--set", "simulation.num_vehicles=20", "--set", "simulation.duration_days_per_vehicle=20"])
    assert code == 0
    whatif = out / "whatif"
    for name in ("replications.parquet", "summary.parquet", "differences.parquet", "events.parquet", "queue.parquet",
                 "report.md",
                 "downtime_cost_by_policy.png", "lead_times.png", "workshop_queue.png"):
        assert (whatif / name).stat().st_size > 0, name
    rows = pq.read_table(whatif / "replications.parquet").to_pylist()
    assert {(r["policy"], r["replication"]) for r in rows} == {(p, r) for p in ("reactive", "scheduled") for r in (0, 1)}
    summary = pq.read_table(whatif / "summary.parquet").to_pylist()
    cost = next(r for r in summary if r["policy"] == "reactive" and r["kpi"] == "total_cost")
    assert cost["ci_low"] <= cost["mean"] <= cost["ci_high"] and not math.isnan(cost["ci_low"])
    report = (whatif / "report.md").read_text()
    assert "How many roadside failures" in report and "| baseline | scheduled |" in report
    differences = pq.read_table(whatif / "differences.parquet").to_pylist()
    assert {(d["policy"], d["reference"], d["pairs"]) for d in differences} == {("scheduled", "reactive", 2)}


def test_predictive_without_a_trained_run_is_refused_with_advice(tmp_path, capsys) -> None:
    from serving.cli import main

    code = main(["simulate", "--policy", "predictive", "--replications", "1", "--workers", "0",
                 "--models", str(tmp_path / "nothing"), "--out", str(tmp_path / "run")])
    assert code == 2
    assert "--detector oracle" in capsys.readouterr().err


def test_the_twins_see_hotter_frames_only_inside_the_heatwave() -> None:
    from simulation.whatif.twin_detector import TwinDetector, coarse_simulation, vehicle_frame_batches
    from twins.twin import SENSORS

    config = small("heatwave", extra=("simulation.num_vehicles=1", "simulation.duration_days_per_vehicle=4",
                                      "whatif.ambient_windows=[{\"start_day\": 1, \"duration_days\": 2, \"offset_c\": 12}]"))
    profiles, _ = build_fleet(config, 2)
    detector = TwinDetector(profiles, config, 2)
    spliced = list(detector.streams[profiles[0].vehicle_id])
    plain = list(vehicle_frame_batches(profiles[0], coarse_simulation(config.simulation, 600.0), 2,
                                       config.whatif.detector_poll_hours * 3600))
    assert len(spliced) == len(plain)
    start_ms = plain[0].first_ts
    ambient = SENSORS.index("ambient_temp")
    for hot, cool in zip(spliced, plain, strict=False):
        day = (hot.first_ts - start_ms) / MS_PER_DAY
        difference = np.nanmean(hot.values[:, ambient]) - np.nanmean(cool.values[:, ambient])
        if 1 <= day < 3:
            assert difference == pytest.approx(12.0, abs=1.0)
        else:
            assert difference == pytest.approx(0.0, abs=1e-6)


def test_a_repair_restarts_the_vehicles_stream_without_the_repaired_failure_and_without_gaps() -> None:
    from simulation.whatif.twin_detector import TwinDetector

    config = small(extra=("simulation.num_vehicles=40", "simulation.duration_days_per_vehicle=6"))
    profiles, plans = build_fleet(config, 4)
    plan = next(p for p in plans if p.events)
    profile = next(p for p in profiles if p.vehicle_id == plan.vehicle_id)
    detector = TwinDetector([profile], config, 4, plans=[plan])
    from simulation.fleet import observation_window

    begin, end = observation_window(config.simulation)
    middle = begin + 3 * MS_PER_DAY
    detector.observe(middle)
    seen_before = detector.frames
    detector.notify_repair(plan.vehicle_id, middle, plan.events[:1])
    assert detector.restarts == 1 and detector.events[plan.vehicle_id] == list(plan.source_events[1:])
    detector.observe(end)
    twin = detector.twins[plan.vehicle_id]
    frames_per_day = 86_400 / config.whatif.twin_frame_interval_s
    assert detector.frames == pytest.approx(6 * frames_per_day, abs=1)  # nothing twice, nothing missing
    assert seen_before == pytest.approx(3 * frames_per_day, abs=1)
    assert twin.duplicates == 0


def test_the_frames_the_what_if_hands_the_twin_host_are_what_the_host_makes_of_the_generators_batches() -> None:
    """FrameBatch.concat of several vehicles' polls (what the detector hands the host) == FrameBatch.from_columns of
    the generator's Arrow batches."""
    import pyarrow as pa

    from configs.frames import FrameBatch
    from simulation.generator import stream_vehicle_batches
    from simulation.whatif.twin_detector import coarse_simulation, vehicle_frame_batches

    config = small(extra=("simulation.num_vehicles=3", "simulation.duration_days_per_vehicle=2"))
    profiles, plans = build_fleet(config, 6)
    sim_cfg = coarse_simulation(config.simulation, config.whatif.twin_frame_interval_s)
    ours = {p.vehicle_id: list(vehicle_frame_batches(p, sim_cfg, 6, 6 * 3600.0, events=list(plan.source_events)))[:3]
            for p, plan in zip(profiles, plans, strict=False)}
    arrow = [b for p, plan in zip(profiles, plans, strict=False)
             for b in list(stream_vehicle_batches(p, sim_cfg, 6, 6 * 3600.0, events=list(plan.source_events)))[:3]]
    block = FrameBatch.concat([batch for batches in ours.values() for batch in batches])
    expected, rejected = FrameBatch.from_columns(pa.Table.from_batches(arrow))
    assert not rejected and block.vehicle_ids == expected.vehicle_ids == [p.vehicle_id for p in profiles]
    np.testing.assert_array_equal(block.offsets, expected.offsets)
    np.testing.assert_array_equal(block.seq, expected.seq)
    np.testing.assert_array_equal(block.ts, expected.ts)
    np.testing.assert_array_equal(block.values, expected.values)  # NaN == NaN here
    nothing = FrameBatch.concat([])
    assert nothing.rows == 0 and nothing.vehicle_ids == [] and nothing.offsets.tolist() == [0]
