"""The SimPy what-if model: resources, conservation of failures, determinism, policies."""
from __future__ import annotations

import math
import random

import pytest
import simpy

from configs.settings import Config, WhatIfConfig
from simulation.whatif.detectors import OracleDetector, RandomDetector
from simulation.whatif.kpis import compute_kpis
from simulation.whatif.model import CAUGHT_EARLY, PENDING, ROADSIDE, FleetModel
from simulation.whatif.plans import MS_PER_DAY, MS_PER_HOUR, FailureSpec, VehiclePlan
from simulation.whatif.policies import PredictivePolicy, ReactivePolicy, ScheduledPolicy

MODES = tuple(WhatIfConfig().repair_hours_by_mode)


def random_plans(n: int, days: float, seed: int) -> list[VehiclePlan]:
    """A hand-rolled fleet for model tests (the generator-backed fleet is tested in test_whatif_fleet)."""
    rng = random.Random(seed)
    plans = []
    for i in range(n):
        events = []
        if rng.random() < 0.3:
            for _k in range(rng.randint(1, 2)):
                onset = rng.uniform(-10, days) * MS_PER_DAY
                span = rng.uniform(5, 25) * MS_PER_DAY
                events.append((int(onset), int(onset + span), rng.choice(MODES), rng.randint(1, 3)))
        events.sort()
        specs = tuple(FailureSpec(k, mode, onset, failure, sev) for k, (onset, failure, mode, sev) in enumerate(events))
        duty = rng.choice(["commuter", "taxi", "delivery"])
        plans.append(VehiclePlan(f"V{i:03d}", duty, {"commuter": 45, "taxi": 200, "delivery": 120}[duty],
                                 {"commuter": 2, "taxi": 14, "delivery": 12}[duty], 60.0, 0.3, specs))
    return plans


def run(plans, cfg: WhatIfConfig, policy=None, days: float = 60, seed: int = 3):
    model = FleetModel(simpy.Environment(), plans, cfg, horizon_days=days, start_ms=0, seed=seed, policy=policy)
    return model.run()


def predictive(detector, budget: float = 2.0) -> PredictivePolicy:
    return PredictivePolicy(detector, risk_threshold=0.5, visits_per_100_vehicle_days=budget, poll_hours=6.0,
                            cooldown_days=3.0)


def test_one_bay_queue_matches_the_hand_computed_case() -> None:
    # Three breakdowns at 10 h, 11 h and 12 h, 5 h repairs each, one bay and one technician, no tow,
    # no inspection, no parts wait: repairs run 10-15, 15-20, 20-25, so the waits are 0, 4 and 8 h.
    cfg = WhatIfConfig(workshop_bays=1, technicians=1, inspection_hours=0, tow_hours=0, repair_hours_by_mode={"x": 5.0},
                       severity_repair_multiplier=[1.0, 1.0, 1.0], parts_lead_time_hours=[0.0, 0.0, 0.0],
                       roadside_repair_multiplier=1.0, queue_sample_hours=1.0)
    plans = [VehiclePlan(f"V{i}", "commuter", 40.0, 2, 60.0, 0.0,
                         (FailureSpec(0, "x", 0, (10 + i) * MS_PER_HOUR, 1),)) for i in range(3)]
    records = run(plans, cfg, days=2)
    visits = sorted(records.visits, key=lambda v: v.arrive_h)
    assert [v.first_bay_h for v in visits] == [10.0, 15.0, 20.0]
    assert [v.released_h for v in visits] == [15.0, 20.0, 25.0]
    assert [v.first_bay_h - v.queued_h for v in visits] == [0.0, 4.0, 8.0]
    assert [records.downtime_h[f"V{i}"] for i in range(3)] == [5.0, 9.0, 13.0]
    queue = {t: waiting for t, waiting, _ in records.queue}
    assert (queue[13.0], queue[16.0], queue[21.0]) == (2, 1, 0)
    assert records.technician_busy_h == pytest.approx(15.0)
    assert compute_kpis(records, Config().whatif.costs)["mean_workshop_wait_hours"] == pytest.approx(4.0)


