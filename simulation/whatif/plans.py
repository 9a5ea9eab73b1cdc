"""What each simulated vehicle brings into the what-if model: its duty and its latent failures.

The failures come from the generator (``simulation.generator.vehicle_events``), so the what-if model
and the telemetry generator share one sampling of onset, failure time and severity and the same
scenario levers. This module is the only place that reads the generator's profiles.

>>> f = FailureSpec(event_id=0, mode="brake_wear", onset_ms=0, failure_ms=3_600_000, severity=2)
>>> f.progress_at(1_800_000)
0.5
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

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


# Typical daily use when a generator profile does not carry it (logistics only, not physics).
DUTY_DEFAULTS: dict[str, tuple[float, int]] = {"commuter": (45.0, 2), "taxi": (220.0, 12), "delivery": (140.0, 8)}


def _attribute(profile: Any, names: Iterable[str], default: Any) -> Any:
    for name in names:
        value = getattr(profile, name, None)
        if value is not None:
            return value
    return default


def plan_from_profile(profile: Any, events: Iterable[Any], dc_share: float) -> VehiclePlan:
    """Map a generator ``VehicleProfile`` and its ``FailureEvent`` list to a ``VehiclePlan``."""
    duty = str(_attribute(profile, ("duty_cycle",), "commuter"))
    default_km, default_trips = DUTY_DEFAULTS.get(duty, DUTY_DEFAULTS["commuter"])
    specs = tuple(
        FailureSpec(event_id=i, mode=str(e.mode), onset_ms=int(e.onset_ms), failure_ms=int(e.failure_ms),
                    severity=int(e.severity))
        for i, e in enumerate(sorted(events, key=lambda e: (int(e.failure_ms), str(e.mode))))
    )
    return VehiclePlan(
        vehicle_id=str(profile.vehicle_id),
        duty_cycle=duty,
        daily_km=float(_attribute(profile, ("daily_km", "mean_daily_km", "km_per_day"), default_km)),
        trips_per_day=int(_attribute(profile, ("trips_per_day",), default_trips)),
        battery_kwh=float(_attribute(profile, ("battery_kwh", "capacity_kwh", "pack_capacity_kwh"), 60.0)),
        dc_share=float(_attribute(profile, ("dc_fast_charge_share", "dc_share"), dc_share)),
        events=specs,
    )
