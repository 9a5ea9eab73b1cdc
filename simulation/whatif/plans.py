"""What each simulated vehicle brings into the what-if model: its duty and its latent failures.

The failures come from the generator (``simulation.generator.vehicle_events``), so the what-if model
and the telemetry generator share one sampling of onset, failure time and severity and the same
scenario levers. This module is the only place that reads the generator's profiles.

>>> f = FailureSpec(event_id=0, mode="brake_wear", onset_ms=0, failure_ms=3_600_000, severity=2)
>>> f.progress_at(1_800_000)
0.5
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 24 * MS_PER_HOUR


@dataclass(frozen=True)
class FailureSpec:
    """One latent failure of one vehicle: degradation starts at onset, the part fails at failure."""

    event_id: int  # index within the vehicle's events
    mode: str
    onset_ms: int
    failure_ms: int
    severity: int  # 1 minor, 2 major, 3 critical

    def progress_at(self, t_ms: int) -> float:
        """Share of the onset-to-failure time elapsed at ``t_ms`` (0 before onset, 1 at failure)."""
        span = max(self.failure_ms - self.onset_ms, 1)
        return min(max((t_ms - self.onset_ms) / span, 0.0), 1.0)


@dataclass(frozen=True)
class VehiclePlan:
    """Duty and latent failures of one vehicle, in the units the SimPy model uses."""

    vehicle_id: str
    duty_cycle: str
    daily_km: float
    trips_per_day: int
    battery_kwh: float
    dc_share: float  # share of charging sessions at the shared DC fast chargers
    events: tuple[FailureSpec, ...]
    # The generator's own FailureEvent objects, ``source_events[e.event_id]`` for each event (so that
    # the telemetry stream can be told which failures exist and which were repaired).
    source_events: tuple[Any, ...] = ()


def plan_from_profile(profile: Any, events: Iterable[Any]) -> VehiclePlan:
    """Map a generator ``VehicleProfile`` and its ``FailureEvent`` list to a ``VehiclePlan``."""
    ordered = tuple(sorted(events, key=lambda e: (int(e.failure_ms), str(e.mode))))
    specs = tuple(
        FailureSpec(event_id=i, mode=str(e.mode), onset_ms=int(e.onset_ms), failure_ms=int(e.failure_ms),
                    severity=int(e.severity))
        for i, e in enumerate(ordered)
    )
    return VehiclePlan(
        vehicle_id=str(profile.vehicle_id),
        duty_cycle=str(profile.duty_cycle),
        daily_km=float(profile.daily_km),
        trips_per_day=max(1, int(round(float(profile.trips_per_day)))),
        battery_kwh=float(profile.capacity_kwh),
        dc_share=float(profile.dc_fast_charge_share),  # the lever times the duty cycle's habit
        events=specs,
        source_events=ordered,
    )