def _caught_at_a_planned_visit(severity: int):
    # A degradation caught at a planned visit at 2 h: 1 h inspection, 24 h for parts, a 3 h repair.
    cfg = WhatIfConfig(workshop_bays=1, technicians=1, inspection_hours=1.0, repair_hours_by_mode={"x": 3.0},
                       severity_repair_multiplier=[1.0, 1.0, 1.0], parts_lead_time_hours=[24.0, 24.0, 24.0],
                       detectable_progress=0.0)
    plan = VehiclePlan("V0", "commuter", 40.0, 2, 60.0, 0.0, (FailureSpec(0, "x", 0, 20 * MS_PER_DAY, severity),))
    model = FleetModel(simpy.Environment(), [plan], cfg, horizon_days=5, start_ms=0, seed=1)
    model.start()
    model.env.run(until=2.0)
    assert model.send_to_workshop(model.vehicles[0], "predictive")
    return model.run()


def test_a_minor_fault_caught_early_drives_on_until_its_parts_arrive() -> None:
    records = _caught_at_a_planned_visit(severity=2)
    inspection, repair = sorted(records.visits, key=lambda v: v.arrive_h)
    assert (inspection.reason, inspection.caught_early, inspection.released_h) == ("predictive", 1, 3.0)
    assert (repair.reason, repair.booked_repairs, repair.arrive_h, repair.released_h) == ("repair", 1, 27.0, 30.0)
    assert not inspection.false_alarm and not repair.false_alarm
    assert records.events[0].outcome == CAUGHT_EARLY and records.events[0].resolved_h == 27.0
    assert records.downtime_h["V0"] == pytest.approx(4.0)
    assert records.technician_busy_h == pytest.approx(4.0)


def test_a_critical_fault_caught_early_keeps_the_vehicle_in_the_yard_while_the_bay_is_free() -> None:
    records = _caught_at_a_planned_visit(severity=3)
    (visit,) = records.visits
    assert visit.released_h == pytest.approx(2.0 + 1.0 + 24.0 + 3.0)
    assert records.events[0].outcome == CAUGHT_EARLY and records.events[0].resolved_h == 3.0
    assert records.bay_busy_h == pytest.approx(4.0)  # the bay was free during the 24 h parts wait


def test_failures_due_counts_parts_due_to_fail_within_the_horizon_whoever_caught_them() -> None:
    costs = Config().whatif.costs
    # Caught early on day 0 but only due on day 20, past the 5-day horizon: not a failure of this run.
    caught = compute_kpis(_caught_at_a_planned_visit(severity=2), costs)
    assert (caught["caught_early"], caught["failures_due"]) == (1.0, 0.0)
    plans = [VehiclePlan(f"V{i}", "commuter", 40.0, 2, 60.0, 0.0,
                         (FailureSpec(0, "x", 0, (10 + 30 * i) * MS_PER_HOUR, 1),)) for i in range(3)]
    reactive = compute_kpis(run(plans, WhatIfConfig(), days=2), costs)  # due at 10 h, 40 h; 70 h is past 48 h
    assert (reactive["roadside_failures"], reactive["failures_due"]) == (2.0, 2.0)


@pytest.mark.parametrize("policy_name", ["reactive", "scheduled", "oracle", "random"])
def test_every_failure_is_caught_early_or_on_the_road_never_both(policy_name: str) -> None:
    days = 60
    plans = random_plans(80, days, seed=11)
    policy = {
        "reactive": lambda: ReactivePolicy(),
        "scheduled": lambda: ScheduledPolicy(interval_days=14, interval_km=3000),
        "oracle": lambda: predictive(OracleDetector(plans, detectable_progress=0.25)),
        "random": lambda: predictive(RandomDetector([p.vehicle_id for p in plans], 2.0, seed=5)),
    }[policy_name]()
    records = run(plans, WhatIfConfig(), policy, days=days)
    started = {(p.vehicle_id, e.event_id): e for p in plans for e in p.events if e.onset_ms < days * MS_PER_DAY}
    assert {(e.vehicle_id, e.event_id) for e in records.events} == set(started)
    for row in records.events:
        if row.failure_h <= days * 24:
            assert row.outcome in (CAUGHT_EARLY, ROADSIDE)
        else:
            assert row.outcome in (CAUGHT_EARLY, PENDING)
        if row.outcome == CAUGHT_EARLY:
            assert row.onset_h <= row.resolved_h < row.failure_h
        if row.outcome == ROADSIDE:
            assert row.resolved_h == pytest.approx(row.failure_h)
    assert sum(e.outcome == ROADSIDE for e in records.events) > 0
    visits_repairing = sum(v.repaired_failures for v in records.visits)
    completed_roadside = sum(1 for e in records.events if e.outcome == ROADSIDE)
    assert visits_repairing <= completed_roadside  # a failure is repaired at most once


