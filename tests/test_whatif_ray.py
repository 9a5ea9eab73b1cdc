"""Replications as Ray tasks give exactly the results of running them in process."""
from __future__ import annotations

import pytest

from simulation.whatif.parallel import run_tasks
from simulation.whatif.runner import ReplicationTask
from simulation.whatif.scenarios import load_scenario

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_replications_as_ray_tasks_match_the_in_process_run(ray_session) -> None:
    config = load_scenario("baseline", overrides=["simulation.num_vehicles=30",
                                                  "simulation.duration_days_per_vehicle=20"]).config
    tasks = [ReplicationTask("baseline", policy, r, config, "oracle") for policy in ("reactive", "predictive")
             for r in range(2)]
    seen: list[tuple[str, int]] = []
    remote = run_tasks(tasks, on_result=lambda result: seen.append((result.policy, result.replication)))
    local = run_tasks(tasks, num_cpus=0)
    assert ray_session.is_initialized()  # joined the module's session, did not shut it down
    assert sorted(seen) == sorted((t.policy, t.replication) for t in tasks)
    assert [(r.policy, r.replication) for r in remote] == [(t.policy, t.replication) for t in tasks]
    assert [repr(r.kpis) for r in remote] == [repr(r.kpis) for r in local]  # repr: NaN equals NaN
    assert remote[0].kpis != remote[1].kpis  # replications differ by seed


def test_twins_on_the_ray_twin_fleet_give_the_in_process_result(ray_session) -> None:
    """The what-if's twins hosted by twins.hosting.TwinFleet (3 shard actors, each with a LocalPredictor on the
    same failure model) give the alerts and visits of the same twins hosted by one in-process TwinHost."""
    from serving.deployments import demo_models
    from simulation.whatif.runner import build_fleet, make_policy, simulate_plans
    from simulation.whatif.twin_detector import TwinDetector
    from training.features import FEATURE_NAMES
    from twins.hosting import TwinFleet

    config = load_scenario("baseline", overrides=["simulation.num_vehicles=8", "simulation.duration_days_per_vehicle=6",
                                                  "whatif.visit_budget_per_100_vehicle_days=30",
                                                  "twins.risk_alert_threshold=0.3"]).config
    failure_model = demo_models(rows=400, seed=1, feature_names=FEATURE_NAMES)[0]
    profiles, plans = build_fleet(config, 3)
    single = TwinDetector(profiles, config, 3, plans=plans, failure_model=failure_model)
    sharded = TwinDetector.on_ray(profiles, config, 3, plans=plans, failure_model=failure_model, shards=3)
    try:
        one = simulate_plans(plans, config, make_policy("predictive", config, single), 3)
        many = simulate_plans(plans, config, make_policy("predictive", config, sharded), 3)
        assert isinstance(sharded.hosting, TwinFleet) and len(sharded.hosting.actors) > 1
        assert sharded.stats() == single.stats()
        assert sharded.hosting.stats()["predictions_answered"] > 0
    finally:
        sharded.close()
    assert {a.source for a in one.alerts} >= {"failure_risk", "anomaly"}
    assert one.alerts == many.alerts
    assert any(v.reason == "predictive" for v in one.visits)
    assert [(v.vehicle_id, v.reason, v.arrive_h) for v in one.visits] == \
        [(v.vehicle_id, v.reason, v.arrive_h) for v in many.visits]
    assert ray_session.is_initialized()
