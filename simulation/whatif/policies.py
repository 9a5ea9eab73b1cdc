"""Maintenance policies: when does a vehicle go to the workshop before it breaks down?

- ``ReactivePolicy``: never; fix what fails.
- ``ScheduledPolicy``: an inspection every N days or every K km, whichever comes first.
- ``PredictivePolicy``: act on a detector's risk signals at or above a threshold, ordering at most
  the visit budget (visits per 100 vehicle-days, a token bucket), riskiest vehicles first.

Each is a small object whose ``start(model)`` adds its SimPy processes to the model.

>>> ScheduledPolicy(interval_days=30, interval_km=5000).name
'scheduled'
"""
from __future__ import annotations

from collections.abc import Generator, Sequence

import simpy

from simulation.whatif.detectors import Detector
from simulation.whatif.model import FleetModel, VehicleState
from simulation.whatif.plans import FailureSpec

SCHEDULE_CHECK_HOUR = 6.0  # scheduled visits are ordered at 06:00, before the day's trips


class ReactivePolicy:
    """Fix on failure: no planned visits at all."""

    name = "reactive"

    def start(self, model: FleetModel) -> None:
        return None

    def on_repair(self, model: FleetModel, vehicle: VehicleState, events: Sequence[FailureSpec]) -> None:
        return None


class ScheduledPolicy:
    """An inspection every ``interval_days`` or ``interval_km`` since the last workshop visit.

    Vehicles start at random points of their service interval (seeded), as a real fleet does.
    """

    name = "scheduled"

    def __init__(self, interval_days: float, interval_km: float) -> None:
        if interval_days <= 0 or interval_km <= 0:
            raise ValueError(f"scheduled intervals must be > 0 (got {interval_days} days, {interval_km} km)")
        self.interval_h = interval_days * 24.0
        self.interval_km = interval_km

    def start(self, model: FleetModel) -> None:
        for v in model.vehicles:
            phase = model.rng.random()
            v.last_service_h = -phase * self.interval_h
            v.km_since_service = phase * min(self.interval_km, v.plan.daily_km * self.interval_h / 24.0)
        model.env.process(self._daily_check(model))

    def _daily_check(self, model: FleetModel) -> Generator[simpy.Event, object, None]:
        yield model.env.timeout(SCHEDULE_CHECK_HOUR)
        while True:
            now = model.env.now
            for v in model.vehicles:
                if v.in_service and (now - v.last_service_h >= self.interval_h
                                     or v.km_since_service >= self.interval_km):
                    model.send_to_workshop(v, "scheduled")
            yield model.env.timeout(24.0)

    def on_repair(self, model: FleetModel, vehicle: VehicleState, events: Sequence[FailureSpec]) -> None:
        return None


class PredictivePolicy:
    """Send a vehicle in when its risk reaches ``risk_threshold``, within a visit budget.

    Every ``poll_hours`` it reads the detector's new signals; each vehicle keeps its highest pending
    risk until it is visited. A vehicle just visited is not sent again within ``cooldown_days``.
    """

    name = "predictive"

    def __init__(self, detector: Detector, *, risk_threshold: float, visits_per_100_vehicle_days: float,
                 poll_hours: float, cooldown_days: float, max_burst_days: float = 7.0) -> None:
        if poll_hours <= 0 or visits_per_100_vehicle_days <= 0:
            raise ValueError("poll_hours and visits_per_100_vehicle_days must be > 0")
        self.detector = detector
        self.risk_threshold = risk_threshold
        self.visit_rate = visits_per_100_vehicle_days / 100.0 / 24.0  # per vehicle-hour
        self.poll_hours = poll_hours
        self.cooldown_h = cooldown_days * 24.0
        self.max_burst_days = max_burst_days
        self.pending: dict[str, float] = {}
        self._not_before: dict[str, float] = {}

    def start(self, model: FleetModel) -> None:
        model.env.process(self._poll(model))

    def _poll(self, model: FleetModel) -> Generator[simpy.Event, object, None]:
        tokens = 0.0
        fleet_rate = self.visit_rate * len(model.vehicles)
        burst = max(1.0, fleet_rate * 24.0 * self.max_burst_days)
        while True:
            yield model.env.timeout(self.poll_hours)
            now = model.env.now
            tokens = min(tokens + fleet_rate * self.poll_hours, burst)
            for signal in self.detector.observe(model.ms_at(now)):
                vehicle = model.by_id.get(signal.vehicle_id)
                if vehicle is None or signal.risk < self.risk_threshold:
                    continue
                model.record_alert(vehicle, signal.risk, signal.source)
                self.pending[signal.vehicle_id] = max(signal.risk, self.pending.get(signal.vehicle_id, 0.0))
            for vehicle_id in sorted(self.pending, key=lambda k: (-self.pending[k], k)):
                if tokens < 1.0:
                    break
                vehicle = model.by_id[vehicle_id]
                if now < self._not_before.get(vehicle_id, -1.0) or not vehicle.in_service:
                    continue
                model.send_to_workshop(vehicle, "predictive")
                tokens -= 1.0
                del self.pending[vehicle_id]
                self._not_before[vehicle_id] = now + self.cooldown_h

    def on_repair(self, model: FleetModel, vehicle: VehicleState, events: Sequence[FailureSpec]) -> None:
        self.pending.pop(vehicle.vehicle_id, None)
        self.detector.notify_repair(vehicle.vehicle_id, model.ms_at(model.env.now), events)