def test_the_same_seed_gives_the_same_run_and_another_seed_does_not() -> None:
    plans = random_plans(40, 30, seed=2)
    cfg = WhatIfConfig()

    def kpis(seed: int) -> dict:
        policy = ScheduledPolicy(interval_days=10, interval_km=2000)
        records = run(plans, cfg, policy, days=30, seed=seed)
        return compute_kpis(records, cfg.costs) | {"km": records.km_driven, "queue": records.queue}

    first, second, other = kpis(4), kpis(4), kpis(5)
    assert first == second
    assert first["km"] != other["km"]


def test_predictive_with_a_perfect_oracle_beats_reactive_and_a_random_detector_does_not() -> None:
    days = 90
    cfg = WhatIfConfig()
    totals: dict[str, list[float]] = {"reactive": [], "oracle": [], "random": []}
    roadside: dict[str, int] = {"reactive": 0, "oracle": 0, "random": 0}
    for seed in range(3):
        plans = random_plans(120, days, seed=100 + seed)
        for name, policy in {
            "reactive": ReactivePolicy(),
            "oracle": predictive(OracleDetector(plans, detectable_progress=0.25)),
            "random": predictive(RandomDetector([p.vehicle_id for p in plans], 2.0, seed=seed)),
        }.items():
            records = run(plans, cfg, policy, days=days, seed=seed)
            k = compute_kpis(records, cfg.costs)
            totals[name].append(k["total_cost"])
            roadside[name] += int(k["roadside_failures"])
    assert roadside["oracle"] < 0.5 * roadside["reactive"]
    assert sum(totals["oracle"]) < 0.8 * sum(totals["reactive"])
    assert roadside["random"] > 0.75 * roadside["reactive"]
    assert sum(totals["random"]) > sum(totals["reactive"])


def test_charging_at_shared_dc_chargers_queues_when_chargers_are_scarce() -> None:
    plans = [VehiclePlan(f"T{i}", "taxi", 260.0, 12, 50.0, 1.0, ()) for i in range(30)]
    few = run(plans, WhatIfConfig(dc_chargers_per_100_vehicles=3.4), days=5)  # one charger
    many = run(plans, WhatIfConfig(dc_chargers_per_100_vehicles=100.0), days=5)
    assert max(many.charger_waits_h) == 0.0
    assert sum(few.charger_waits_h) > 10.0
    assert math.isclose(sum(few.downtime_h.values()), 0.0)


def test_scheduled_policy_inspects_each_vehicle_once_per_interval() -> None:
    plans = [VehiclePlan(f"C{i}", "commuter", 20.0, 2, 60.0, 0.0, ()) for i in range(20)]
    records = run(plans, WhatIfConfig(inspection_hours=1.0), ScheduledPolicy(interval_days=10, interval_km=1e9), days=40)
    per_vehicle = {p.vehicle_id: 0 for p in plans}
    for visit in records.visits:
        assert visit.reason == "scheduled" and visit.false_alarm
        per_vehicle[visit.vehicle_id] += 1
    assert set(per_vehicle.values()) <= {3, 4}  # 40 days / 10-day interval, from a random phase


def test_predictive_policy_stays_within_its_visit_budget() -> None:
    plans = random_plans(100, 30, seed=9)
    always = RandomDetector([p.vehicle_id for p in plans], 500.0, seed=1)  # far more alerts than visits allowed
    records = run(plans, WhatIfConfig(), predictive(always, budget=1.0), days=30)
    ordered = [v for v in records.visits if v.reason == "predictive"]
    assert len(records.alerts) > 10 * len(ordered)
    assert 25 <= len(ordered) <= 30  # 1 visit per 100 vehicle-days x 100 vehicles x 30 days
