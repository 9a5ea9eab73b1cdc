"""One replication of a scenario under a policy, as a pure function of (config, policy, seed).

``run_replication`` builds the fleet from the generator (profiles and failures with the scenario's
levers), picks the policy and detector, runs the SimPy model to the horizon and returns KPIs and
the records behind them. It starts no Ray itself (the twin detector does, for ``whatif.twin_shards > 1``);
``parallel.py`` spreads replications over Ray tasks.

>>> from configs.settings import Config
>>> replication_seed(Config(seed=7), 2)
9
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import simpy

from configs.settings import Config, SimulationConfig, WhatIfConfig
from simulation.fleet import sample_profiles
from simulation.generator import vehicle_events
from simulation.whatif.detectors import Detector, OracleDetector, RandomDetector
from simulation.whatif.kpis import alert_lead_times_hours, compute_kpis
from simulation.whatif.model import FleetModel, MaintenancePolicy, ModelRecords
from simulation.whatif.plans import VehiclePlan, plan_from_profile
from simulation.whatif.policies import PredictivePolicy, ReactivePolicy, ScheduledPolicy
from simulation.whatif.twin_detector import TwinDetector

DETECTORS: tuple[str, ...] = ("twin", "oracle", "random")
ORACLE_LEAD_HOURS = 7 * 24.0


@dataclass(frozen=True)
class ReplicationTask:
    """Everything one replication needs; picklable, so it can travel to a Ray task."""

    scenario: str
    policy: str
    replication: int
    config: Config
    detector: str = "twin"
    models_dir: str | None = None  # a trained run directory for the twin detector


@dataclass
class ReplicationResult:
    scenario: str
    policy: str
    replication: int
    seed: int
    detector: str
    kpis: dict[str, float]
    lead_times_h: list[float]
    queue: list[tuple[float, int, int]]
    events: list[dict[str, Any]] = field(default_factory=list)
    visits: list[dict[str, Any]] = field(default_factory=list)
    vehicle_days: float = 0.0

    def row(self) -> dict[str, Any]:
        """One flat row: identifiers and KPIs (for the replications table)."""
        return {"scenario": self.scenario, "policy": self.policy, "replication": self.replication,
                "seed": self.seed, "detector": self.detector, **self.kpis}


def replication_seed(config: Config, replication: int) -> int:
    """Replication ``r`` uses seed ``config.seed + r``: the same fleets across scenarios and policies
    (common random numbers), so differences come from the scenario or the policy, not from luck."""
    return config.seed + replication


def start_ms_of(sim_cfg: SimulationConfig) -> int:
    return int(round(datetime.fromisoformat(sim_cfg.start_time).timestamp() * 1000))


def build_fleet(config: Config, seed: int) -> tuple[list[Any], list[VehiclePlan]]:
    """Generator profiles and what-if plans for the scenario's fleet (levers and ambient windows applied).

    The failures are the generator's own (``simulation.generator.vehicle_events``: one sampling for the
    telemetry and the what-if model), drawn under the scenario's ambient schedule: a heatwave raises
    each mode's hazard only while it lasts (``simulation.failures.sample_vehicle_failures``).
    """
    sim_cfg = config.simulation
    windows = config.whatif.ambient_windows
    profiles = sample_profiles(sim_cfg, seed)
    return profiles, [plan_from_profile(p, vehicle_events(p, sim_cfg, seed, ambient_windows=windows))
                      for p in profiles]


def visit_budget(config: Config) -> float:
    """Planned visits the predictive policy may order per 100 vehicle-days."""
    return config.whatif.visit_budget_per_100_vehicle_days or config.training.alert_budget_per_100_vehicle_days


def make_detector(kind: str, config: Config, seed: int, profiles: Sequence[Any], plans: Sequence[VehiclePlan],
                  models_dir: str | None) -> Detector:
    if kind == "oracle":
        return OracleDetector(plans, ORACLE_LEAD_HOURS, config.whatif.detectable_progress)
    if kind == "random":
        return RandomDetector([p.vehicle_id for p in plans], visit_budget(config), seed,
                              start_ms=start_ms_of(config.simulation))
    if kind == "twin":
        return TwinDetector.from_run(profiles, config, seed, models_dir, plans)  # whatif.twin_shards > 1: on Ray
    raise ValueError(f"unknown detector {kind!r}; choose one of {DETECTORS}")


def make_policy(name: str, config: Config, detector: Detector | None) -> MaintenancePolicy:
    w: WhatIfConfig = config.whatif
    if name == "reactive":
        return ReactivePolicy()
    if name == "scheduled":
        return ScheduledPolicy(w.scheduled_interval_days, w.scheduled_interval_km)
    if name == "predictive":
        if detector is None:
            raise ValueError("the predictive policy needs a detector")
        return PredictivePolicy(detector, risk_threshold=w.risk_threshold,
                                visits_per_100_vehicle_days=visit_budget(config), poll_hours=w.detector_poll_hours,
                                cooldown_days=w.revisit_cooldown_days)
    raise ValueError(f"unknown policy {name!r}; choose one of reactive, scheduled, predictive")


def simulate_plans(plans: Sequence[VehiclePlan], config: Config, policy: MaintenancePolicy, seed: int) -> ModelRecords:
    model = FleetModel(simpy.Environment(), plans, config.whatif,
                       horizon_days=config.simulation.duration_days_per_vehicle,
                       start_ms=start_ms_of(config.simulation), seed=seed, policy=policy)
    return model.run()


def run_replication(task: ReplicationTask) -> ReplicationResult:
    """Run one replication end to end (pure: same task, same result)."""
    config = task.config
    seed = replication_seed(config, task.replication)
    profiles, plans = build_fleet(config, seed)
    detector = (make_detector(task.detector, config, seed, profiles, plans, task.models_dir)
                if task.policy == "predictive" else None)
    policy = make_policy(task.policy, config, detector)
    try:
        records = simulate_plans(plans, config, policy, seed)
    finally:
        close = getattr(detector, "close", None)
        if close is not None:
            close()
    return result_from_records(task, seed, records)


def result_from_records(task: ReplicationTask, seed: int, records: ModelRecords) -> ReplicationResult:
    detector = task.detector if task.policy == "predictive" else "none"
    return ReplicationResult(
        scenario=task.scenario, policy=task.policy, replication=task.replication, seed=seed, detector=detector,
        kpis=compute_kpis(records, task.config.whatif.costs), lead_times_h=alert_lead_times_hours(records),
        queue=list(records.queue), events=[asdict(e) for e in records.events],
        visits=[{**asdict(v), "false_alarm": v.false_alarm} for v in records.visits],
        vehicle_days=records.num_vehicles * records.horizon_h / 24.0,
    )


def models_dir_or_none(path: str | Path | None) -> str | None:
    """A trained run directory (one holding ``models/``), or None when there is none."""
    if path is None:
        return None
    candidate = Path(path)
    return str(candidate) if (candidate / "models").is_dir() else None

