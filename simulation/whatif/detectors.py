"""What the predictive policy listens to: anything that turns time into risk signals per vehicle.

The production detector (``simulation.whatif.twin_detector.TwinDetector``) streams generator frames
through real twins and model services. The two here exist so tests can prove the policy really
depends on its predictions: ``OracleDetector`` knows the ground truth (a perfect predictor, for tests
and for an upper bound), ``RandomDetector`` alerts at random at a given rate.

>>> from simulation.whatif.plans import FailureSpec, VehiclePlan
>>> plan = VehiclePlan("v0", "taxi", 200.0, 10, 60.0, 0.2,
...                    (FailureSpec(0, "coolant_pump", 0, 10 * 86_400_000, 2),))
>>> oracle = OracleDetector([plan], lead_hours=48.0)
>>> oracle.observe(7 * 86_400_000)
[]
>>> [s.vehicle_id for s in oracle.observe(9 * 86_400_000)]
['v0']
>>> oracle.observe(9 * 86_400_000 + 1)  # one signal per failure
[]
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from simulation.whatif.plans import MS_PER_HOUR, FailureSpec, VehiclePlan


@dataclass(frozen=True)
class RiskSignal:
    """A detector's statement: this vehicle is at risk ``risk`` (0..1) as of ``ts_ms``."""

    vehicle_id: str
    ts_ms: int
    risk: float
    source: str  # anomaly | failure_risk | oracle | random
    mode: str | None = None


class Detector(Protocol):
    """Turns the passing of time into risk signals; told about repairs so it can reset."""

    def observe(self, until_ms: int) -> list[RiskSignal]:
        """Signals raised since the previous call, up to ``until_ms``."""
        ...

    def notify_repair(self, vehicle_id: str, at_ms: int, events: Sequence[FailureSpec]) -> None:
        """The workshop repaired these failures of this vehicle at ``at_ms``."""
        ...


class OracleDetector:
    """A perfect predictor: one signal ``lead_hours`` before each failure, but never before a
    workshop inspection could confirm it (``detectable_progress`` of the way from onset to failure)."""

    def __init__(self, plans: Sequence[VehiclePlan], lead_hours: float = 7 * 24.0,
                 detectable_progress: float = 0.0) -> None:
        lead_ms = int(lead_hours * MS_PER_HOUR)

        def due_ms(e: FailureSpec) -> int:
            confirmable = e.onset_ms + int(detectable_progress * (e.failure_ms - e.onset_ms)) + 1
            return max(confirmable, e.failure_ms - lead_ms)

        self._due = sorted((due_ms(e), p.vehicle_id, e.event_id, e.mode, e.failure_ms)
                           for p in plans for e in p.events)
        self._next = 0
        self._repaired: set[tuple[str, int]] = set()

    def observe(self, until_ms: int) -> list[RiskSignal]:
        signals = []
        while self._next < len(self._due) and self._due[self._next][0] <= until_ms:
            due_ms, vehicle_id, event_id, mode, failure_ms = self._due[self._next]
            self._next += 1
            if (vehicle_id, event_id) not in self._repaired and until_ms < failure_ms:
                signals.append(RiskSignal(vehicle_id, due_ms, 1.0, "oracle", mode))
        return signals

    def notify_repair(self, vehicle_id: str, at_ms: int, events: Sequence[FailureSpec]) -> None:
        self._repaired.update((vehicle_id, e.event_id) for e in events)


class RandomDetector:
    """Alerts on random vehicles at ``rate_per_100_vehicle_days``, blind to their condition."""

    def __init__(self, vehicle_ids: Sequence[str], rate_per_100_vehicle_days: float, seed: int,
                 start_ms: int = 0) -> None:
        self._ids = list(vehicle_ids)
        self._rate_per_ms = rate_per_100_vehicle_days / 100.0 / (24 * MS_PER_HOUR)
        self._rng = random.Random(f"random-detector:{seed}")
        self._last_ms = start_ms

    def observe(self, until_ms: int) -> list[RiskSignal]:
        signals = []
        t = self._last_ms
        fleet_rate = self._rate_per_ms * len(self._ids)
        while fleet_rate > 0:
            t += self._rng.expovariate(fleet_rate)
            if t > until_ms:
                break
            signals.append(RiskSignal(self._rng.choice(self._ids), int(t), 1.0, "random"))
        self._last_ms = until_ms
        return signals

    def notify_repair(self, vehicle_id: str, at_ms: int, events: Sequence[FailureSpec]) -> None:
        return None
