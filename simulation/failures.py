"""Failure modes, their degradation curves and the sampling of failures and sensor faults.

A failure is a degradation that starts at ``onset`` and grows until the part fails at ``failure``.
Everything a consumer needs to evaluate a failure without generating frames is a pure function here:

* ``progress(elapsed_s, lead_s)``: share of onset-to-failure time elapsed, 0..1;
* ``degradation(mode, elapsed_s, severity, lead_s)``: how far the part has degraded, 0 (healthy) up to
  ``SEVERITY_SCALE[severity]`` at failure, accelerating (``progress ** shape``);
* ``mode_effects(mode, level, component)``: what that degradation does to the physics (e.g. a pack
  resistance factor, a coolant-flow factor). Effects not named are neutral (``EFFECT_NEUTRAL``).

>>> float(degradation("coolant_pump", 0.0, 2, 86400.0))
0.0
>>> float(degradation("coolant_pump", 86400.0, 2, 86400.0))
1.0
>>> round(float(mode_effects("coolant_pump", 1.0)["coolant_flow_factor"]), 2)
0.3
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from configs.settings import SimulationConfig
from simulation.fleet import MS_PER_DAY, STREAM_FAILURES, STREAM_SENSOR_FAULTS, VehicleProfile, observation_window

MS_PER_S = 1000

SEVERITY_LEVELS: dict[int, str] = {1: "minor", 2: "major", 3: "critical"}
# How large the precursor deviation is at failure, by severity: severity is visible in the signals.
SEVERITY_SCALE: dict[int, float] = {1: 0.6, 2: 1.0, 3: 1.5}
# Days a failed vehicle spends parked in the workshop, by severity.
REPAIR_DAYS: dict[int, float] = {1: 1.0, 2: 2.0, 3: 3.0}
TYRE_POSITIONS: tuple[str, ...] = ("fl", "fr", "rl", "rr")


@dataclass(frozen=True)
class FailureMode:
    """A failure mode: where it lives, how long it develops, and which signals show it coming."""

    name: str
    subsystem: str
    lead_days: tuple[float, float]  # onset-to-failure time, uniform in this range
    shape: float  # degradation = progress ** shape: > 1 means slow start, fast end
    precursors: tuple[str, ...]  # telemetry fields in which the degradation shows
    signature: str  # what a reliability engineer sees, in words
    severity_probs: tuple[float, float, float] = (0.5, 0.35, 0.15)


MODE_SPECS: dict[str, FailureMode] = {m.name: m for m in (
    FailureMode("cell_imbalance", "battery", (10.0, 40.0), 1.5,
                ("cell_voltage_min", "cell_voltage_max", "soh"),
                "spread between highest and lowest cell voltage grows, most under load and at low SOC; "
                "usable capacity (SOH) drops slightly"),
    FailureMode("coolant_pump", "thermal", (7.0, 30.0), 2.0,
                ("coolant_flow", "pump_speed", "coolant_temp_out", "cell_temp_max"),
                "coolant flow falls while the controller raises pump speed; outlet-inlet coolant delta and "
                "cell temperatures rise under load and during DC charging"),
    FailureMode("internal_resistance", "battery", (14.0, 45.0), 1.3,
                ("internal_resistance", "pack_voltage", "cell_temp_avg"),
                "BMS resistance estimate climbs; pack voltage sags more under load and the pack runs warmer"),
    FailureMode("inverter_overheat", "drivetrain", (5.0, 25.0), 2.0,
                ("inverter_temp",),
                "inverter temperature rises faster and higher for the same electrical load (thermal interface "
                "degrading)"),
    FailureMode("motor_bearing", "drivetrain", (10.0, 40.0), 2.0,
                ("motor_temp", "motor_torque"),
                "friction: motor runs hotter at speed and needs more torque for the same cruise speed"),
    FailureMode("brake_wear", "chassis", (7.0, 30.0), 1.2,
                ("brake_pad_wear", "brake_temp"),
                "sticking caliper: pad wear accelerates towards 100 % and the disc stays warm while cruising"),
    FailureMode("tyre_slow_leak", "chassis", (3.0, 21.0), 1.0,
                ("tyre_pressure_fl", "tyre_pressure_fr", "tyre_pressure_rl", "tyre_pressure_rr"),
                "one tyre loses pressure steadily against the other three at the same temperature"),
    FailureMode("aux_battery", "low_voltage", (7.0, 30.0), 1.5,
                ("aux_battery_voltage", "dcdc_current"),
                "12 V battery rests lower after parking (worst in the cold) and draws more DC-DC current "
                "to recharge after each start"),
)}
FAILURE_MODES: tuple[str, ...] = tuple(MODE_SPECS)

# Neutral value of every effect a degradation can have on the physics.
EFFECT_NEUTRAL: dict[str, float] = {
    "cell_spread_mv": 0.0,  # extra cell-voltage spread (mV) at rest; doubles at 1C load
    "capacity_factor": 1.0,  # usable capacity multiplier
    "resistance_factor": 1.0,  # pack resistance multiplier
    "coolant_flow_factor": 1.0,  # coolant flow per pump rpm
    "pump_speed_factor": 1.0,  # controller raises pump speed to compensate
    "inverter_thermal_factor": 1.0,  # inverter thermal resistance multiplier
    "bearing_drag_nm": 0.0,  # extra drag torque at the motor while turning
    "brake_drag_kw": 0.0,  # friction power of a sticking caliper at 50 km/h (kW)
    "brake_wear_fraction": 0.0,  # share of the remaining pad consumed by accelerated wear
    "tyre_leak_kpa_fl": 0.0, "tyre_leak_kpa_fr": 0.0, "tyre_leak_kpa_rl": 0.0, "tyre_leak_kpa_rr": 0.0,
    "aux_capacity_factor": 1.0,  # 12 V battery capacity multiplier
}


def progress(elapsed_s: np.ndarray | float, lead_s: float) -> np.ndarray:
    """Share of the onset-to-failure time elapsed: 0 before onset, 1 at (and after) failure.

    >>> progress([-5.0, 50.0, 200.0], 100.0).tolist()
    [0.0, 0.5, 1.0]
    """
    return np.clip(np.asarray(elapsed_s, dtype=np.float64) / max(float(lead_s), 1e-9), 0.0, 1.0)


def degradation(mode: str, elapsed_s: np.ndarray | float, severity: int, lead_s: float) -> np.ndarray:
    """Degradation level of ``mode`` ``elapsed_s`` after onset: 0 healthy .. SEVERITY_SCALE[severity] at failure."""
    spec = MODE_SPECS[mode]
    return SEVERITY_SCALE[int(severity)] * progress(elapsed_s, lead_s) ** spec.shape


def mode_effects(mode: str, level: np.ndarray | float, component: str = "", severity: int = 2) -> dict[str, np.ndarray]:
    """Physical effects of ``mode`` at degradation ``level`` (only the effects this mode changes).

    ``severity`` is needed only where a state must be reached exactly at failure whatever the
    severity (brake pads worn through); elsewhere severity acts through ``level``.

    >>> sorted(mode_effects("tyre_slow_leak", 1.0, "rl"))
    ['tyre_leak_kpa_rl']
    """
    x = np.asarray(level, dtype=np.float64)
    if mode == "cell_imbalance":
        return {"cell_spread_mv": 110.0 * x, "capacity_factor": 1.0 - 0.05 * x}
    if mode == "coolant_pump":
        return {"coolant_flow_factor": np.clip(1.0 - 0.7 * x, 0.05, 1.0), "pump_speed_factor": 1.0 + 0.25 * x}
    if mode == "internal_resistance":
        return {"resistance_factor": 1.0 + 1.1 * x, "capacity_factor": 1.0 - 0.03 * x}
    if mode == "inverter_overheat":
        return {"inverter_thermal_factor": 1.0 + 1.6 * x}
    if mode == "motor_bearing":
        return {"bearing_drag_nm": 4.0 * x}
    if mode == "brake_wear":
        # Pads are worn through exactly at failure; severity shows in how hard the caliper drags.
        return {"brake_drag_kw": 1.0 * x, "brake_wear_fraction": np.clip(x / SEVERITY_SCALE[int(severity)], 0.0, 1.0)}
    if mode == "tyre_slow_leak":
        position = component if component in TYRE_POSITIONS else "fl"
        return {f"tyre_leak_kpa_{position}": 95.0 * x}
    if mode == "aux_battery":
        return {"aux_capacity_factor": np.clip(1.0 - 0.55 * x, 0.1, 1.0)}
    raise KeyError(f"unknown failure mode {mode!r}")


@dataclass(frozen=True)
class FailureEvent:
    """Ground truth of one failure of one vehicle (a row of events.parquet)."""

    vehicle_id: str
    mode: str
    onset_ms: int
    failure_ms: int
    severity: int  # 1 minor, 2 major, 3 critical
    observed: bool  # failure_ms <= end of the observed window
    component: str = ""  # tyre position for tyre_slow_leak

    @property
    def lead_s(self) -> float:
        return (self.failure_ms - self.onset_ms) / MS_PER_S

    @property
    def repair_end_ms(self) -> int:
        return self.failure_ms + int(REPAIR_DAYS[self.severity] * MS_PER_DAY)

    def degradation_at(self, ts_ms: np.ndarray | int) -> np.ndarray:
        """Degradation level at ``ts_ms``; zero again after failure (the part is replaced)."""
        ts = np.asarray(ts_ms, dtype=np.int64)
        level = degradation(self.mode, (ts - self.onset_ms) / MS_PER_S, self.severity, self.lead_s)
        return np.where(ts < self.failure_ms, level, 0.0)


def _hazard_factor(mode: str, profile: VehicleProfile) -> float:
    """Why some vehicles fail more: old packs, heat, cold, mileage, hard driving."""
    hot, cold = profile.climate == "hot", profile.climate == "cold"
    high_mileage = profile.duty_cycle in ("taxi", "delivery")
    factors = {
        "cell_imbalance": 1.0 + 0.12 * profile.pack_age_years,
        "internal_resistance": (1.0 + 0.2 * profile.pack_age_years) * (1.0 + profile.dc_fast_charge_share),
        "coolant_pump": 1.5 if hot else 1.0,
        "inverter_overheat": (1.5 if hot else 1.0) * (1.3 if profile.aggressive else 1.0),
        "motor_bearing": 1.5 if high_mileage else 1.0,
        "brake_wear": (1.8 if profile.aggressive else 1.0) * (1.5 if profile.duty_cycle == "delivery" else 1.0),
        "tyre_slow_leak": 1.0,
        "aux_battery": 2.0 if cold else 1.0,
    }
    return factors[mode]


def sample_vehicle_failures(profile: VehicleProfile, sim_cfg: SimulationConfig, seed: int) -> list[FailureEvent]:
    """Failures of one vehicle within the window plus ``latent_failure_days``; first failure per mode.

    Uniform draws are taken for every mode in a fixed order whatever the rates, so a lever (rate
    multiplier) moves failure times without reshuffling anything else.
    """
    start_ms, end_ms = observation_window(sim_cfg)
    rng = np.random.default_rng([seed, profile.index, STREAM_FAILURES])
    healthy = rng.random() < sim_cfg.healthy_vehicle_share
    draws = rng.random((len(FAILURE_MODES), 4))
    horizon_days = (end_ms - start_ms) / MS_PER_DAY + sim_cfg.latent_failure_days
    events: list[FailureEvent] = []
    for (u_time, u_lead, u_severity, u_component), mode in zip(draws, FAILURE_MODES):
        rate = sim_cfg.failure_mode_rates.get(mode, 0.0)
        if healthy or rate <= 0.0:
            continue
        # The config rate is a probability within 30 days; convert it to a constant hazard per day.
        hazard = -np.log1p(-min(rate, 0.999999)) / 30.0
        hazard *= sim_cfg.levers.failure_rate_multiplier * _hazard_factor(mode, profile)
        if hazard <= 0.0:
            continue
        failure_day = -np.log1p(-u_time) / hazard
        if failure_day >= horizon_days:
            continue
        spec = MODE_SPECS[mode]
        lead_days = spec.lead_days[0] + (spec.lead_days[1] - spec.lead_days[0]) * u_lead
        failure_ms = start_ms + int(failure_day * MS_PER_DAY)
        severity = 1 + int(np.searchsorted(np.cumsum(spec.severity_probs), u_severity, side="right"))
        component = TYRE_POSITIONS[int(u_component * 4) % 4] if mode == "tyre_slow_leak" else ""
        events.append(FailureEvent(
            vehicle_id=profile.vehicle_id, mode=mode, onset_ms=failure_ms - int(lead_days * MS_PER_DAY),
            failure_ms=failure_ms, severity=min(severity, 3), observed=failure_ms <= end_ms, component=component,
        ))
    return sorted(events, key=lambda e: (e.failure_ms, e.mode))


# ---------------------------------------------------------------------------------------------------
# Sensor faults: anomalies in the data, not failures of the vehicle.

SENSOR_FAULT_KINDS: tuple[str, ...] = ("stuck", "drift", "dropout", "spike")
# Duration range (hours) per kind.
SENSOR_FAULT_HOURS: dict[str, tuple[float, float]] = {
    "stuck": (0.3, 6.0), "drift": (24.0, 72.0), "dropout": (0.05, 2.0), "spike": (0.5, 6.0),
}
SPIKE_FRAME_SHARE = 0.03  # share of frames inside a spike interval that carry a spike
# Fields a sensor fault can hit: the analogue measurements (not position, odometer or enums).
FAULTABLE_FIELDS: tuple[str, ...] = (
    "pack_voltage", "pack_current", "soc", "cell_voltage_min", "cell_voltage_max", "cell_temp_min",
    "cell_temp_max", "cell_temp_avg", "internal_resistance", "insulation_resistance", "coolant_temp_in",
    "coolant_temp_out", "coolant_flow", "pump_speed", "motor_temp", "inverter_temp", "speed",
    "tyre_pressure_fl", "tyre_pressure_fr", "tyre_pressure_rl", "tyre_pressure_rr", "brake_temp",
    "aux_battery_voltage", "dcdc_current", "ambient_temp",
)


@dataclass(frozen=True)
class SensorFault:
    """One sensor misbehaving for a while (a row of sensor_faults.parquet).

    magnitude: drift rate in field units per day (drift), spike amplitude in field units (spike), else 0.
    """

    vehicle_id: str
    kind: str
    field: str
    start_ms: int
    end_ms: int
    magnitude: float = 0.0


def sample_sensor_faults(profile: VehicleProfile, sim_cfg: SimulationConfig, seed: int,
                         field_ranges: Mapping[str, tuple[float, float]]) -> list[SensorFault]:
    """At most one new sensor fault per vehicle-day with probability ``sensor_fault_rate_per_day``."""
    start_ms, end_ms = observation_window(sim_cfg)
    rng = np.random.default_rng([seed, profile.index, STREAM_SENSOR_FAULTS])
    n_days = int(np.ceil((end_ms - start_ms) / MS_PER_DAY))
    draws = rng.random((n_days, 6))
    faults: list[SensorFault] = []
    for day, (u_occurs, u_start, u_kind, u_field, u_duration, u_magnitude) in enumerate(draws):
        if u_occurs >= sim_cfg.sensor_fault_rate_per_day:
            continue
        kind = SENSOR_FAULT_KINDS[int(u_kind * len(SENSOR_FAULT_KINDS)) % len(SENSOR_FAULT_KINDS)]
        field = FAULTABLE_FIELDS[int(u_field * len(FAULTABLE_FIELDS)) % len(FAULTABLE_FIELDS)]
        low_h, high_h = SENSOR_FAULT_HOURS[kind]
        fault_start = start_ms + day * MS_PER_DAY + int(u_start * MS_PER_DAY)
        if fault_start >= end_ms:
            continue
        fault_end = min(end_ms, fault_start + int((low_h + (high_h - low_h) * u_duration) * 3_600_000))
        lo, hi = field_ranges[field]
        span = hi - lo
        sign = 1.0 if u_magnitude >= 0.5 else -1.0
        strength = abs(u_magnitude - 0.5) * 2.0  # 0..1
        magnitude = {
            "drift": sign * (0.02 + 0.06 * strength) * span,  # per day
            "spike": sign * (0.25 + 0.5 * strength) * span,
        }.get(kind, 0.0)
        faults.append(SensorFault(profile.vehicle_id, kind, field, fault_start, fault_end, float(magnitude)))
    return faults
